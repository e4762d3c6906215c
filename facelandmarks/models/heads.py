"""Building blocks every family shares: the pixel input, dense stacks, the landmark output, argument checks.

They are public: a family of the package and one of a plugin (docs/models.md, "Families and losses from your own
file") build from the same pieces.
"""

from __future__ import annotations

import math

import keras
import numpy as np


def pixel_input(input_shape) -> keras.KerasTensor:
    """The model's input, named ``pixels``: raw pixels (H, W, C) as a prepared npz holds them."""
    return keras.Input(tuple(input_shape), name="pixels")


def landmark_output(x, num_points: int):
    """Linear 2K output (seed 000) reshaped to (N, K, 2), in float32.

    The bias starts at 0.5 so an untrained model predicts the crop centre
    rather than the corner.
    """
    x = keras.layers.Dense(
        2 * num_points, bias_initializer=keras.initializers.Constant(0.5), dtype="float32", name="landmark_coordinates"
    )(x)
    return keras.layers.Reshape((num_points, 2), dtype="float32", name="landmarks")(x)


def dense_stack(x, units, dropout: float, prefix: str):
    """ReLU dense layers of widths ``units``, each followed by dropout when ``dropout`` > 0 (``PREFIX_dense1`` ...)."""
    for i, width in enumerate(units, start=1):
        x = keras.layers.Dense(width, activation="relu", name=f"{prefix}_dense{i}")(x)
        if dropout > 0:
            x = keras.layers.Dropout(dropout, name=f"{prefix}_dropout{i}")(x)
    return x


def conv_bn_relu(x, filters: int, kernel_size: int, strides: int, name: str):
    """Conv2D ("same" padding, no bias), batch normalisation, ReLU: ``NAME_conv``, ``NAME_bn``, ``NAME_relu``."""
    x = keras.layers.Conv2D(filters, kernel_size, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def check_units(label: str, values, allow_empty: bool = True) -> tuple[int, ...]:
    """``values`` as a tuple of positive ints (a whole float such as JSON's 16.0 counts), or a ValueError naming
    ``label`` and echoing the value: 1.5, "64" and True are refused, not read as 1, 64 and 1."""
    kind = f"a {'non-empty ' if not allow_empty else ''}sequence of positive integers"
    try:
        given = tuple(values)
    except TypeError:
        raise ValueError(f"{label} must be {kind}, got {values!r}") from None
    whole = all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
                and math.isfinite(v) and v == int(v) for v in given)
    if not whole or (not given and not allow_empty) or any(v < 1 for v in given):
        raise ValueError(f"{label} must be {kind}, got {values!r}")
    return tuple(int(v) for v in given)


def check_dropout(dropout) -> float:
    """``dropout`` as a float in [0, 1), or a ValueError echoing it."""
    if not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    return float(dropout)


def check_min_size(name: str, input_shape, min_size: int):
    """A ValueError naming model ``name`` when ``input_shape``'s sides are below ``min_size`` pixels."""
    if min(input_shape[:2]) < min_size:
        raise ValueError(f"model {name!r} needs inputs of at least {min_size}x{min_size} pixels, got input_shape {tuple(input_shape)!r}")


def halvings(size: int, times: int) -> int:
    """A side of ``size`` pixels after ``times`` stride-2 layers with "same" padding."""
    for _ in range(times):
        size = math.ceil(size / 2)
    return size
