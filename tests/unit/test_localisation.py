"""The localisation heads (``mobilenetv2_heatmap``) without face data: shapes, decoding, gradients, saving, blocks."""

import cv2
import keras
import numpy as np
import pytest

from facelandmarks.models import backbones, build_model, load_model, losses, model_options
from facelandmarks.models.layers import PixelInPixelDecode

pytestmark = pytest.mark.backend

NAME, K = "mobilenetv2_heatmap", 5


def _pixels(n=2, size=64, channels=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, channels), dtype=np.uint8)


def _head_weights(model):
    """Trainable weights of every layer outside the MobileNetV2 application, by path."""
    _, application = backbones.find_application(model)
    return {v.path: v for layer in model.layers if layer is not application for v in layer.trainable_weights}


def test_options_and_defaults():
    options = model_options(NAME)
    assert options["head"] == "pip" and options["stride"] is None
    assert set(options) == {"normalization", "head", "stride", "channels", "head_convs", "max_offset", "spread_weight", "zoom"}
    assert options["zoom"] == 1.0
    with pytest.raises(ValueError, match="head must be one of .*got 'dense'"):
        build_model(NAME, (64, 64, 3), K, head="dense")
    with pytest.raises(ValueError, match=r"'pip' head's stride must be one of \[8, 16, 32\].*got 4"):
        build_model(NAME, (64, 64, 3), K, stride=4)
    with pytest.raises(ValueError, match=r"'integral' head's stride must be one of \[4, 8\].*got 16"):
        build_model(NAME, (64, 64, 3), K, head="integral", stride=16)
    with pytest.raises(ValueError, match="channels must be"):
        build_model(NAME, (64, 64, 3), K, channels=0)
    with pytest.raises(ValueError, match="max_offset is an option of the 'pip' head"):
        build_model(NAME, (64, 64, 3), K, head="integral", max_offset=1.0)
    with pytest.raises(ValueError, match="max_offset must be None or a positive number of cells, got -1"):
        build_model(NAME, (64, 64, 3), K, max_offset=-1)
    with pytest.raises(ValueError, match="spread_weight is an option of the 'pip' head"):
        build_model(NAME, (64, 64, 3), K, head="integral", spread_weight=1.0)
    with pytest.raises(ValueError, match="spread_weight must be a number >= 0, got -0.5"):
        build_model(NAME, (64, 64, 3), K, spread_weight=-0.5)
    with pytest.raises(ValueError, match="zoom is an option of the 'pip' head"):
        build_model(NAME, (64, 64, 3), K, head="integral", zoom=0.9)
    for zoom in (0.4, 1.1, True, "0.9"):
        with pytest.raises(ValueError, match=f"zoom must be a number from 0.5 to 1, got {zoom!r}"):
            build_model(NAME, (64, 64, 3), K, zoom=zoom)


def test_a_zoomed_model_sees_the_crops_centre_enlarged_and_returns_points_in_the_whole_crop(tmp_path):
    """zoom 0.9: the network runs on the centre of the crop (64 px resized to 72, bilinear, its centre 64 cut), and
    the points come back in the whole crop's coordinates: the same as the unzoomed model, with the same weights, on
    that enlarged centre (cut here by OpenCV) with its points mapped back. The zoom has no weights of its own, so a
    file of the unzoomed model loads into it; the .keras file keeps it."""
    keras.utils.set_random_seed(3)
    plain = build_model(NAME, (64, 64, 3), K)
    rng = np.random.default_rng(5)  # output convolutions whose points move with the image (as built: all 0.5)
    for name in ("pip_scores", "pip_offsets"):
        plain.get_layer(name).set_weights([rng.normal(0, 0.3, w.shape).astype(np.float32) for w in plain.get_layer(name).get_weights()])
    zoomed = build_model(NAME, (64, 64, 3), K, zoom=0.9)
    plain.save_weights(tmp_path / "plain.weights.h5")
    zoomed.load_weights(tmp_path / "plain.weights.h5")
    assert zoomed.get_layer("landmarks").zoom == pytest.approx(64 / 72)  # 64 / 0.9 = 71.1: 72, 4 px each side
    crops = _pixels(n=3, seed=4).astype(np.float32)
    centres = np.stack([cv2.resize(c, (72, 72), interpolation=cv2.INTER_LINEAR)[4:68, 4:68] for c in crops])
    expected = np.asarray(plain.predict_on_batch(centres)) * 64 / 72 + 4 / 72
    points = np.asarray(zoomed.predict_on_batch(crops))
    np.testing.assert_allclose(points, expected, atol=1e-5)
    assert np.abs(points - np.asarray(plain.predict_on_batch(crops))).max() > 0.01  # it does not see the whole crop
    zoomed.save(tmp_path / "zoomed.keras")
    np.testing.assert_array_equal(np.asarray(load_model(tmp_path / "zoomed.keras").predict_on_batch(crops)), points)


