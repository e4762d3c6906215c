"""Every landmark model of the toolkit behind one registry.

``train.py`` and ``evaluate.py`` pick a model by name; its builder returns a
``keras.Model`` that takes raw pixels (uint8 or float 0..255, scaling happens
inside the model) -- or, for ``inception_bottleneck``, precomputed backbone
features -- and returns (N, K, 2) normalised crop coordinates (x, y in
[0, 1]) from a float32 layer named ``landmarks``.

==========================  ========================================================
name                        model
==========================  ========================================================
``scratch``                 seed 000: two parallel conv paths (kernel 6, kernel 3)
``inception_bottleneck``    seed 000: dense branches on features, squares, sines
``inception``               seed 000: InceptionV3, retrain the last N mixed blocks
``resnet50``                seed 000/004: ResNet50, retrain the last N blocks
``densenet121``             seed 004: DenseNet-121
``mobilenetv2``             MobileNetV2 (offline ImageNet weights available)
``resnet_scratch``          seed 003: ResNet from residual units
``mlp``                     seed 001: multilayer perceptron with dropout
``autoencoder``             seed 002: conv encoder pretrained as an autoencoder
``heatmap``                 heatmaps + differentiable soft-argmax -> coordinates
==========================  ========================================================

``python models.py --list`` prints each with its parameter count.  To add a
model, write ``build_<name>(input_shape, num_points, **options)`` returning
a ``keras.Model`` (use ``_pixel_input`` and ``_landmark_output``) and add a
``ModelSpec`` to ``REGISTRY``.
"""

from __future__ import annotations

import argparse
import inspect
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

import keras
from keras import ops

import backbones
import losses  # noqa: F401  (registers the losses and the NME metric, so compiled .keras files reload)
from backbones import PACKAGE, PixelNormalization

IMAGE, FEATURES = "image", "features"


# --------------------------------------------------------------------------- layers


@keras.saving.register_keras_serializable(package=PACKAGE)
class FeatureTransform(keras.layers.Layer):
    """Element-wise view of a feature vector: 'identity', 'square' or 'sine' (seed 000's bottleneck)."""

    FUNCTIONS = ("identity", "square", "sine")

    def __init__(self, function: str, **kwargs):
        super().__init__(**kwargs)
        if function not in self.FUNCTIONS:
            raise ValueError(f"function must be one of {self.FUNCTIONS}, got {function!r}")
        self.function = function

    def call(self, inputs):
        if self.function == "square":
            return ops.square(inputs)
        if self.function == "sine":
            return ops.sin(inputs)
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "function": self.function}


