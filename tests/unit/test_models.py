"""Models without face data: argument errors, pixel normalisation, soft-argmax, weights files, the CLI.

Backbone freezing (layer flags, the same on every backend): ``tests/unit/test_backbones.py``.

Building and training every registered model on real faces: ``tests/data/test_models.py``.
"""

import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest

from facelandmarks.cli.models import main
from facelandmarks.models import backbones, build_model
from facelandmarks.models.layers import NearestUpsampling2D, SoftArgmax2D

pytestmark = pytest.mark.backend


def test_heatmap_soft_argmax_finds_the_peak():
    heatmaps = np.full((1, 8, 16, 2), -50.0, np.float32)
    heatmaps[0, 2, 5, 0] = 50.0  # row 2, column 5 of a 16-wide, 8-high map
    heatmaps[0, 7, 0, 1] = 50.0
    coords = keras.ops.convert_to_numpy(SoftArgmax2D(name="soft_argmax")(heatmaps))
    np.testing.assert_allclose(coords[0], [[5.5 / 16, 2.5 / 8], [0.5 / 16, 7.5 / 8]], atol=1e-6)


def _input_gradient(layer, x, upstream):
    """d(sum(layer(x) * upstream)) / dx, by the backend's own differentiation."""
    if keras.backend.backend() == "jax":
        import jax

        return np.asarray(jax.vjp(layer, x)[1](upstream)[0])
    import tensorflow as tf

    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
    return tape.gradient(y, x, output_gradients=tf.constant(upstream)).numpy()


@pytest.mark.parametrize("factor", [2, 3])
def test_nearest_upsampling_gives_upsampling2d_numbers_forward_and_backward(factor):
    """The heatmap and autoencoder models' upsampling replaced keras.layers.UpSampling2D: the same bits both ways."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 5, 4)).astype(np.float32)
    upstream = rng.normal(size=(2, 3 * factor, 5 * factor, 4)).astype(np.float32)
    ours, stock = NearestUpsampling2D(factor), keras.layers.UpSampling2D(factor)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(ours(x)), keras.ops.convert_to_numpy(stock(x)))
    np.testing.assert_array_equal(_input_gradient(ours, x, upstream), _input_gradient(stock, x, upstream))
    assert ours.compute_output_shape((None, 3, 5, 4)) == (None, 3 * factor, 5 * factor, 4)
    assert NearestUpsampling2D.from_config(ours.get_config()).factor == factor
    with pytest.raises(ValueError, match="factor must be a positive integer, got 0"):
        NearestUpsampling2D(0)


TRAIN_ONE_STEP = """
import sys
import keras, numpy as np
from facelandmarks.models import build_model
from facelandmarks.models.autoencoder import build_reconstruction_model
if sys.argv[1] == "stock":  # the models as they were built
    inputs = keras.Input((16, 16, 3))
    models = [keras.Model(inputs, keras.layers.UpSampling2D(2)(keras.layers.Conv2D(2, 1)(inputs)))]
else:
    models = [build_model("heatmap", (32, 32, 3), 5), build_reconstruction_model(build_model("autoencoder", (32, 32, 1), 5))]
for model in models:
    model.compile("adam", "mse")
    x = np.zeros((2, *model.input_shape[1:]), np.float32)
    # fit's default batch of 32 leaves the batch dimension unknown in the step, as training's dataset does
    model.fit(x, np.zeros((2, *model.output_shape[1:]), np.float32), verbose=0)
