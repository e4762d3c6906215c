"""Fully convolutional heatmaps decoded to coordinates by a differentiable soft-argmax."""

from __future__ import annotations

import keras

from facelandmarks.models.backbones import PixelNormalization
from facelandmarks.models.heads import (
    check_min_size,
    check_units,
    conv_bn_relu,
    pixel_input,
)
from facelandmarks.models.layers import NearestUpsampling2D, SoftArgmax2D
from facelandmarks.models.registry import ModelSpec, register


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
    filters = check_units("filters", filters, allow_empty=False)
    if len(filters) < 3:
        raise ValueError(f"heatmap needs at least 3 filter levels (heatmaps at 1/4 scale), got {filters!r}")
    check_min_size("heatmap", input_shape, 2 ** len(filters))
    pixels = pixel_input(input_shape)
    x = PixelNormalization("unit", name="input_normalization")(pixels)
    skips = []
    for i, f in enumerate(filters, start=1):
        x = conv_bn_relu(x, f, 3, 2, f"down{i}_a")
        x = conv_bn_relu(x, f, 3, 1, f"down{i}_b")
        skips.append(x)
    for i in range(len(filters) - 2, 0, -1):  # up to the level of skips[1] = 1/4 scale
        skip = skips[i]
        x = NearestUpsampling2D(2, name=f"up{i}_upsample")(x)
        extra_h, extra_w = x.shape[1] - skip.shape[1], x.shape[2] - skip.shape[2]
        if extra_h or extra_w:
            x = keras.layers.Cropping2D(((0, extra_h), (0, extra_w)), name=f"up{i}_crop")(x)
        x = keras.layers.Concatenate(name=f"up{i}_concat")([x, skip])
        x = conv_bn_relu(x, filters[i], 3, 1, f"up{i}")
    heatmaps = keras.layers.Conv2D(num_points, 1, dtype="float32", name="heatmaps")(x)
    return keras.Model(pixels, SoftArgmax2D(name="landmarks")(heatmaps), name="heatmap_landmarks")


register(ModelSpec("heatmap", build_heatmap, "fully convolutional heatmaps + differentiable soft-argmax to coordinates",
          (128, 128, 3), source="ours"))