@keras.saving.register_keras_serializable(package=PACKAGE)
class SoftArgmax2D(keras.layers.Layer):
    """Heatmap logits (N, H, W, K) -> expected position (N, K, 2) in normalised coordinates.

    A softmax over the H x W positions of each channel gives a probability
    map; the output is its mean position, ``x = sum p(i, j) (j + 0.5) / W``
    (likewise y): differentiable, sub-pixel, and in the same [0, 1] crop
    coordinates as the regressors (pixel centres at ``(p + 0.5) / S``).
    Computed in float32 whatever the global dtype policy.
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)

    def call(self, inputs):
        logits = ops.cast(inputs, "float32")
        _, height, width, channels = logits.shape
        flat = ops.reshape(ops.transpose(logits, (0, 3, 1, 2)), (-1, channels, height * width))
        probs = ops.reshape(ops.softmax(flat, axis=-1), (-1, channels, height, width))
        xs = (np.arange(width, dtype=np.float32) + 0.5) / width
        ys = (np.arange(height, dtype=np.float32) + 0.5) / height
        x = ops.sum(ops.sum(probs, axis=2) * xs, axis=-1)
        y = ops.sum(ops.sum(probs, axis=3) * ys, axis=-1)
        return ops.stack([x, y], axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[3], 2)


# --------------------------------------------------------------------------- building blocks


def _pixel_input(input_shape) -> keras.KerasTensor:
    return keras.Input(tuple(input_shape), name="pixels")


def _landmark_output(x, num_points: int):
    """Linear 2K output (seed 000) reshaped to (N, K, 2), in float32.

    The bias starts at 0.5 so an untrained model predicts the crop centre
    rather than the corner.
    """
    x = keras.layers.Dense(
        2 * num_points, bias_initializer=keras.initializers.Constant(0.5), dtype="float32", name="landmark_coordinates"
    )(x)
    return keras.layers.Reshape((num_points, 2), dtype="float32", name="landmarks")(x)


def _dense_stack(x, units, dropout: float, prefix: str):
    for i, width in enumerate(units, start=1):
        x = keras.layers.Dense(width, activation="relu", name=f"{prefix}_dense{i}")(x)
        if dropout > 0:
            x = keras.layers.Dropout(dropout, name=f"{prefix}_dropout{i}")(x)
    return x


def _conv_bn_relu(x, filters: int, kernel_size: int, strides: int, name: str):
    x = keras.layers.Conv2D(filters, kernel_size, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def _check_units(label: str, values, allow_empty: bool = True) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in values)
    except (TypeError, ValueError):
        raise ValueError(f"{label} must be a sequence of positive integers, got {values!r}") from None
    if (not values and not allow_empty) or any(v < 1 for v in values):
        raise ValueError(f"{label} must be a {'non-empty ' if not allow_empty else ''}sequence of positive integers, got {values!r}")
    return values


def _check_dropout(dropout) -> float:
    if not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    return float(dropout)


def _check_min_size(name: str, input_shape, min_size: int):
    if min(input_shape[:2]) < min_size:
        raise ValueError(f"model {name!r} needs inputs of at least {min_size}x{min_size} pixels, got input_shape {tuple(input_shape)!r}")


def _halvings(size: int, times: int) -> int:
    for _ in range(times):
        size = math.ceil(size / 2)
    return size


# --------------------------------------------------------------------------- builders


def build_scratch(input_shape, num_points, filters=(32, 64, 128, 128), kernel_sizes=(6, 3), dense_units=(256,), dropout=0.3):
    """Seed 000's CNN from scratch: parallel conv paths with large and small kernels.

    Each path is ``len(filters)`` x (Conv2D + ReLU, 2x2 max pool); the paths
    are flattened, concatenated and fed to dense layers and the linear 2K
    output.

    Args:
        filters: filters of each conv stage (same in every path).
        kernel_sizes: one path per kernel size (seed: 6 and 3).
        dense_units: hidden dense layers after the concatenation.
        dropout: dropout after each hidden dense layer.
    """
    filters = _check_units("filters", filters, allow_empty=False)
    kernel_sizes = _check_units("kernel_sizes", kernel_sizes, allow_empty=False)
    dense_units, dropout = _check_units("dense_units", dense_units), _check_dropout(dropout)
    _check_min_size("scratch", input_shape, 2 ** len(filters))
    pixels = _pixel_input(input_shape)
    x = PixelNormalization("unit", name="input_normalization")(pixels)
    paths = []
    for k in kernel_sizes:
        y = x
        for i, f in enumerate(filters, start=1):
            y = keras.layers.Conv2D(f, k, padding="same", activation="relu", name=f"k{k}_conv{i}")(y)
            y = keras.layers.MaxPooling2D(2, name=f"k{k}_pool{i}")(y)
        paths.append(keras.layers.Flatten(name=f"k{k}_flatten")(y))
    x = keras.layers.Concatenate(name="paths_concat")(paths) if len(paths) > 1 else paths[0]
    x = _dense_stack(x, dense_units, dropout, "head")
    return keras.Model(pixels, _landmark_output(x, num_points), name="scratch_landmarks")


def build_inception_bottleneck(input_shape, num_points, branch_units=(512,), dense_units=(512,), dropout=0.3):
    """Seed 000's bottleneck head on precomputed (N, F) backbone features.

    Three dense branches see the features, their squares and their sines;
    their outputs are concatenated and go through dense layers to the
    linear 2K output.  Input: ``features`` of a bottleneck npz
    (``datagen.py bottleneck``, InceptionV3 by default: F = 2048).

    Args:
        branch_units: dense layers of each branch.
        dense_units: dense layers after the concatenation.
        dropout: dropout after each hidden dense layer.
    """
    branch_units = _check_units("branch_units", branch_units, allow_empty=False)
    dense_units, dropout = _check_units("dense_units", dense_units), _check_dropout(dropout)
    features = keras.Input(tuple(input_shape), name="features")
    branches = []
    for function in FeatureTransform.FUNCTIONS:
        view = FeatureTransform(function, name=f"{function}_features")(features)
        branches.append(_dense_stack(view, branch_units, dropout, function))
    x = keras.layers.Concatenate(name="branches_concat")(branches)
    x = _dense_stack(x, dense_units, dropout, "head")
    return keras.Model(features, _landmark_output(x, num_points), name="inception_bottleneck_landmarks")


def _backbone_regressor(backbone_name: str):
    def build(input_shape, num_points, weights="none", train_blocks=-1, normalization="auto", dense_units=(512,), dropout=0.3):
        dense_units, dropout = _check_units("dense_units", dense_units), _check_dropout(dropout)
        pixels = _pixel_input(input_shape)
        backbone = backbones.build_backbone(backbone_name, input_shape, weights=weights, normalization=normalization)
        x = backbone(pixels)
        x = keras.layers.GlobalAveragePooling2D(name="feature_pool")(x)
        x = _dense_stack(x, dense_units, dropout, "head")
        model = keras.Model(pixels, _landmark_output(x, num_points), name=f"{backbone_name}_landmarks")
        backbones.set_trainable_blocks(model, train_blocks)
        return model

    info = backbones.BACKBONES[backbone_name]
    build.__name__ = f"build_{backbone_name}"
    build.__doc__ = f"""{info.constructor.__name__} (keras.applications, no top) -> global average -> dense -> 2K.

    Args:
        weights: 'none', 'imagenet' or a local weights file (backbones.build_backbone).
        train_blocks: trainable blocks from the top, -1 = all ({info.block_unit}).
        normalization: 'auto' or a pixel normalisation mode (backbones.PixelNormalization).
        dense_units: hidden dense layers of the head.
        dropout: dropout after each hidden dense layer.
    """
    return build


def _residual_unit(x, filters: int, strides: int, name: str):
    """Bottleneck residual unit (1x1, 3x3, 1x1 x4) with a projection shortcut when the shape changes."""
    out_filters = 4 * filters
    shortcut = x
    if strides != 1 or x.shape[-1] != out_filters:
        shortcut = keras.layers.Conv2D(out_filters, 1, strides=strides, use_bias=False, name=f"{name}_shortcut_conv")(x)
        shortcut = keras.layers.BatchNormalization(name=f"{name}_shortcut_bn")(shortcut)
    y = _conv_bn_relu(x, filters, 1, 1, f"{name}_1")
    y = _conv_bn_relu(y, filters, 3, strides, f"{name}_2")
    y = keras.layers.Conv2D(out_filters, 1, use_bias=False, name=f"{name}_3_conv")(y)
    y = keras.layers.BatchNormalization(name=f"{name}_3_bn")(y)
    y = keras.layers.Add(name=f"{name}_add")([shortcut, y])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def build_resnet_scratch(input_shape, num_points, stage_blocks=(2, 2, 2), stage_filters=(64, 128, 256), stem_filters=64):
    """Seed 003's ResNet built from residual units, trained from scratch.

    Stem: 7x7/2 conv, BN, ReLU, 3x3/2 max pool (as ResNet50).  Then one stage
    per entry of ``stage_blocks`` of bottleneck residual units (output
    channels 4 x filters: 256, 512, 1024 by default, the seed's "64 to
    1024"); every stage after the first halves the resolution.  A 2x2
    average pool and a flatten feed the linear 2K output.

    Args:
        stage_blocks: residual units per stage.
        stage_filters: bottleneck filters per stage (same length).
        stem_filters: filters of the 7x7 stem convolution.
    """
    stage_blocks = _check_units("stage_blocks", stage_blocks, allow_empty=False)
    stage_filters = _check_units("stage_filters", stage_filters, allow_empty=False)
    if len(stage_blocks) != len(stage_filters):
        raise ValueError(f"stage_blocks {stage_blocks} and stage_filters {stage_filters} must have the same length")
    (stem_filters,) = _check_units("stem_filters", (stem_filters,))
    halvings = 2 + len(stage_blocks) - 1  # stem conv and pool, then every stage after the first
    if _halvings(min(input_shape[:2]), halvings) < 2:  # the final 2x2 average pool needs 2x2
        smallest = next(s for s in range(2, 2 ** (halvings + 2)) if _halvings(s, halvings) >= 2)
        raise ValueError(
            f"resnet_scratch with {len(stage_blocks)} stages needs inputs of at least "
            f"{smallest} pixels, got input_shape {tuple(input_shape)!r}"
        )
    pixels = _pixel_input(input_shape)
    x = PixelNormalization("unit", name="input_normalization")(pixels)
    x = _conv_bn_relu(x, stem_filters, 7, 2, "stem")
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    for s, (blocks, filters) in enumerate(zip(stage_blocks, stage_filters), start=1):
        for b in range(1, blocks + 1):
            strides = 2 if (s > 1 and b == 1) else 1
            x = _residual_unit(x, filters, strides, f"stage{s}_unit{b}")
    x = keras.layers.AveragePooling2D(2, name="final_pool")(x)
    x = keras.layers.Flatten(name="final_flatten")(x)
    return keras.Model(pixels, _landmark_output(x, num_points), name="resnet_scratch_landmarks")


def build_mlp(input_shape, num_points, hidden_units=(512, 512), dropout=0.5):
    """Seed 001's multilayer perceptron on the flattened image.

    Pixels scaled to [0, 1], flattened, ``hidden_units`` ReLU layers each
    followed by dropout (seed: p = 0.5 after every hidden layer), linear 2K
    output.

    Args:
        hidden_units: widths of the hidden layers.
        dropout: dropout after each hidden layer.
    """
    hidden_units = _check_units("hidden_units", hidden_units, allow_empty=False)
    dropout = _check_dropout(dropout)
    pixels = _pixel_input(input_shape)
    x = PixelNormalization("unit", name="input_normalization")(pixels)
    x = keras.layers.Flatten(name="pixels_flatten")(x)
    x = _dense_stack(x, hidden_units, dropout, "hidden")
    return keras.Model(pixels, _landmark_output(x, num_points), name="mlp_landmarks")


def _build_encoder(input_shape, filters) -> keras.Model:
    pixels = _pixel_input(input_shape)
    x = PixelNormalization("unit", name="input_normalization")(pixels)
    for i, f in enumerate(filters, start=1):
        x = keras.layers.Conv2D(f, 3, padding="same", activation="relu", name=f"encoder_conv{i}")(x)
        x = keras.layers.MaxPooling2D(2, padding="same", name=f"encoder_pool{i}")(x)
    return keras.Model(pixels, x, name="encoder")


def build_autoencoder(input_shape, num_points, filters=(32, 64, 128), dense_units=(256,), dropout=0.3):
    """Seed 002's regressor on a convolutional encoder pretrained as an autoencoder.

    The encoder (a nested model named ``encoder``: ``len(filters)`` x
    (3x3 conv + ReLU, 2x2 max pool)) is shared with the reconstruction
    model of ``pretrain_autoencoder``; after that pretraining, its code is
    flattened and regressed through dense layers to the 2K output.

    Args:
        filters: filters of the encoder's conv stages (the decoder mirrors them).
        dense_units: hidden dense layers of the regression head.
        dropout: dropout after each hidden dense layer.
    """
    filters = _check_units("filters", filters, allow_empty=False)
    dense_units, dropout = _check_units("dense_units", dense_units), _check_dropout(dropout)
    _check_min_size("autoencoder", input_shape, 2 ** len(filters))
    pixels = _pixel_input(input_shape)
    code = _build_encoder(input_shape, filters)(pixels)
    x = keras.layers.Flatten(name="code_flatten")(code)
    x = _dense_stack(x, dense_units, dropout, "head")
    return keras.Model(pixels, _landmark_output(x, num_points), name="autoencoder_landmarks")


class ReconstructionBatches(keras.utils.PyDataset):
    """Batches (uint8 images, images / 255) for reconstruction, shuffled every epoch.

    Scales one batch at a time, so a large dataset is never held as float32.
    """

    def __init__(self, images: np.ndarray, batch_size: int, shuffle: bool = True, seed: int = 0):
        super().__init__()
        self.images, self.batch_size, self.shuffle = images, int(batch_size), shuffle
        self.rng = np.random.default_rng(seed)
        self.order = np.arange(len(images))

    def __len__(self):
        return math.ceil(len(self.images) / self.batch_size)

    def __getitem__(self, index):
        rows = np.sort(self.order[index * self.batch_size:(index + 1) * self.batch_size])
        batch = self.images[rows]
        return batch, batch.astype(np.float32) / 255.0

    def on_epoch_end(self):
        if self.shuffle:
            self.rng.shuffle(self.order)


def build_reconstruction_model(model: keras.Model) -> keras.Model:
    """Encoder of an ``autoencoder`` landmark model + a fresh mirrored decoder.

    The encoder layer object is shared, so training this model trains the
    landmark model's encoder.  The decoder ends in a float32 sigmoid
    ``reconstruction`` of the input scaled to [0, 1].
    """
    try:
        encoder = model.get_layer("encoder")
    except ValueError:
        raise ValueError(f"model {model.name!r} has no 'encoder' layer: build it with build_model('autoencoder', ...)") from None
    height, width, channels = encoder.input.shape[1:]
    pixels = keras.Input((height, width, channels), name="pixels")
    x = encoder(pixels)
    convs = [layer for layer in encoder.layers if isinstance(layer, keras.layers.Conv2D)]
    for i, conv in enumerate(reversed(convs), start=1):
        x = keras.layers.UpSampling2D(2, name=f"decoder_up{i}")(x)
        x = keras.layers.Conv2D(conv.filters, 3, padding="same", activation="relu", name=f"decoder_conv{i}")(x)
    extra_h, extra_w = x.shape[1] - height, x.shape[2] - width
    if extra_h or extra_w:
        x = keras.layers.Cropping2D(((0, extra_h), (0, extra_w)), name="decoder_crop")(x)
    x = keras.layers.Conv2D(channels, 3, padding="same", activation="sigmoid", dtype="float32", name="reconstruction")(x)
    return keras.Model(pixels, x, name="autoencoder_reconstruction")


def pretrain_autoencoder(model, images, epochs: int, batch_size: int, callbacks=None, learning_rate: float = 1e-3, verbose="auto"):
    """Pretrain an ``autoencoder`` model's encoder by reconstruction (binary cross-entropy, seed 002).

    Args:
        model: the landmark model from ``build_model('autoencoder', ...)``.
        images: uint8 (N, S, S, C) crops, the model's input shape.
        epochs, batch_size: of the reconstruction training.
        callbacks: Keras callbacks (TensorBoard, progress...) for that fit.
        learning_rate: Adam's learning rate.
        verbose: passed to ``fit``.

    Returns:
        The reconstruction training's ``keras.callbacks.History``.
    """
    images = np.asarray(images)
    expected = tuple(model.input.shape[1:])
    if images.dtype != np.uint8 or images.shape[1:] != expected:
        raise ValueError(f"pretraining images must be uint8 (N, {', '.join(map(str, expected))}), got {images.dtype} {images.shape}")
    if len(images) == 0:
        raise ValueError("pretraining needs at least one image, got none")
    if int(epochs) < 1 or int(batch_size) < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs!r} and {batch_size!r}")
    reconstruction = build_reconstruction_model(model)
    reconstruction.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="binary_crossentropy")
    return reconstruction.fit(
        ReconstructionBatches(images, batch_size), epochs=int(epochs), callbacks=callbacks, verbose=verbose
    )


def build_heatmap(input_shape, num_points, filters=(32, 64, 128, 256)):
    """Fully convolutional heatmap model with a soft-argmax, returning coordinates.

    An encoder halves the resolution ``len(filters)`` times (two 3x3
    conv + BN + ReLU per level); a decoder upsamples back to 1/4 of the
    input, concatenating the encoder's features of the same size (U-Net
    style); a 1x1 conv gives K heatmaps of logits, and ``SoftArgmax2D``
    turns each into its expected position -- the heatmap approach seed 000
    left out, trained end to end with the coordinate losses.

    Args:
        filters: filters per encoder level (at least 3 levels).
    """
    filters = _check_units("filters", filters, allow_empty=False)
    if len(filters) < 3:
        raise ValueError(f"heatmap needs at least 3 filter levels (heatmaps at 1/4 scale), got {filters!r}")
    _check_min_size("heatmap", input_shape, 2 ** len(filters))
    pixels = _pixel_input(input_shape)
    x = PixelNormalization("unit", name="input_normalization")(pixels)
    skips = []
    for i, f in enumerate(filters, start=1):
        x = _conv_bn_relu(x, f, 3, 2, f"down{i}_a")
        x = _conv_bn_relu(x, f, 3, 1, f"down{i}_b")
        skips.append(x)
    for i in range(len(filters) - 2, 0, -1):  # up to the level of skips[1] = 1/4 scale
        skip = skips[i]
        x = keras.layers.UpSampling2D(2, name=f"up{i}_upsample")(x)
        extra_h, extra_w = x.shape[1] - skip.shape[1], x.shape[2] - skip.shape[2]
        if extra_h or extra_w:
            x = keras.layers.Cropping2D(((0, extra_h), (0, extra_w)), name=f"up{i}_crop")(x)
        x = keras.layers.Concatenate(name=f"up{i}_concat")([x, skip])
        x = _conv_bn_relu(x, filters[i], 3, 1, f"up{i}")
    heatmaps = keras.layers.Conv2D(num_points, 1, dtype="float32", name="heatmaps")(x)
    return keras.Model(pixels, SoftArgmax2D(name="landmarks")(heatmaps), name="heatmap_landmarks")


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class ModelSpec:
    """One registered model.

    Args:
        name: the CLI name.
        builder: ``builder(input_shape, num_points, **options) -> keras.Model``
            (backbone models also take ``weights`` and ``train_blocks``).
        description: one line for listings.
        default_input_shape: the input it is meant for: (S, S, C) for
            images, (F,) for features.
        input_kind: 'image' (raw uint8 pixels) or 'features' (bottleneck npz).
        source: the seed it comes from.
        backbone: the ``backbones.py`` backbone, None for the others.
        default_train_blocks: trainable backbone blocks when ``train_blocks``
            is not given and the backbone has pretrained weights.
        pretrain: ``pretrain(model, images, epochs, batch_size, callbacks)``
            hook run before the landmark training, or None.
    """

    name: str
    builder: Callable[..., keras.Model]
    description: str
    default_input_shape: tuple[int, ...]
    input_kind: str = IMAGE
    source: str = ""
    backbone: str | None = None
    default_train_blocks: int | None = None
    pretrain: Callable | None = None


REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("scratch", build_scratch, "CNN from scratch: parallel kernel-6 and kernel-3 conv paths, dense head",
                  (128, 128, 3), source="seed 000 3.2.1"),
        ModelSpec("inception_bottleneck", build_inception_bottleneck,
                  "dense branches on InceptionV3 features, their squares and sines (bottleneck npz)",
                  (backbones.BACKBONES["inception"].features,), input_kind=FEATURES, source="seed 000 3.2.2"),
        ModelSpec("inception", _backbone_regressor("inception"), "InceptionV3 regressor, retrains the last N mixed blocks",
                  (299, 299, 3), source="seed 000 3.2.2", backbone="inception", default_train_blocks=2),
        ModelSpec("resnet50", _backbone_regressor("resnet50"), "ResNet50 regressor, retrains the last N residual blocks",
                  (224, 224, 3), source="seed 000 3.2.3, 004", backbone="resnet50", default_train_blocks=2),
        ModelSpec("densenet121", _backbone_regressor("densenet121"), "DenseNet-121 regressor (1x1 conv for gray input)",
                  (224, 224, 3), source="seed 004", backbone="densenet121", default_train_blocks=-1),
        ModelSpec("mobilenetv2", _backbone_regressor("mobilenetv2"), "MobileNetV2 regressor: fast on CPU, offline ImageNet weights",
                  (224, 224, 3), source="ours", backbone="mobilenetv2", default_train_blocks=-1),
        ModelSpec("resnet_scratch", build_resnet_scratch, "ResNet of bottleneck residual units, configurable stages, from scratch",
                  (128, 128, 3), source="seed 003"),
        ModelSpec("mlp", build_mlp, "multilayer perceptron on the flattened image, dropout 0.5",
                  (96, 96, 1), source="seed 001"),
        ModelSpec("autoencoder", build_autoencoder, "conv encoder pretrained by reconstruction (BCE), then a regression head",
                  (96, 96, 1), source="seed 002", pretrain=pretrain_autoencoder),
        ModelSpec("heatmap", build_heatmap, "fully convolutional heatmaps + differentiable soft-argmax to coordinates",
                  (128, 128, 3), source="ours"),
    )
}

_FIXED_ARGS = ("input_shape", "num_points", "weights", "train_blocks")


def get_spec(name: str) -> ModelSpec:
    """The registered ``ModelSpec`` of ``name``, with an error listing the names."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown model {name!r}; known: {', '.join(REGISTRY)}") from None