"""


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow's oneDNN log line, checked in a TensorFlow process")
def test_training_the_upsampling_models_writes_no_onednn_error_line():
    """Training the heatmap model (or pretraining the autoencoder) printed "E0000 ... util.cc:131] oneDNN supports DT_INT32
    only on platforms with AVX-512. Falling back to the default Eigen-based implementation" on an AVX-512 machine:
    the gradient of UpSampling2D's tile transposes an int32 shape, which oneDNN turns down. ERROR lines stay visible
    (TF_CPP_MIN_LOG_LEVEL=2), so the models upsample without a tile."""
    said = {mode: subprocess.run([sys.executable, "-c", TRAIN_ONE_STEP, mode], capture_output=True, text=True,
                                 timeout=300, env={**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2"})
            for mode in ("stock", "ours")}
    assert said["stock"].returncode == 0, said["stock"].stderr
    if "oneDNN supports DT_INT32" not in said["stock"].stderr:
        pytest.skip("this TensorFlow does not rewrite int32 ops for oneDNN (oneDNN off, or not an x86 build)")
    assert said["ours"].returncode == 0, said["ours"].stderr
    assert "oneDNN supports" not in said["ours"].stderr and " util.cc:" not in said["ours"].stderr


def test_weights_errors_name_the_file(tmp_path):
    # A MobileNetV2 notop weights file made here (random weights): it fits MobileNetV2, not ResNet50.
    mobilenet = tmp_path / "mobilenet_v2_notop.weights.h5"
    source = backbones.build_backbone("mobilenetv2", (32, 32, 3))
    source.get_layer(backbones.BACKBONES["mobilenetv2"].application_name).save_weights(mobilenet)
    loaded = backbones.build_backbone("mobilenetv2", (32, 32, 3), weights=mobilenet)
    for a, b in zip(source.weights, loaded.weights):
        np.testing.assert_array_equal(np.array(a), np.array(b), err_msg=a.path)
    with pytest.raises(ValueError, match=f"weights file {mobilenet} does not fit the resnet50 backbone"):
        backbones.build_backbone("resnet50", (32, 32, 3), weights=mobilenet)
    # a whole landmark model's weights (what --init takes): Keras's line ended "Example error message for object <...>:"
    run_weights = tmp_path / "run.weights.h5"
    build_model("mlp", (32, 32, 3), 68).save_weights(run_weights)
    with pytest.raises(ValueError) as error:
        backbones.build_backbone("mobilenetv2", (32, 32, 3), weights=run_weights)
    message = str(error.value)
    assert message.startswith(f"weights file {run_weights} does not fit the mobilenetv2 backbone (include_top=False): ")
    assert message.endswith("a landmark run's weights go to --init)") and "Example error" not in message
    missing = tmp_path / "nope.weights.h5"
    with pytest.raises(ValueError, match=f"weights file {missing} does not exist"):
        build_model("densenet121", (32, 32, 3), 68, weights=missing)
    broken = tmp_path / "broken.weights.h5"
    broken.write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match=f"weights file {broken} does not fit the mobilenetv2 backbone"):
        backbones.build_backbone("mobilenetv2", (32, 32, 3), weights=broken)


def test_pixel_normalization_modes_match_keras_and_torchvision():
    pixels = np.array([[[[0.0, 127.5, 255.0]]]], np.float32)
    out = {mode: keras.ops.convert_to_numpy(backbones.PixelNormalization(mode)(pixels))[0, 0, 0] for mode in backbones.NORMALIZATION_MODES}
    np.testing.assert_allclose(out["tf"], [-1, 0, 1], atol=1e-6)
    np.testing.assert_allclose(out["unit"], [0, 0.5, 1], atol=1e-6)
    np.testing.assert_allclose(out["caffe"], [255 - 103.939, 127.5 - 116.779, 0 - 123.68], atol=1e-4)  # BGR
    np.testing.assert_allclose(out["torch"], [(0 - 0.485) / 0.229, (0.5 - 0.456) / 0.224, (1 - 0.406) / 0.225], atol=1e-5)
    np.testing.assert_allclose(
        out["caffe"], keras.applications.resnet50.preprocess_input(pixels.copy())[0, 0, 0], atol=1e-4
    )
    with pytest.raises(ValueError, match="needs RGB input"):
        backbones.PixelNormalization("torch")(np.zeros((1, 2, 2, 1), np.float32))


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="unknown model 'vgg16'; known: scratch, inception_bottleneck, inception"):
        build_model("vgg16", (32, 32, 3), 68)
    with pytest.raises(ValueError, match="model 'mlp' has no pretrained backbone: weights must be 'none', got 'imagenet'"):
        build_model("mlp", (32, 32, 1), 68, weights="imagenet")
    with pytest.raises(ValueError, match="model 'scratch' has no backbone blocks to freeze"):
        build_model("scratch", (32, 32, 3), 68, train_blocks=2)
    with pytest.raises(ValueError, match="model 'mlp' has no option.s. filters; its options: hidden_units, dropout"):
        build_model("mlp", (32, 32, 1), 68, filters=(8,))
    with pytest.raises(ValueError, match=r"backbone 'inception' needs inputs of at least 75x75 pixels, got input_shape \(64, 64, 3\)"):
        build_model("inception", (64, 64, 3), 68)
    with pytest.raises(ValueError, match=r"input_shape must be \(F,\)"):
        build_model("inception_bottleneck", (32, 32, 3), 68)
    with pytest.raises(ValueError, match=r"input_shape must be \(S, S, 1\|3\)"):
        build_model("heatmap", (32, 32, 4), 68)
    with pytest.raises(ValueError, match="num_points must be a positive integer, got 0"):
        build_model("heatmap", (32, 32, 3), 0)
    with pytest.raises(ValueError, match="resnet_scratch with 3 stages needs inputs of at least 17 pixels"):
        build_model("resnet_scratch", (16, 16, 3), 68)
    with pytest.raises(ValueError, match="dropout must be in"):
        build_model("mlp", (32, 32, 1), 68, dropout=1.5)
    # widths given as 1.5, "64" or true (--model-options JSON) were taken as 1, 64 and 1 in silence
    for widths in ([1.5], ["64"], [True]):
        with pytest.raises(ValueError, match=rf"hidden_units must be a non-empty sequence of positive integers, got "
                                             rf"{re.escape(repr(widths))}"):
            build_model("mlp", (32, 32, 1), 68, hidden_units=widths)
    assert build_model("mlp", (32, 32, 1), 68, hidden_units=[16.0]).get_layer("hidden_dense1").units == 16  # JSON's 16.0


def test_a_backbone_family_registered_without_its_backbone_fields_is_refused_when_it_registers(monkeypatch):
    """docs/models.md "Adding a model family": a backbone model gives backbone= and default_train_blocks=, and its
    builder takes weights and train_blocks. A spec without default_train_blocks registered, and the first training
    with --weights and no --train-blocks ended with 'train blocks for mobilenetv2 must be an integer from -1 (all)
    to 17, got None', naming neither the spec nor the field."""
    from facelandmarks.models import registry
    from facelandmarks.models.registry import ModelSpec, register

    monkeypatch.setattr(registry, "REGISTRY", dict(registry.REGISTRY))  # nothing registered here outlives the test

    def backbone_builder(input_shape, num_points, weights="none", train_blocks=-1, width=8):
        raise AssertionError("registering builds nothing")

    def plain_builder(input_shape, num_points, width=8):
        raise AssertionError("registering builds nothing")

    def spec(name, builder, **fields):
        return ModelSpec(name, builder, "a family of a test", (32, 32, 3), **fields)

    with pytest.raises(ValueError, match=r"^model 'nodefault': a backbone model needs default_train_blocks.*got None"):
        register(spec("nodefault", backbone_builder, backbone="mobilenetv2"))
    with pytest.raises(ValueError, match=r"^model 'typo': unknown backbone 'mobilnetv2'; known: inception, resnet50"):
        register(spec("typo", backbone_builder, backbone="mobilnetv2", default_train_blocks=-1))
    with pytest.raises(ValueError, match=r"^model 'noargs' has a backbone.*does not take weights and train_blocks"):
        register(spec("noargs", plain_builder, backbone="mobilenetv2", default_train_blocks=-1))
    with pytest.raises(ValueError, match=r"^model 'nobackbone': its builder takes weights and train_blocks.*backbone="):
        register(spec("nobackbone", backbone_builder))
    with pytest.raises(ValueError, match=r"^model 'blocks': default_train_blocks=2 without a backbone"):
        register(spec("blocks", plain_builder, default_train_blocks=2))
    assert not {"nodefault", "typo", "noargs", "nobackbone", "blocks"} & set(registry.REGISTRY)
    register(spec("fine", backbone_builder, backbone="mobilenetv2", default_train_blocks=-1))
    register(spec("plain", plain_builder))
    assert registry.model_options("fine") == {"width": 8} and "fine" in registry.REGISTRY