@pytest.mark.parametrize(
    "head, stride, size, grid",
    [("pip", None, 64, 4), ("pip", 8, 72, 9), ("pip", 32, 64, 2), ("integral", None, 64, 16), ("integral", 8, 72, 9)],
)
def test_builds_every_head_and_stride(head, stride, size, grid):
    model = build_model(NAME, (size, size, 3), K, head=head, stride=stride)
    out = np.asarray(model.predict_on_batch(_pixels(size=size)))
    assert out.shape == (2, K, 2) and out.dtype == np.float32
    assert np.all((out >= 0) & (out <= 1))
    maps = model.get_layer("pip_scores" if head == "pip" else "heatmaps").output
    assert tuple(maps.shape[1:]) == (grid, grid, K)  # 72 px: the backbone rounds up (36, 18, 9, 5, 3)


def test_gray_input_and_mixed_precision_output_is_float32():
    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = build_model(NAME, (64, 64, 1), K)
        out = model.predict_on_batch(_pixels(channels=1))
    finally:
        keras.config.set_dtype_policy(before)
    assert model.get_layer("gray_to_rgb") is not None
    assert model.get_layer("landmarks").dtype == "float32" and model.output.dtype == "float32"
    assert np.asarray(out).dtype == np.float32 and np.asarray(out).shape == (2, K, 2)


@pytest.mark.parametrize("head, options", [("pip", {"max_offset": 1.5, "spread_weight": 0.5}), ("integral", {})])
def test_one_step_moves_every_head_weight_and_the_keras_file_reloads(head, options, tmp_path):
    keras.utils.set_random_seed(1)
    # the backbone's last block alone trained (train_blocks=1): the step's graph leaves out the backward pass of the 16
    # blocks below, most of its tracing (TensorFlow) or compiling (JAX). Not 0: the whole random backbone in inference
    # mode gives a stride-32 map of zeros, through which top_s32_bn's gamma gets no gradient
    model = build_model(NAME, (64, 64, 3), K, head=head, train_blocks=1, **options)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=losses.get_loss("wing", crop_size=64))
    model.optimizer.build(model.trainable_variables)  # as train.py does: the step is traced once, not twice
    head_weights = _head_weights(model)
    output_convs = {"pip_scores", "pip_offsets"} if head == "pip" else {"heatmaps"}
    assert output_convs <= {path.split("/")[0] for path in head_weights}
    before = {path: np.array(v) for path, v in head_weights.items()}
    points = np.random.default_rng(2).uniform(0.2, 0.8, (2, K, 2)).astype(np.float32)
    visible = np.ones((2, K), bool)
    visible[0, 0] = False  # a masked point: the loss must still reach every weight through the others
    model.train_on_batch(_pixels(), losses.pack_targets(points, visible))
    unchanged = [path for path, v in head_weights.items() if np.array_equal(before[path], np.array(v))]
    assert unchanged == []

    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = load_model(path)
    assert reloaded.get_layer("landmarks").get_config() == model.get_layer("landmarks").get_config()
    batch = _pixels(n=3, seed=3)
    np.testing.assert_array_equal(np.asarray(model.predict_on_batch(batch)), np.asarray(reloaded.predict_on_batch(batch)))