def model_options(name: str) -> dict:
    """The builder options of model ``name`` with their defaults."""
    signature = inspect.signature(get_spec(name).builder)
    return {p.name: p.default for p in signature.parameters.values() if p.name not in _FIXED_ARGS}


def _validate_input_shape(spec: ModelSpec, input_shape) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in input_shape)
    except (TypeError, ValueError):
        raise ValueError(f"input_shape must be a tuple of integers, got {input_shape!r}") from None
    if spec.input_kind == FEATURES:
        if len(shape) != 1 or shape[0] < 1:
            raise ValueError(f"model {spec.name!r} takes feature vectors: input_shape must be (F,), got {input_shape!r}")
    elif len(shape) != 3 or shape[0] != shape[1] or shape[2] not in (1, 3) or shape[0] < 1:
        raise ValueError(f"model {spec.name!r} takes square images: input_shape must be (S, S, 1|3), got {input_shape!r}")
    return shape


def build_model(name: str, input_shape, num_points: int, weights="none", train_blocks=None, **options) -> keras.Model:
    """Build a registered landmark model.

    Args:
        name: a ``REGISTRY`` name.
        input_shape: (S, S, C) image shape (C = 1 or 3), or (F,) for
            ``inception_bottleneck``.
        num_points: K, landmarks per face.
        weights: backbone models: 'none', 'imagenet' or a weights file;
            other models accept only 'none'.
        train_blocks: backbone models: trainable blocks from the top (-1 =
            all).  None = the model's default with pretrained weights, all
            blocks with ``weights='none'`` (a frozen random backbone learns
            nothing).  Other models accept only None.
        **options: the builder's own options (``model_options(name)``).

    Returns:
        An uncompiled ``keras.Model`` whose output layer ``landmarks`` gives
        float32 (N, K, 2) normalised crop coordinates.
    """
    spec = get_spec(name)
    shape = _validate_input_shape(spec, input_shape)
    if isinstance(num_points, bool) or not isinstance(num_points, (int, np.integer)) or num_points < 1:
        raise ValueError(f"num_points must be a positive integer, got {num_points!r}")
    allowed = model_options(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"model {name!r} has no option(s) {', '.join(unknown)}; its options: {', '.join(allowed) or 'none'}")
    if spec.backbone is None:
        if backbones.weights_kind(weights) != "none":
            raise ValueError(f"model {name!r} has no pretrained backbone: weights must be 'none', got {weights!r}")
        if train_blocks is not None:
            raise ValueError(f"model {name!r} has no backbone blocks to freeze: train_blocks must be None, got {train_blocks!r}")
        return spec.builder(shape, int(num_points), **options)
    if train_blocks is None:
        train_blocks = -1 if backbones.weights_kind(weights) == "none" else spec.default_train_blocks
    return spec.builder(shape, int(num_points), weights=weights, train_blocks=train_blocks, **options)


