"""A multilayer perceptron on the flattened image (seed 001)."""

from __future__ import annotations

import keras

from facelandmarks.models.backbones import PixelNormalization
from facelandmarks.models.heads import (
    check_dropout,
    check_units,
    dense_stack,
    landmark_output,
    pixel_input,
)
from facelandmarks.models.registry import ModelSpec, register


def build_mlp(input_shape, num_points, hidden_units=(512, 512), dropout=0.5):
    """Seed 001's multilayer perceptron on the flattened image.

    Pixels scaled to [0, 1], flattened, ``hidden_units`` ReLU layers each
    followed by dropout (seed: p = 0.5 after every hidden layer), linear 2K
    output.

    Args:
        hidden_units: widths of the hidden layers.
        dropout: dropout after each hidden layer.
    """
    hidden_units = check_units("hidden_units", hidden_units, allow_empty=False)
    dropout = check_dropout(dropout)
    pixels = pixel_input(input_shape)
    x = PixelNormalization("unit", name="input_normalization")(pixels)
    x = keras.layers.Flatten(name="pixels_flatten")(x)
    x = dense_stack(x, hidden_units, dropout, "hidden")
    return keras.Model(pixels, landmark_output(x, num_points), name="mlp_landmarks")


register(ModelSpec("mlp", build_mlp, "multilayer perceptron on the flattened image, dropout 0.5",
          (96, 96, 1), source="seed 001"))