def _one_hot_scores(height, width, cells):
    """(1, H, W, K) logits: +50 at each point's (row, col), -50 elsewhere."""
    scores = np.full((1, height, width, len(cells)), -50.0, np.float32)
    for k, (row, col) in enumerate(cells):
        scores[0, row, col, k] = 50.0
    return scores


def test_pip_decoding_is_exact_on_a_dominant_cell():
    height, width = 4, 8
    cells = [(2, 5), (0, 0), (3, 7)]
    scores = _one_hot_scores(height, width, cells)
    offsets = np.random.default_rng(0).uniform(-3, 3, (1, height, width, 2 * len(cells))).astype(np.float32)
    shifts = [(0.3, -0.2), (-0.5, -0.5), (1.25, 0.0)]  # in cells: x, y
    for k, ((row, col), (dx, dy)) in enumerate(zip(cells, shifts)):
        offsets[0, row, col, 2 * k:2 * k + 2] = dx, dy
    out = keras.ops.convert_to_numpy(PixelInPixelDecode(name="decode")([scores, offsets]))
    expected = [[(col + 0.5 + dx) / width, (row + 0.5 + dy) / height] for (row, col), (dx, dy) in zip(cells, shifts)]
    np.testing.assert_allclose(out[0], expected, atol=1e-4)


def test_pip_decoding_bounds_the_offsets_softly():
    scores = _one_hot_scores(2, 4, [(1, 2), (0, 1)])
    offsets = np.zeros((1, 2, 4, 4), np.float32)
    offsets[0, 1, 2, 0:2] = 100.0, -0.01  # far beyond the bound in x; tanh's slope is 1 near 0 in y
    offsets[0, 0, 1, 2:4] = 0.5, 0.0
    out = keras.ops.convert_to_numpy(PixelInPixelDecode(max_offset=1.0)([scores, offsets]))
    np.testing.assert_allclose(out[0], [[(2.5 + 1.0) / 4, (1.5 - 0.01) / 2], [(1.5 + np.tanh(0.5)) / 4, 0.5 / 2]], atol=1e-5)


def test_pip_decoding_averages_cells_by_softmax_weight():
    # Two equal cells for one point: the mean of their positions; a flat map with zero offsets: the centre.
    scores = np.full((1, 2, 2, 2), -50.0, np.float32)
    scores[0, 0, 0, 0] = scores[0, 1, 1, 0] = 10.0
    scores[0, :, :, 1] = 0.0
    offsets = np.zeros((1, 2, 2, 4), np.float32)
    offsets[0, 1, 1, 0:2] = 0.5, 0.25
    out = keras.ops.convert_to_numpy(PixelInPixelDecode()([scores, offsets]))
    np.testing.assert_allclose(out[0], [[(0.25 + 0.75 + 0.25) / 2, (0.25 + 0.75 + 0.125) / 2], [0.5, 0.5]], atol=1e-6)


def test_pip_spread_loss_is_the_weighted_distance_of_the_cells_from_the_point_in_training_only():
    # Point 0: two equal cells whose estimates lie 0.5 apart in x and 0.25 in y (in crop units); point 1: one
    # dominant cell, whose estimate is the point itself (no spread whatever the offsets elsewhere).
    scores = np.full((1, 2, 2, 2), -50.0, np.float32)
    scores[0, 0, 0, 0] = scores[0, 1, 1, 0] = 10.0
    scores[0, 1, 0, 1] = 50.0
    offsets = np.random.default_rng(5).uniform(-1, 1, (1, 2, 2, 4)).astype(np.float32)
    offsets[0, 0, 0, 0:2] = offsets[0, 1, 1, 0:2] = 0.0
    decode = PixelInPixelDecode(spread_weight=2.0)
    points = keras.ops.convert_to_numpy(decode([scores, offsets], training=True))
    (loss,) = decode.losses
    # each cell of point 0 lies (0.25, 0.25) from their mean; point 1 has no spread: mean over (1, 2, 2) = 0.125
    np.testing.assert_allclose(float(keras.ops.convert_to_numpy(loss)), 2.0 * (0.25 + 0.25) / 4, atol=1e-5)
    np.testing.assert_allclose(points[0, 0], [0.5, 0.5], atol=1e-6)
    inference = PixelInPixelDecode(spread_weight=2.0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(inference([scores, offsets])), points, atol=1e-6)
    assert inference.losses == []  # not at inference, and the points are the same
    with pytest.raises(ValueError, match="spread_weight must be a number >= 0, got True"):
        PixelInPixelDecode(spread_weight=True)


