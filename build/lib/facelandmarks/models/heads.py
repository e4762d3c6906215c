"""Building blocks every family shares: the pixel input, dense stacks, the landmark output, argument checks."""

from __future__ import annotations

import math

import keras


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
