"""A convolutional encoder pretrained by reconstruction, then a regression head (seed 002)."""

from __future__ import annotations

import math

import keras
import numpy as np

from facelandmarks.models.backbones import PixelNormalization
from facelandmarks.models.heads import (
    check_dropout,
    check_min_size,
    check_units,
    dense_stack,
    landmark_output,
    pixel_input,
)
from facelandmarks.models.layers import NearestUpsampling2D
from facelandmarks.models.registry import ModelSpec, register


def _build_encoder(input_shape, filters) -> keras.Model:
    pixels = pixel_input(input_shape)
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
    filters = check_units("filters", filters, allow_empty=False)
    dense_units, dropout = check_units("dense_units", dense_units), check_dropout(dropout)
    check_min_size("autoencoder", input_shape, 2 ** len(filters))
    pixels = pixel_input(input_shape)
    code = _build_encoder(input_shape, filters)(pixels)
    x = keras.layers.Flatten(name="code_flatten")(code)
    x = dense_stack(x, dense_units, dropout, "head")
    return keras.Model(pixels, landmark_output(x, num_points), name="autoencoder_landmarks")


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
        x = NearestUpsampling2D(2, name=f"decoder_up{i}")(x)
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


register(ModelSpec("autoencoder", build_autoencoder, "conv encoder pretrained by reconstruction (BCE), then a regression head",
          (96, 96, 1), source="seed 002", pretrain=pretrain_autoencoder))