def test_pip_spread_loss_is_added_to_the_training_loss_and_not_to_validation():
    # The PIP head's last step alone (1x1 convs on a feature map -> decoding), so Keras's own trainer on each
    # backend collects the layer's loss; the whole model trains with it in the one-step test above.
    keras.utils.set_random_seed(3)
    features = keras.Input((4, 4, 8))
    scores = keras.layers.Conv2D(K, 1, name="pip_scores")(features)
    offsets = keras.layers.Conv2D(2 * K, 1, name="pip_offsets")(features)
    maps = keras.Model(features, [scores, offsets])
    batch = np.random.default_rng(6).normal(0, 1, (4, 4, 4, 8)).astype(np.float32)
    targets = losses.pack_targets(np.random.default_rng(6).uniform(0.2, 0.8, (4, K, 2)).astype(np.float32), np.ones((4, K), bool))
    results = {}
    for weight in (0.0, 0.5):
        model = keras.Model(features, PixelInPixelDecode(spread_weight=weight, name="landmarks")([scores, offsets]))
        model.compile(optimizer=keras.optimizers.SGD(0.0), loss=losses.get_loss("l1"))
        results[weight] = (float(model.train_on_batch(batch, targets)), float(model.test_on_batch(batch, targets)))
    s, o = (keras.ops.convert_to_numpy(t) for t in maps(batch))
    n, h, w, _ = s.shape
    logits = s.transpose(0, 3, 1, 2).reshape(n, K, h * w)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    cols, rows = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    positions = (np.stack([cols.ravel(), rows.ravel()], -1)[None, None] + o.reshape(n, h * w, K, 2).transpose(0, 2, 1, 3)) / [w, h]
    mean = (p[..., None] * positions).sum(2, keepdims=True)
    expected = 0.5 * (p[..., None] * np.abs(positions - mean)).sum(2).mean()
    assert expected > 0.01  # random maps: a large spread
    np.testing.assert_allclose(results[0.5][0] - results[0.0][0], expected, rtol=1e-3)
    np.testing.assert_allclose(results[0.5][1], results[0.0][1], rtol=1e-5)  # validation: the coordinate loss only


def test_pip_decoding_mirrors_with_the_maps():
    # Mirroring the maps left-right (and negating x offsets) mirrors the decoded x: x -> 1 - x.
    rng = np.random.default_rng(4)
    scores = rng.normal(0, 2, (2, 6, 6, 3)).astype(np.float32)
    offsets = rng.normal(0, 0.5, (2, 6, 6, 6)).astype(np.float32)
    mirrored = offsets[:, :, ::-1].copy()
    mirrored[..., 0::2] *= -1
    decode = PixelInPixelDecode()
    a = keras.ops.convert_to_numpy(decode([scores, offsets]))
    b = keras.ops.convert_to_numpy(decode([scores[:, :, ::-1].copy(), mirrored]))
    np.testing.assert_allclose(b[..., 0], 1 - a[..., 0], atol=1e-5)
    np.testing.assert_allclose(b[..., 1], a[..., 1], atol=1e-5)


