"""Predictor's test-time passes: the flip test's mirrored pass is undone with the scheme's left/right pairs and
1 - x; the recrop's second pass is mapped back from the crop it was cut from."""

import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from facelandmarks.inference.predictor import Predictor
from facelandmarks.landmarks import get_scheme
from facelandmarks.training.runs import recrop_boxes

pytestmark = pytest.mark.backend  # soft-argmax in keras.ops: runs on JAX too


def marker_model(size, offsets):
    """Finds the one bright pixel of a crop (soft-argmax) and returns it plus a fixed offset per point.

    Output point i is the marker's crop coordinate ((p + 0.5) / S) moved by
    ``offsets[i]``.
    """
    grid = (np.arange(size, dtype=np.float32) + 0.5) / size
    xs = np.tile(grid, size)[None]
    ys = np.repeat(grid, size)[None]
    flat_offsets = np.asarray(offsets, np.float32).reshape(1, -1)

    def locate(pixels):
        weights = keras.ops.softmax(keras.ops.reshape(keras.ops.mean(pixels, axis=-1), (-1, size * size)), axis=-1)
        x = keras.ops.sum(weights * xs, axis=-1, keepdims=True)
        y = keras.ops.sum(weights * ys, axis=-1, keepdims=True)
        k = flat_offsets.shape[1] // 2
        marker = keras.ops.tile(keras.ops.concatenate([x, y], axis=-1), (1, k))
        return marker + flat_offsets

    pixels = keras.Input((size, size, 3))
    return keras.Model(pixels, keras.layers.Lambda(locate)(pixels))


def marker_crop(size, x, y):
    crop = np.zeros((size, size, 3), np.uint8)
    crop[y, x] = 255
    return crop


def symmetric_offsets(scheme, seed=0):
    """Offsets a mirror-symmetric face would have: x flips sign and y stays across each left/right pair."""
    rng = np.random.default_rng(seed)
    a, b = rng.uniform(-0.2, 0.2, (2, scheme.num_points))
    perm = scheme.mirror_array
    return np.stack([a - a[perm], b + b[perm]], axis=-1)


@pytest.mark.parametrize("scheme_name", ["ibug68", "muct76"])
def test_flip_test_leaves_a_mirror_equivariant_model_unchanged(scheme_name):
    scheme = get_scheme(scheme_name)
    size = 32
    model = marker_model(size, symmetric_offsets(scheme))
    crops = np.stack([marker_crop(size, 5, 9), marker_crop(size, 20, 27), marker_crop(size, 31, 0)])
    plain = Predictor(model, scheme_name).predict_crops(crops)
    marker = np.array([[5.5, 9.5], [20.5, 27.5], [31.5, 0.5]], np.float32) / size
    np.testing.assert_allclose(plain, marker[:, None] + symmetric_offsets(scheme)[None], atol=1e-4)
    # the model is mirror-equivariant, so averaging with the un-mirrored mirror pass changes nothing --
    # unless the pass is undone with the wrong pairs (offsets are random per pair) or the wrong 1 - x
    flipped = Predictor(model, scheme_name, flip_test=True).predict_crops(crops)
    np.testing.assert_allclose(flipped, plain, atol=1e-4)


def test_flip_test_averages_a_lopsided_model_towards_the_middle():
    scheme = get_scheme("ibug68")
    offsets = np.zeros((68, 2), np.float32)
    offsets[:, 0] = 0.1  # every point 0.1 to the right of the marker: the mirror pass says 0.1 to the left
    model = marker_model(32, offsets)
    crop = marker_crop(32, 12, 12)[None]
    plain = Predictor(model, "ibug68").predict_crops(crop)
    flipped = Predictor(model, "ibug68", flip_test=True).predict_crops(crop)
    np.testing.assert_allclose(plain[..., 0], 12.5 / 32 + 0.1, atol=1e-4)
    np.testing.assert_allclose(flipped[..., 0], 12.5 / 32, atol=1e-4)
    np.testing.assert_allclose(flipped[..., 1], plain[..., 1], atol=1e-4)
    assert scheme.num_points == flipped.shape[1]


def test_flip_test_refuses_a_scheme_without_left_right_pairs():
    model = marker_model(16, np.zeros((6, 2)))
    with pytest.raises(ValueError, match="ibug68/right_eye.*no left/right pairs"):
        Predictor(model, "ibug68/right_eye", flip_test=True)
    predictor = Predictor(model, "ibug68/right_eye")
    with pytest.raises(ValueError, match="flip test"):
        predictor.flip_test = True


