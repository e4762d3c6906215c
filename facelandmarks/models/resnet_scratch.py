"""A ResNet of bottleneck residual units trained from scratch (seed 003)."""

from __future__ import annotations

import keras

from facelandmarks.models.backbones import PixelNormalization
from facelandmarks.models.heads import (
    check_units,
    conv_bn_relu,
    halvings,
    landmark_output,
    pixel_input,
)
from facelandmarks.models.registry import ModelSpec, register


def _residual_unit(x, filters: int, strides: int, name: str):
    """Bottleneck residual unit (1x1, 3x3, 1x1 x4) with a projection shortcut when the shape changes."""
    out_filters = 4 * filters
    shortcut = x
    if strides != 1 or x.shape[-1] != out_filters:
        shortcut = keras.layers.Conv2D(out_filters, 1, strides=strides, use_bias=False, name=f"{name}_shortcut_conv")(x)
        shortcut = keras.layers.BatchNormalization(name=f"{name}_shortcut_bn")(shortcut)
    y = conv_bn_relu(x, filters, 1, 1, f"{name}_1")
    y = conv_bn_relu(y, filters, 3, strides, f"{name}_2")
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
    stage_blocks = check_units("stage_blocks", stage_blocks, allow_empty=False)
    stage_filters = check_units("stage_filters", stage_filters, allow_empty=False)
    if len(stage_blocks) != len(stage_filters):
        raise ValueError(f"stage_blocks {stage_blocks} and stage_filters {stage_filters} must have the same length")
    (stem_filters,) = check_units("stem_filters", (stem_filters,))
    times = 2 + len(stage_blocks) - 1  # stem conv and pool, then every stage after the first
    if halvings(min(input_shape[:2]), times) < 2:  # the final 2x2 average pool needs 2x2
        smallest = next(s for s in range(2, 2 ** (times + 2)) if halvings(s, times) >= 2)
        raise ValueError(
            f"resnet_scratch with {len(stage_blocks)} stages needs inputs of at least "
            f"{smallest} pixels, got input_shape {tuple(input_shape)!r}"
        )
    pixels = pixel_input(input_shape)
    x = PixelNormalization("unit", name="input_normalization")(pixels)
    x = conv_bn_relu(x, stem_filters, 7, 2, "stem")
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    for s, (blocks, filters) in enumerate(zip(stage_blocks, stage_filters), start=1):
        for b in range(1, blocks + 1):
            strides = 2 if (s > 1 and b == 1) else 1
            x = _residual_unit(x, filters, strides, f"stage{s}_unit{b}")
    x = keras.layers.AveragePooling2D(2, name="final_pool")(x)
    x = keras.layers.Flatten(name="final_flatten")(x)
    return keras.Model(pixels, landmark_output(x, num_points), name="resnet_scratch_landmarks")


register(ModelSpec("resnet_scratch", build_resnet_scratch, "ResNet of bottleneck residual units, configurable stages, from scratch",
          (128, 128, 3), source="seed 003"))