def test_train_blocks_and_weights_file_work_as_for_mobilenetv2(tmp_path):
    source = backbones.build_backbone("mobilenetv2", (64, 64, 3))
    weights = tmp_path / "mobilenet_v2_notop.weights.h5"
    source.get_layer("mobilenetv2").save_weights(weights)
    model = build_model(NAME, (64, 64, 3), K, weights=weights, train_blocks=2)
    assert model.get_layer("input_normalization").mode == "torch"  # a weights file: torchvision's, as for mobilenetv2
    _, application = backbones.find_application(model)
    assert len(application.layers) == len(source.get_layer("mobilenetv2").layers)  # every layer kept, 17 blocks
    for a, b in zip(source.get_layer("mobilenetv2").weights, application.weights):
        np.testing.assert_array_equal(np.array(a), np.array(b), err_msg=a.path)
    trainable = {layer.name for layer in application.layers if layer.trainable and not isinstance(layer, keras.layers.InputLayer)}
    assert trainable and all(n.startswith(("block_15_", "block_16_")) or n in ("Conv_1", "Conv_1_bn", "out_relu") for n in trainable)
    assert all(layer.trainable for layer in model.layers if layer is not application)
    with pytest.raises(ValueError, match="from -1 .all. to 17, got 18"):
        backbones.set_trainable_blocks(model, 18)


