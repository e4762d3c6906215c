"""The primary seed's CNN from scratch: parallel kernel-6 and kernel-3 convolution paths."""

from __future__ import annotations

import keras

from facelandmarks.models.backbones import PixelNormalization
from facelandmarks.models.heads import (
    check_dropout,
    check_min_size,
    check_units,
    dense_stack,
    landmark_output,
    pixel_input,
)
from facelandmarks.models.registry import ModelSpec, register


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
    filters = check_units("filters", filters, allow_empty=False)
    kernel_sizes = check_units("kernel_sizes", kernel_sizes, allow_empty=False)
    dense_units, dropout = check_units("dense_units", dense_units), check_dropout(dropout)
    check_min_size("scratch", input_shape, 2 ** len(filters))
    pixels = pixel_input(input_shape)
    x = PixelNormalization("unit", name="input_normalization")(pixels)
    paths = []
    for k in kernel_sizes:
        y = x
        for i, f in enumerate(filters, start=1):
            y = keras.layers.Conv2D(f, k, padding="same", activation="relu", name=f"k{k}_conv{i}")(y)
            y = keras.layers.MaxPooling2D(2, name=f"k{k}_pool{i}")(y)
        paths.append(keras.layers.Flatten(name=f"k{k}_flatten")(y))
    x = keras.layers.Concatenate(name="paths_concat")(paths) if len(paths) > 1 else paths[0]
    x = dense_stack(x, dense_units, dropout, "head")
    return keras.Model(pixels, landmark_output(x, num_points), name="scratch_landmarks")


register(ModelSpec("scratch", build_scratch, "CNN from scratch: parallel kernel-6 and kernel-3 conv paths, dense head",
          (128, 128, 3), source="seed 000 3.2.1"))