def test_a_fresh_process_loads_a_runs_model_keras_with_its_custom_layers(tmp_path):
    """``Predictor.load`` registers the package's layers before reading ``model.keras``: in a process that has
    imported nothing else, a run's saved model loads as it is, without falling back to its weights file."""
    import subprocess
    import sys
    from pathlib import Path

    from facelandmarks.cli import train as train_cli
    from facelandmarks.data import npz
    from tests.unit.test_train_errors import faces

    data = npz.save_npz(tmp_path / "faces.npz", faces(8, size=32))
    run = tmp_path / "heatmap"
    assert train_cli.main(["heatmap", "--data", str(data), "--run-dir", str(run), "--epochs", "1", "--batch", "4",
                           "--augment", "none", "--preview-every", "0", "--workers", "1"]) == 0
    load = ("import sys; from facelandmarks.inference.predictor import Predictor; "
            "p = Predictor.load(sys.argv[1], runtime='keras'); print(type(p.model).__name__, p.input_size)")
    done = subprocess.run([sys.executable, "-c", load, str(run)], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr[-2000:]
    assert "does not load" not in done.stderr, done.stderr[-2000:]
    assert done.stdout.split()[-2:] == ["Functional", "32"]


def two_blob_model(size, shape):
    """A perfect landmarker for crops holding a red and a green blob: red's centre A and green's B (intensity-
    weighted means, so sub-pixel) place point i at A + u_i (B - A) + v_i perp(B - A), ``shape[i] = (u_i, v_i)``.

    Whatever part of the photo a crop shows, at whatever scale, its points land on the same photo pixels.
    """
    grid = (np.arange(size, dtype=np.float32) + 0.5) / size
    xs, ys = np.tile(grid, size)[None], np.repeat(grid, size)[None]
    u, v = (np.asarray(shape, np.float32)[None, :, i] for i in (0, 1))

    def locate(pixels):
        def centre(channel):
            weights = keras.ops.reshape(pixels[..., channel], (-1, size * size))
            weights = weights / keras.ops.sum(weights, axis=-1, keepdims=True)
            return keras.ops.sum(weights * xs, axis=-1, keepdims=True), keras.ops.sum(weights * ys, axis=-1, keepdims=True)

        (ax, ay), (bx, by) = centre(0), centre(1)
        dx, dy = bx - ax, by - ay
        return keras.ops.stack([ax + u * dx - v * dy, ay + u * dy + v * dx], axis=-1)

    pixels = keras.Input((size, size, 3))
    return keras.Model(pixels, keras.layers.Lambda(locate)(pixels))


def blob_crop(size, red, green, sigma=2.0):
    """Two Gaussian blobs centred on continuous crop pixel coordinates ``red`` and ``green`` (pixel p covers [p, p + 1))."""
    centres = np.arange(size) + 0.5
    crop = np.zeros((size, size, 3), np.float32)
    for channel, (x, y) in ((0, red), (1, green)):
        crop[..., channel] = 255 * np.exp(-((centres[None] - x) ** 2 + (centres[:, None] - y) ** 2) / (2 * sigma**2))
    return crop


def test_recrop_keeps_a_perfect_landmarker_where_it_was_and_moves_a_fixed_shape():
    size, rng = 64, np.random.default_rng(3)
    shape = np.concatenate([rng.uniform(-0.3, 1.3, (68, 1)), rng.uniform(-0.9, 0.9, (68, 1))], axis=1)
    # blobs off-centre and of several sizes, so every recrop box is shifted and scaled against its crop
    crops = np.stack([blob_crop(size, (20.3, 22.7), (34.1, 23.9)), blob_crop(size, (30.6, 30.2), (45.5, 28.8)),
                      blob_crop(size, (24.2, 35.5), (32.9, 36.4))])
    model = two_blob_model(size, shape)
    plain = Predictor(model, "ibug68").predict_crops(crops)
    boxes = recrop_boxes(plain, size) * size  # in crop pixels
    assert np.abs(boxes[:, :2]).min() > 1 and np.abs(boxes[:, 2] - boxes[:, 0] - size).min() > 2  # really re-cut
    # a half-pixel or scale slip in cutting or mapping back would move every point by 0.5 px (0.008) or more
    again = Predictor(model, "ibug68", recrop=True).predict_crops(crops)
    np.testing.assert_allclose(again, plain, atol=0.002)
    # a model that ignores the image says the same crop coordinates in the recropped crop: the average moves
    fixed = keras.Model(pixels := keras.Input((size, size, 3)),
                        keras.layers.Lambda(lambda x: keras.ops.zeros_like(x[:, :1, 0, :1]) + plain[0])(pixels))
    moved = Predictor(fixed, "ibug68", recrop=True).predict_crops(crops[:1])[0]
    expected = (plain[0] + (plain[0] * (boxes[0, 2] - boxes[0, 0]) + boxes[0, :2]) / size) / 2
    np.testing.assert_allclose(moved, expected, atol=1e-5)
    assert np.abs(moved - plain[0]).max() > 0.01


def test_recrop_times_and_labels_its_rows_and_leaves_unfinite_faces_alone():
    size = 32
    offsets = symmetric_offsets(get_scheme("ibug68")) * 0.5
    offsets[:, 0] += 0.05  # lopsided: the flip test's rows differ from the plain ones
    model = marker_model(size, offsets)
    predictor = Predictor(model, "ibug68")
    crops = np.stack([marker_crop(size, 12, 14), marker_crop(size, 16, 15)]).astype(np.float32)
    rows = predictor.variants("runs/m", crops, None, flip_test=True, recrop=True)
    assert [(r.name, r.flip_test, r.recrop) for r in rows] == [
        ("m", False, False), ("m + flip test", True, False), ("m + flip test + recrop", True, True)]
    assert all(r.timed is predictor and r.history_dir == Path("runs/m") for r in rows)
    # each row holds what a predictor of its settings says: the recrop row's first pass is the flip test's
    for r in rows:
        alone = Predictor(model, "ibug68", flip_test=r.flip_test, recrop=r.recrop).predict_crops(crops)
        np.testing.assert_allclose(r.predictions, alone, atol=1e-6, err_msg=r.name)
    assert min(np.abs(b.predictions - a.predictions).max() for a, b in zip(rows, rows[1:])) > 0.01
    assert [r.name for r in Predictor(model, "ibug68").variants("runs/m", crops, None, recrop=True)] == ["m", "m + recrop"]
    nan_model = keras.Model(pixels := keras.Input((size, size, 3)),
                            keras.layers.Lambda(lambda x: keras.ops.full_like(x[:, :1, 0, :1], float("nan")) + np.zeros((68, 2), np.float32))(pixels))
    assert np.isnan(Predictor(nan_model, "ibug68", recrop=True).predict_crops(crops)).all()
    # a face without points beside one with them: the one keeps its single pass, the other is recropped as alone
    lit_corner = keras.layers.Lambda(lambda t: keras.ops.where(
        keras.ops.reshape(t[1][:, 0, 0, 0] > 0, (-1, 1)), float("nan"), t[0]))
    blind = keras.Model(pixels := keras.Input((size, size, 3)), lit_corner([model(pixels), pixels]))
    mixed = Predictor(blind, "ibug68", recrop=True).predict_crops(np.stack([marker_crop(size, 0, 0), crops[0]]))
    assert np.isnan(mixed[0]).all()
    np.testing.assert_allclose(mixed[1], Predictor(model, "ibug68", recrop=True).predict_crops(crops[:1])[0], atol=1e-6)
    assert np.abs(mixed[1] - Predictor(model, "ibug68").predict_crops(crops[:1])[0]).max() > 0.01


SEVERAL_MODELS = """
import sys
import keras, numpy as np
from facelandmarks import runtime
if sys.argv[1] == "quiet":
    runtime.several_models_predicting()
for i in range(7):  # a pipeline: stage 1, a refiner per region, a box net
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(4 + i)])
    model.predict_on_batch(np.zeros((2, 8, 8, 3), np.float32))
"""


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow's own warning, checked in a TensorFlow process: once, in the TensorFlow pass")
def test_several_models_predicting_once_each_are_not_told_they_retrace():
    """TensorFlow counted seven models' first traces as one function retraced: "5 out of the last 5 calls ... triggered
    tf.function retracing" under a regions pipeline's photos. The scripts drop that line (``runtime.startup``)."""
    said = {mode: subprocess.run([sys.executable, "-c", SEVERAL_MODELS, mode], capture_output=True, text=True,
                                 timeout=300, env={**os.environ, "KERAS_BACKEND": "tensorflow"}) for mode in ("as is", "quiet")}
    assert said["as is"].returncode == 0 and "triggered tf.function retracing" in said["as is"].stderr
    assert said["quiet"].returncode == 0, said["quiet"].stderr
    assert "retracing" not in said["quiet"].stderr


def test_crops_are_fed_at_the_models_size_and_channels():
    """``Predictor.prepare``'s two steps: gray <-> RGB by BT.601's weights (as cv2's RGB2GRAY) or by repeating the
    gray channel, and resizing by area averaging when shrinking (every source pixel counts) and bilinear when
    enlarging; crops already right pass unchanged."""
    import cv2

    from facelandmarks.inference.model_input import match_channels, resize_crops

    rgb = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    gray = match_channels(rgb, 1)
    assert gray.shape == (3, 8, 8, 1) and gray.dtype == np.uint8
    expected = np.stack([cv2.cvtColor(im, cv2.COLOR_RGB2GRAY) for im in rgb])[..., None]
    assert np.abs(gray.astype(int) - expected).max() <= 1  # cv2 rounds in fixed point
    assert (match_channels(gray, 3) == np.repeat(gray, 3, axis=-1)).all()
    assert match_channels(rgb, 3) is rgb
    with pytest.raises(ValueError, match="cannot feed 2-channel images to a 3-channel model"):
        match_channels(rgb[..., :2], 3)

    checker = np.indices((12, 12)).sum(axis=0) % 2 * 255  # one-pixel checkerboard
    crops = np.stack([checker, 255 - checker]).astype(np.uint8)[..., None]
    small = resize_crops(crops, 4)
    means = crops.reshape(2, 4, 3, 4, 3, 1).mean(axis=(2, 4))  # each 3x3 block's mean: 113 or 142, never 0 or 255
    assert small.shape == (2, 4, 4, 1) and np.abs(small - means).max() <= 1
    large = resize_crops(crops[:, :2, :2], 4)
    assert large.shape == (2, 4, 4, 1) and large[0, 0, 0, 0] == 0 and large[0, 0, 3, 0] == 255  # bilinear, edges kept
    assert resize_crops(crops, 12) is crops


@pytest.mark.parametrize("runtime", ["ONNX", "tflite", "onxx"])
def test_an_unknown_runtime_is_named_with_the_choices_before_anything_loads(runtime, tmp_path):
    """Predictor.load(runtime='ONNX') said 'RUN: not exported (python export.py RUN)' for a run without an export and
    'runtime must be auto or one of onnx, litert' (no keras) for one with it: a typo reads as neither."""
    with pytest.raises(ValueError, match=rf"^runtime must be one of auto, keras, onnx, litert, got '{runtime}'$"):
        Predictor.load(tmp_path, runtime=runtime)


@pytest.mark.parametrize("weights", ["latest", "Last", "best.weights.h5"])
def test_an_unknown_weights_choice_is_named_before_anything_loads(weights):
    """Predictor.load(weights='latest') loaded the shipped model's best weights without a word: only 'last' chose
    the last."""
    with pytest.raises(ValueError, match=rf"^weights must be 'best' or 'last', got '{weights}'$"):
        Predictor.load(weights=weights)


def test_float_crops_scaled_to_0_1_are_refused_and_0_255_taken():
    """The models take pixel values 0..255; crops divided by 255 (as many pipelines feed other models) gave points
    far off the face without a word. Float crops on the 0..255 scale and uint8 crops give the same points."""
    size = 32
    scheme = get_scheme("ibug68")
    predictor = Predictor(marker_model(size, symmetric_offsets(scheme)), "ibug68")
    crops = np.stack([marker_crop(size, 5, 9), marker_crop(size, 20, 27)])
    expected = predictor.predict_crops(crops)
    np.testing.assert_allclose(predictor.predict_crops(crops.astype(np.float32)), expected, atol=1e-6)
    with pytest.raises(ValueError, match=r"float values within 0\.\.1 \(max 1\).*multiply by 255"):
        predictor.predict_crops(crops.astype(np.float32) / 255)
    black = np.zeros((1, size, size, 3), np.float32)  # no pixel above 0: nothing says its scale, taken
    assert predictor.predict_crops(black).shape == (1, 68, 2)