def test_init_from_another_point_count_keeps_the_backbone_without_keras_warnings(tmp_path, capsys, recwarn):
    from facelandmarks.training.init import init_weights

    source = build_model(NAME, (64, 64, 3), K)
    source.save_weights(tmp_path / "five.weights.h5")
    model = build_model(NAME, (64, 64, 3), 3)
    init_weights(model, str(tmp_path / "five.weights.h5"))
    assert "restarted 2 (pip_scores, pip_offsets)" in capsys.readouterr().out  # the one line that says what happened
    # Keras's "Skipping nested container ... retain their freshly-initialized weights" of the failed whole-model
    # load said the opposite of what happened: the backbone's weights are the source's
    assert [str(w.message) for w in recwarn if "Skipping" in str(w.message)] == []
    for a, b in zip(backbones.find_application(source)[1].weights, backbones.find_application(model)[1].weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_init_from_another_markup_with_as_many_points_restarts_the_head(tmp_path, capsys):
    """Five points of another markup load without a mismatch; their head's outputs mean other points, so the
    head restarts (it once loaded whole and silently: 89.6 % validation NME where a fresh head gave 53 %)."""
    from facelandmarks.training.init import head_layers, init_weights

    source = build_model(NAME, (64, 64, 3), K)
    source.save_weights(tmp_path / "five.weights.h5")
    model = build_model(NAME, (64, 64, 3), K)
    fresh = {v.path: np.asarray(v) for v in model.weights}
    head = head_layers(model, build_model(NAME, (64, 64, 3), K + 1))
    assert head == ("pip_scores", "pip_offsets")
    init_weights(model, str(tmp_path / "five.weights.h5"), head, ": another markup")
    assert "kept 112 layers whose weights fit, restarted 2 (pip_scores, pip_offsets): another markup" in capsys.readouterr().out
    for mine, theirs in zip(model.weights, source.weights):
        expected = fresh[mine.path] if mine.path.rsplit("/", 1)[0] in head else np.asarray(theirs)
        np.testing.assert_array_equal(np.asarray(mine), expected)
    init_weights(build_model(NAME, (64, 64, 3), K), str(tmp_path / "five.weights.h5"))  # the same markup: all of it
    assert capsys.readouterr().out.strip() == f"starting from the weights of {tmp_path / 'five.weights.h5'}"


def test_init_from_another_model_family_fails_in_a_readable_line(tmp_path):
    """Keras's own message lists every layer (about 8,000 characters for MobileNetV2): cut to a line."""
    from facelandmarks.training.init import CheckpointError, init_weights

    build_model("scratch", (64, 64, 3), K).save_weights(tmp_path / "scratch.weights.h5")
    with pytest.raises(CheckpointError, match="does not fit .* with this input and point count") as err:
        init_weights(build_model(NAME, (64, 64, 3), K), str(tmp_path / "scratch.weights.h5"))
    assert len(str(err.value)) < 600 and str(err.value).endswith(" ...)")


def test_init_from_a_run_of_another_model_keeps_the_backbone_by_name(tmp_path, capsys):
    """A regressor started from a PIP run (its config.json names the model): Keras' files key layers by class and
    order, and the two nest MobileNetV2 differently, so a plain load keeps nothing; matched by name, every
    backbone layer carries over and the regressor's own layers start fresh."""
    import json

    from facelandmarks.training.init import InitMismatch, init_from_other_model

    source = build_model(NAME, (64, 64, 3), K, normalization="torch")
    for variable in source.weights:  # weights no fresh build could have
        variable.assign(np.random.default_rng(len(variable.path)).normal(size=variable.shape).astype("float32"))
    config = {"model": NAME, "input_shape": [64, 64, 3], "num_points": K, "model_options": {"normalization": "torch"}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    source.save_weights(tmp_path / "best.weights.h5")
    model = build_model("mobilenetv2", (96, 96, 3), K, normalization="torch")
    fresh = {v.path: np.asarray(v) for v in model.weights}
    init_from_other_model(model, str(tmp_path / "best.weights.h5"), config)
    line = capsys.readouterr().out
    assert "a mobilenetv2_heatmap run: kept 104 layers by name (Conv1, bn_Conv1 ... Conv_1_bn)" in line
    assert line.rstrip().endswith("started 2 fresh (head_dense1, landmark_coordinates)")
    for a, b in zip(backbones.find_application(source)[1].weights, backbones.find_application(model)[1].weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for layer in ("head_dense1", "landmark_coordinates"):
        for variable in model.get_layer(layer).weights:
            np.testing.assert_array_equal(np.asarray(variable), fresh[variable.path])
    with pytest.raises(InitMismatch, match="this mobilenetv2_heatmap run has no layer named and shaped as one of"):
        init_from_other_model(build_model("scratch", (64, 64, 3), K), str(tmp_path), config)
    with pytest.raises(InitMismatch, match="config.json has no 'num_points' to rebuild its mobilenetv2_heatmap from"):
        init_from_other_model(model, str(tmp_path), {k: v for k, v in config.items() if k != "num_points"})


def test_init_from_another_model_never_keeps_a_head_sized_by_the_points(tmp_path):
    """Every regressor ends in a dense layer named landmark_coordinates: from another family it follows layers that
    start fresh, so it means nothing; with it the only match, there is nothing to start from."""
    import json

    from facelandmarks.training.init import InitMismatch, head_layers, init_from_other_model

    source = build_model("mobilenetv2", (64, 64, 3), K, normalization="torch")
    config = {"model": "mobilenetv2", "input_shape": [64, 64, 3], "num_points": K, "model_options": {"normalization": "torch"}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    source.save_weights(tmp_path / "best.weights.h5")
    mlp = build_model("mlp", (16, 16, 3), K, hidden_units=[512])
    assert mlp.get_layer("landmark_coordinates").weights[0].shape == source.get_layer("landmark_coordinates").weights[0].shape
    head = head_layers(mlp, build_model("mlp", (16, 16, 3), K + 1, hidden_units=[512]))
    assert head == ("landmark_coordinates",)
    with pytest.raises(InitMismatch, match="nothing to start from"):
        init_from_other_model(mlp, str(tmp_path), config, head)


def test_layers_keras_named_after_their_class_match_nothing():
    from facelandmarks.training.init import _made_up_name

    made_up = [keras.layers.Conv2D(1, 1), keras.layers.Dense(1), keras.layers.DepthwiseConv2D(1),
               keras.layers.BatchNormalization(name="batch_normalization_12")]
    assert all(_made_up_name(layer) for layer in made_up)
    chosen = [keras.layers.Conv2D(1, 1, name="block_1_expand"), keras.layers.Dense(1, name="dense_head"),
              keras.layers.BatchNormalization(name="bn_Conv1")]
    assert not any(_made_up_name(layer) for layer in chosen)