def pretrain(name: str, model: keras.Model, images: np.ndarray, epochs: int, batch_size: int, callbacks=None, **options):
    """Run model ``name``'s pretraining (``ModelSpec.pretrain``) on ``images``.

    Returns:
        The pretraining's ``keras.callbacks.History``.
    """
    spec = get_spec(name)
    if spec.pretrain is None:
        with_hook = [s.name for s in REGISTRY.values() if s.pretrain is not None]
        raise ValueError(f"model {name!r} has no pretraining step (models with one: {', '.join(with_hook)})")
    return spec.pretrain(model, images, epochs=epochs, batch_size=batch_size, callbacks=callbacks, **options)


def load_model(path, compile: bool = True) -> keras.Model:
    """Load a ``.keras`` landmark model saved by this toolkit (custom layers and losses registered)."""
    return keras.saving.load_model(path, compile=compile)


def describe_models(num_points: int = 68) -> list[dict]:
    """One row per model: name, input, parameters at the default input size, description."""
    rows = []
    for spec in REGISTRY.values():
        model = build_model(spec.name, spec.default_input_shape, num_points)
        rows.append({
            "name": spec.name,
            "input": "x".join(map(str, spec.default_input_shape)) + (" features" if spec.input_kind == FEATURES else ""),
            "params": model.count_params(),
            "source": spec.source,
            "description": spec.description,
        })
        del model
        keras.backend.clear_session()
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="The toolkit's landmark models. Use a NAME with train.py; see README 'Models'.",
        epilog="models: " + ", ".join(REGISTRY),
    )
    parser.add_argument("--list", action="store_true", help="print name, parameters, input and description of every model")
    parser.add_argument("--summary", metavar="NAME", choices=list(REGISTRY), help="print the layer summary of one model")
    parser.add_argument("--num-points", type=int, default=68, help="landmarks K for --list / --summary (default 68)")
    parser.add_argument("--input-size", type=int, help="image side for --summary (default: the model's)")
    args = parser.parse_args(argv)
    if not args.list and not args.summary:
        parser.print_help()
        return 0
    if args.list:
        rows = describe_models(args.num_points)
        print(f"{'model':<22} {'input':<16} {'params':>12}  {'from':<20} description")
        for row in rows:
            print(f"{row['name']:<22} {row['input']:<16} {row['params']:>12,}  {row['source']:<20} {row['description']}")
    if args.summary:
        spec = get_spec(args.summary)
        shape = spec.default_input_shape
        if args.input_size and spec.input_kind == IMAGE:
            shape = (args.input_size, args.input_size, shape[2])
        build_model(args.summary, shape, args.num_points).summary(expand_nested=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