def test_cli_help_and_summary(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "--list" in capsys.readouterr().out
    assert main(["--summary", "mlp", "--input-size", "32"]) == 0
    out = capsys.readouterr().out
    assert "mlp_landmarks" in out and "landmark_coordinates" in out
    # built without initialising its weights (shapes_only): the counts of the model as training builds it
    from facelandmarks.models import REGISTRY

    params = build_model("mlp", (32, 32, REGISTRY["mlp"].default_input_shape[-1]), 68).count_params()
    assert f"Total params: {params:,} " in out, out


def test_cli_bad_sizes_are_one_line(capsys):
    """An input too small for the model, or a size or point count below 1, is one line (exit 2), not a traceback."""
    assert main(["--summary", "mobilenetv2", "--input-size", "16"]) == 2
    assert capsys.readouterr().err == ("models.py: --summary mobilenetv2: backbone 'mobilenetv2' needs inputs of at least "
                                       "32x32 pixels, got input_shape (16, 16, 3)\n")
    for argv in (["--list", "--num-points", "0"], ["--summary", "mlp", "--input-size", "0"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and err.count("\n") == 1 and "must be a positive integer, got 0" in err
    # options of another action: --to printed the help and exited 0; --input-size was ignored in silence
    for argv, says in ((["--to", "w/x"], "--to FOLDER goes with --ship RUN_DIR"),
                       (["--list", "--input-size", "64"], "--input-size goes with --summary NAME"),
                       (["--summary", "inception_bottleneck", "--input-size", "64"],
                        "--input-size: inception_bottleneck takes features of shape (2048,), not images")):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2 and capsys.readouterr().err.startswith(f"models.py: {says}")


def test_cli_list_shows_every_model_with_its_parameters(capsys):
    from facelandmarks.models import REGISTRY

    assert main(["--list", "--num-points", "5"]) == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    rows = {line.split()[0]: line for line in lines[0::2]}
    assert list(rows) == list(REGISTRY)
    # counted from builds that initialise nothing (stateless; under JAX every model built as usual took 30 s): the
    # same as models built as training builds them, dense, convolutional and a backbone with its PIP head
    for name in ("mlp", "scratch", "mobilenetv2_heatmap"):
        params = build_model(name, REGISTRY[name].default_input_shape, 5).count_params()
        assert f" {params:,} " in rows[name], (name, params, rows[name])
    # each row's options follow it as JSON that --model-options takes back
    options = {name: json.loads(line.split("options (--model-options): ", 1)[1]) for name, line in zip(rows, lines[1::2])}
    assert options["mlp"] == {"hidden_units": [512, 512], "dropout": 0.5}
    assert options["mobilenetv2_heatmap"]["head"] == "pip" and options["mobilenetv2_heatmap"]["stride"] is None
    with pytest.raises(SystemExit) as exit_info:
        main(["--summary", "nope"])
    assert exit_info.value.code == 2 and "'nope' is not a model; choose from scratch" in capsys.readouterr().err
