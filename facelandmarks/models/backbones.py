"""ImageNet backbones from ``keras.applications``, fed with raw pixels.

One place builds every pretrained backbone the toolkit uses -- for the
landmark regressors in ``models.py`` and for the bottleneck features that
``datagen.py bottleneck`` writes -- so both always see the same input
normalisation and the same weights.

A backbone built here is a ``keras.Model`` that takes **raw pixels** (uint8
or float, 0..255, RGB or grayscale) and returns the backbone's last feature
map (or its global average with ``pooling='avg'``)::

    pixels (S, S, C) -> [gray_to_rgb: learnable 1x1 Conv2D, C=1 only]
                     -> input_normalization (PixelNormalization, mode below)
                     -> the keras.applications model (include_top=False)

Normalisation modes (``PixelNormalization``):

==========  ==========================================================
``tf``      ``x / 127.5 - 1`` (InceptionV3, MobileNetV2 in Keras)
``caffe``   RGB -> BGR, minus the ImageNet mean (ResNet50 in Keras)
``torch``   ``x / 255``, minus mean / std of ImageNet (DenseNet121 in
            Keras, and torchvision's weights, see below)
``unit``    ``x / 255``
==========  ==========================================================

``normalization='auto'`` picks the mode the Keras weights were trained with,
except for ``mobilenetv2`` loaded from a local file: the offline weights in
``../shared/weights`` are torchvision's ImageNet MobileNetV2 converted to the
Keras layout, trained on torch-normalised input, so 'auto' gives ``torch``
there.  Pass ``normalization='tf'`` for a file converted from Keras's own
MobileNetV2 weights.

Grayscale input feeding a three-channel backbone goes through a learnable
1x1 convolution named ``gray_to_rgb`` (seed 004).  It starts as "copy the
gray value into R, G and B" (kernel ones, bias zero), so a pretrained
backbone first sees a gray photo exactly as it would see it in colour, and
training may then learn a better mapping.

``set_trainable_blocks`` freezes a backbone except its last N blocks (the
seed's "retrain the last N convolution blocks"); see ``BLOCK_UNITS`` for what
a block is in each backbone.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from keras import ops

PACKAGE = "facelandmarks"

NORMALIZATION_MODES = ("tf", "caffe", "torch", "unit")

# ImageNet statistics, RGB order, on 0..255 (caffe) and 0..1 (torch) pixels.
CAFFE_MEAN_RGB = (123.68, 116.779, 103.939)
TORCH_MEAN_RGB = (0.485, 0.456, 0.406)
TORCH_STD_RGB = (0.229, 0.224, 0.225)


@keras.saving.register_keras_serializable(package=PACKAGE)
class PixelNormalization(keras.layers.Layer):
    """Raw 0..255 pixels (uint8 or float) -> the input a network expects.

    Args:
        mode: one of ``'tf'`` (x/127.5 - 1), ``'caffe'`` (RGB -> BGR and
            ImageNet mean subtraction), ``'torch'`` (x/255, ImageNet mean/std)
            or ``'unit'`` (x/255).  ``caffe`` and ``torch`` need 3 channels.
        **kwargs: base ``Layer`` arguments (``name``, ``dtype``).
    """

    def __init__(self, mode: str = "unit", **kwargs):
        super().__init__(**kwargs)
        if mode not in NORMALIZATION_MODES:
            raise ValueError(f"normalization mode must be one of {NORMALIZATION_MODES}, got {mode!r}")
        self.mode = mode

    def build(self, input_shape):
        channels = input_shape[-1]
        if self.mode in ("caffe", "torch") and channels != 3:
            raise ValueError(f"normalization mode {self.mode!r} needs RGB input (3 channels), got input shape {input_shape}")
        self._kernel, self._bias = self.affine(self.mode, channels)

    @staticmethod
    def affine(mode: str, channels: int) -> tuple[np.ndarray, np.ndarray]:
        """The mode as ``out = pixels @ kernel + bias`` per pixel: kernel (C, C), bias (C,), float32."""
        eye = np.eye(channels, dtype=np.float32)
        if mode == "tf":
            return eye / 127.5, np.full(channels, -1.0, np.float32)
        if mode == "unit":
            return eye / 255.0, np.zeros(channels, np.float32)
        if mode == "caffe":  # output channel j is input channel 2 - j (RGB -> BGR), minus the BGR mean
            return eye[::-1].copy(), -np.asarray(CAFFE_MEAN_RGB[::-1], np.float32)
        std = np.asarray(TORCH_STD_RGB, np.float32)
        return eye / (255.0 * std), -np.asarray(TORCH_MEAN_RGB, np.float32) / std

    def call(self, inputs):
        # One 1x1 convolution with a constant kernel, not elementwise arithmetic: the same numbers, but an
        # int8 export (LiteRT) runs it as one integer convolution, where per-channel multiply / subtract
        # stayed float next to the integer network (the shipped model's forward pass 0.92 -> 0.65 ms on
        # one thread of a 2-core AMD EPYC with AVX-512; docs/inference.md).
        x = ops.cast(inputs, self.compute_dtype)
        kernel = ops.convert_to_tensor(self._kernel[None, None], dtype=self.compute_dtype)
        return ops.conv(x, kernel, strides=1, padding="valid") + ops.convert_to_tensor(self._bias, dtype=self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


def _boundaries_by_pattern(pattern: str) -> Callable[[list[str]], list[str]]:
    regex = re.compile(pattern)
    return lambda names: [n for n in names if regex.fullmatch(n)]


def _mobilenetv2_boundaries(names: list[str]) -> list[str]:
    present = set(names)
    out = ["expanded_conv_project_BN"]
    i = 1
    while f"block_{i}_project_BN" in present:
        out.append(f"block_{i}_add" if f"block_{i}_add" in present else f"block_{i}_project_BN")
        i += 1
    return out


@dataclass(frozen=True)
class BackboneInfo:
    """What the toolkit needs to know about one keras.applications backbone.

    Args:
        constructor: the ``keras.applications`` class-like function.
        application_name: the name given to the application model inside
            the wrapper (``set_trainable_blocks`` finds it by this name).
        keras_mode: the normalisation its Keras ImageNet weights expect.
        min_size: smallest input side the architecture accepts.
        features: channels of the last feature map (= pooled feature size).
        block_boundaries: layer names -> the names of the last layer of
            each block, in order.
        block_unit: one line saying what a block is, for help texts.
    """

    constructor: Callable
    application_name: str
    keras_mode: str
    min_size: int
    features: int
    block_boundaries: Callable[[list[str]], list[str]]
    block_unit: str


BACKBONES: dict[str, BackboneInfo] = {
    "inception": BackboneInfo(
        keras.applications.InceptionV3, "inception_v3", "tf", 75, 2048,
        _boundaries_by_pattern(r"mixed\d+"), "InceptionV3 'mixed' blocks (11: mixed0..mixed10)",
    ),
    "resnet50": BackboneInfo(
        keras.applications.ResNet50, "resnet50", "caffe", 32, 2048,
        _boundaries_by_pattern(r"conv\d_block\d+_out"),
        "ResNet50 residual blocks (16: conv2_block1..conv5_block3)",
    ),
    "densenet121": BackboneInfo(
        keras.applications.DenseNet121, "densenet121", "torch", 32, 1024,
        _boundaries_by_pattern(r"conv\d_block\d+_concat"),
        "DenseNet121 conv units of the dense blocks (58: conv2_block1..conv5_block16; "
        "a transition layer belongs to the unit after it)",
    ),
    "mobilenetv2": BackboneInfo(
        keras.applications.MobileNetV2, "mobilenetv2", "tf", 32, 1280,
        _mobilenetv2_boundaries, "MobileNetV2 inverted-residual blocks (17: expanded_conv, block_1..block_16)",
    ),
}

BLOCK_UNITS = {name: info.block_unit for name, info in BACKBONES.items()}


def get_backbone_info(name: str) -> BackboneInfo:
    """The ``BackboneInfo`` of ``name``, with an error listing the known backbones."""
    try:
        return BACKBONES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown backbone {name!r}; known: {', '.join(BACKBONES)}") from None


def weights_kind(weights) -> str:
    """'none', 'imagenet' or 'path' for a ``weights`` argument (None counts as 'none')."""
    if weights is None or weights == "none":
        return "none"
    if weights == "imagenet":
        return "imagenet"
    if not isinstance(weights, (str, os.PathLike)):
        raise ValueError(f"weights must be 'none', 'imagenet' or a file path, got {weights!r}")
    return "path"


def resolve_normalization(name: str, weights="none", normalization: str = "auto") -> str:
    """The pixel normalisation mode a backbone will use.

    'auto' is the Keras weights' own mode, except ``mobilenetv2`` with a
    weights file, which gets ``torch`` (the offline weights are torchvision's).
    """
    info = get_backbone_info(name)
    if normalization == "auto":
        if name == "mobilenetv2" and weights_kind(weights) == "path":
            return "torch"
        return info.keras_mode
    if normalization not in NORMALIZATION_MODES:
        raise ValueError(f"normalization must be 'auto' or one of {NORMALIZATION_MODES}, got {normalization!r}")
    return normalization


def _validate_input_shape(name: str, input_shape) -> tuple[int, int, int]:
    info = get_backbone_info(name)
    try:
        height, width, channels = (int(v) for v in input_shape)
    except (TypeError, ValueError):
        raise ValueError(f"input_shape must be (height, width, channels), got {input_shape!r}") from None
    if channels not in (1, 3):
        raise ValueError(f"backbone {name!r} takes 1 (gray) or 3 (RGB) channels, got input_shape {input_shape!r}")
    if min(height, width) < info.min_size:
        raise ValueError(
            f"backbone {name!r} needs inputs of at least {info.min_size}x{info.min_size} pixels, "
            f"got input_shape {tuple(input_shape)!r}"
        )
    return height, width, channels


def _kernels(model: keras.Model) -> list:
    return [v for v in model.weights if v.path.rsplit("/", 1)[-1] in ("kernel", "depthwise_kernel")]


def load_backbone_weights(application: keras.Model, path) -> None:
    """Load a local weights file into a notop application model, or raise naming the file.

    Keras skips parts of a file it cannot match with no more than a warning;
    every convolution kernel is therefore checked to have been replaced.
    """
    path = Path(path)  # build_backbone has checked that it is an .h5 file
    before = [np.array(v) for v in _kernels(application)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            application.load_weights(str(path))
        except Exception as err:  # Keras raises ValueError, h5py OSError/KeyError
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            if "could not be loaded" in first:  # Keras's line ends "Example error message for object <...>:"
                first = first.split(" Example error message")[0] + (
                    " (--weights takes the backbone's ImageNet file; a landmark run's weights go to --init)")
            raise ValueError(
                f"weights file {path} does not fit the {application.name} backbone "
                f"(include_top=False): {first}"
            ) from err
    unchanged = sum(np.array_equal(b, np.array(v)) for b, v in zip(before, _kernels(application)))
    if unchanged:
        hint = f"; Keras said: {caught[0].message}" if caught else ""
        raise ValueError(
            f"weights file {path} does not fit the {application.name} backbone (include_top=False): "
            f"{unchanged} of {len(before)} kernels were not in the file{hint}"
        )


def build_backbone(
    name: str,
    input_shape,
    weights="none",
    normalization: str = "auto",
    pooling: str | None = None,
    bn_momentum: float = 0.9,
) -> keras.Model:
    """A keras.applications backbone (no top) that takes raw 0..255 pixels.

    Args:
        name: 'inception', 'resnet50', 'densenet121' or 'mobilenetv2'.
        input_shape: (height, width, channels), channels 1 or 3; at least
            75 px for InceptionV3, 32 px for the others.
        weights: 'none' (random initialisation), 'imagenet' (Keras's
            download; needs a network) or the path of a ``.weights.h5`` /
            ``.h5`` file for the notop backbone.
        normalization: 'auto' (see ``resolve_normalization``) or one of
            'tf', 'caffe', 'torch', 'unit'.
        pooling: None (feature map out) or 'avg' (global average, (N, F)).
        bn_momentum: momentum of every BatchNormalization moving average.
            keras.applications use 0.99-0.999, tuned for ImageNet-length
            runs; fine-tuning on a few thousand faces then validates with
            statistics hundreds of steps stale, and validation error
            swings while training error falls.  0.9 follows the data.

    Returns:
        ``keras.Model`` named ``<name>_backbone`` with layers ``pixels``
        (input), ``gray_to_rgb`` (gray input only), ``input_normalization``,
        the application (named ``BACKBONES[name].application_name``) and
        ``feature_pool`` (with ``pooling='avg'``).
    """
    info = get_backbone_info(name)
    height, width, channels = _validate_input_shape(name, input_shape)
    kind = weights_kind(weights)
    mode = resolve_normalization(name, weights, normalization)
    if pooling not in (None, "avg"):
        raise ValueError(f"pooling must be None or 'avg', got {pooling!r}")
    if kind == "path" and not Path(weights).is_file():  # a typo answers now, not after the network is built
        raise ValueError(f"weights file {weights} does not exist (use 'none', 'imagenet' or a .weights.h5 / .h5 file)")
    if kind == "path" and not str(weights).endswith(".h5"):
        raise ValueError(f"weights file {weights}: expected a Keras .weights.h5 or .h5 weights file")

    application_args = dict(include_top=False, input_shape=(height, width, 3), name=info.application_name)
    if kind == "imagenet":
        try:
            application = info.constructor(weights="imagenet", **application_args)
        except Exception as err:
            raise ValueError(
                f"could not get Keras's ImageNet weights for {name!r} ({type(err).__name__}: {err}); "
                "without a network, pass a local weights file instead"
            ) from err
    else:
        application = info.constructor(weights=None, **application_args)
        if kind == "path":
            load_backbone_weights(application, weights)
    if not 0.0 <= float(bn_momentum) < 1.0:
        raise ValueError(f"bn_momentum must be in [0, 1), got {bn_momentum!r}")
    for layer in application.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = float(bn_momentum)

    pixels = keras.Input((height, width, channels), name="pixels")
    x = pixels
    if channels == 1:
        x = keras.layers.Conv2D(
            3, 1, kernel_initializer="ones", bias_initializer="zeros", name="gray_to_rgb"
        )(x)
    x = PixelNormalization(mode, name="input_normalization")(x)
    x = application(x)
    if pooling == "avg":
        x = keras.layers.GlobalAveragePooling2D(name="feature_pool")(x)
    return keras.Model(pixels, x, name=f"{name}_backbone")


def find_application(model: keras.Model) -> tuple[str, keras.Model]:
    """The (backbone name, application model) nested anywhere inside ``model``."""
    by_app_name = {info.application_name: name for name, info in BACKBONES.items()}
    stack = [model]
    while stack:
        layer = stack.pop(0)
        if isinstance(layer, keras.Model) and layer.name in by_app_name:
            return by_app_name[layer.name], layer
        if isinstance(layer, keras.Model):
            stack.extend(layer.layers)
    raise ValueError(f"model {model.name!r} holds no backbone from backbones.py ({', '.join(by_app_name)})")


def backbone_blocks(name: str, application: keras.Model) -> list[list[keras.layers.Layer]]:
    """The application's layers grouped into blocks, first to last.

    The first block also holds the stem; layers after the last block
    boundary (DenseNet's final BN, MobileNetV2's 1x1 head) join the last.
    """
    info = get_backbone_info(name)
    layers = [layer for layer in application.layers if not isinstance(layer, keras.layers.InputLayer)]
    boundaries = info.block_boundaries([layer.name for layer in layers])
    if not boundaries:
        raise ValueError(f"found no {name} block boundaries in application {application.name!r}")
    blocks, current, pending = [], [], list(boundaries)
    for layer in layers:
        current.append(layer)
        if pending and layer.name == pending[0]:
            blocks.append(current)
            current, pending = [], pending[1:]
    if pending:
        raise ValueError(f"{name}: block boundary layers {pending} not found in order in {application.name!r}")
    blocks[-1].extend(current)
    return blocks


def num_blocks(name: str, input_shape=None) -> int:
    """How many blocks ``set_trainable_blocks`` can unfreeze in backbone ``name``."""
    info = get_backbone_info(name)
    shape = input_shape or (max(info.min_size, 75), max(info.min_size, 75), 3)
    application = info.constructor(include_top=False, weights=None, input_shape=(shape[0], shape[1], 3))
    return len(backbone_blocks(name, application))


def set_trainable_blocks(model: keras.Model, n: int) -> int:
    """Freeze a backbone except its last ``n`` blocks.

    Only the layers of the keras.applications model nested in ``model`` are
    touched; the ``gray_to_rgb`` convolution and every head layer keep
    their trainable flag.  Frozen BatchNormalization layers run in inference
    mode (Keras 3 does this for any BatchNormalization with
    ``trainable=False``), so their statistics stay the pretrained ones.

    Args:
        model: a backbone from ``build_backbone`` or any model that holds
            one (the landmark regressors of ``models.py``).
        n: blocks to leave trainable, counted from the top; 0 freezes the
            whole backbone, -1 (or the number of blocks) trains everything.

    Returns:
        The number of application layers left trainable.
    """
    name, application = find_application(model)
    blocks = backbone_blocks(name, application)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not -1 <= n <= len(blocks):
        raise ValueError(
            f"train blocks for {name} must be an integer from -1 (all) to {len(blocks)}, got {n!r}"
        )
    application.trainable = True
    trainable = blocks if n == -1 else blocks[len(blocks) - n:]
    trainable_ids = {id(layer) for block in trainable for layer in block}
    count = 0
    for block in blocks:
        for layer in block:
            layer.trainable = id(layer) in trainable_ids
            count += layer.trainable
    return count


def extract_features(images: np.ndarray, backbone: str, weights, batch_size: int = 32, normalization: str = "auto") -> np.ndarray:
    """Global-average-pooled features of a frozen backbone, for bottleneck files.

    Args:
        images: uint8 (N, S, S, C) face crops, C = 1 or 3.
        backbone: 'inception', 'resnet50', 'densenet121' or 'mobilenetv2'.
        weights: 'none', 'imagenet' or a weights file (see ``build_backbone``).
        batch_size: images per forward pass.
        normalization: 'auto' or a mode (see ``build_backbone``).

    Returns:
        float32 (N, F) with F = ``BACKBONES[backbone].features``.
    """
    from tqdm import tqdm

    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"images must be uint8 (N, S, S, C), got {images.dtype} {images.shape}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    model = build_backbone(backbone, images.shape[1:], weights=weights, normalization=normalization, pooling="avg")
    model.trainable = False
    features = np.empty((len(images), get_backbone_info(backbone).features), np.float32)
    for start in tqdm(range(0, len(images), batch_size), desc=f"{backbone} features", unit="batch"):
        batch = images[start:start + batch_size]
        features[start:start + len(batch)] = np.asarray(model.predict_on_batch(batch), np.float32)
    return features
