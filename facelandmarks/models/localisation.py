"""Localisation heads on MobileNetV2 feature maps: pixel-in-pixel (PIPNet) and integral heatmaps.

The backbone regressors pool the whole feature map into one vector and ask a
dense layer for 2K numbers; ``docs/results.md`` found that head, not the
features, to be what limits them.  The heads here keep the spatial layout:
each point is *found* on a feature map and decoded to coordinates by a
differentiable expectation, so the model still returns (N, K, 2) normalised
crop coordinates from a float32 layer ``landmarks`` and trains with the
ordinary coordinate losses.

Both heads share a top-down decoder (FPN-like): the stride-32 output of
MobileNetV2 (``out_relu``) is projected to ``channels``, upsampled by 2
(bilinear) and added to a 1x1 projection of the backbone's activation at
that stride (``block_13_expand_relu`` at 16, ``block_6_expand_relu`` at 8,
``block_3_expand_relu`` at 4: the last full-resolution activation of each
scale), then refined by a depthwise-separable 3x3 conv + BN + ReLU, until
the head's stride.  The fine grid thus sees the whole network's context.

``head='pip'`` (Jin et al., "Pixel-in-Pixel Net", 2021) puts, per point, a
score map and x / y offset maps on the stride-``stride`` grid (8x8 for a
128-px crop at stride 16).  ``PixelInPixelDecode`` takes a softmax over
each point's cells and returns ``sum p(cell) (cell centre + offset(cell) x
cell size)``, so the offsets are trained through the coordinate loss.
PIPNet's neighbour regression is not implemented; ``spread_weight`` adds a
training loss that makes each cell an estimate of its point on its own.

``head='integral'`` (Sun et al., "Integral Human Pose Regression", 2018)
decodes to stride 4 and gives K heatmaps of logits, turned into
coordinates by ``SoftArgmax2D``.

The application keeps every one of its layers (the whole MobileNetV2 runs,
its weights load from the same file as ``mobilenetv2``'s), and
``train_blocks`` counts the same 17 blocks.
"""

from __future__ import annotations

import keras

from facelandmarks.models import backbones
from facelandmarks.models.heads import check_units, pixel_input
from facelandmarks.models.layers import CentreZoom, PixelInPixelDecode, SoftArgmax2D
from facelandmarks.models.registry import ModelSpec, register

HEADS = ("pip", "integral")
# BatchNormalization momentum of the decoder and head, as backbones.build_backbone sets it in the backbone: with
# Keras's 0.99 the head's moving statistics still lagged its batch statistics after 2 epochs, and the
# softmax-weighted decoding turned that into 13.9 % validation NME (7.4 % with the statistics recomputed).
BN_MOMENTUM = 0.9
HEAD_STRIDES = {"pip": (16, 8, 32), "integral": (4, 8)}  # the first is the default
# MobileNetV2's activation at each stride: the input of the next stride-2 block (its expansion), and the top.
MOBILENETV2_TAPS = {4: "block_3_expand_relu", 8: "block_6_expand_relu", 16: "block_13_expand_relu", 32: "out_relu"}


def zoom_layers(x, zoom: float):
    """The centre of the crop ``x`` (N, S, S, C), ``zoom`` of its side, enlarged to S px: ``x`` resized to the even
    number of pixels more than S nearest S / ``zoom`` (bilinear), its centre S x S cut (``layers.CentreZoom``).
    Returns (the layer's output, the zoom it makes exactly: S / that size), which ``PixelInPixelDecode`` maps the
    points back with."""
    side = int(x.shape[1])  # the registry takes square crops only
    larger = side + 2 * max(1, round((side / zoom - side) / 2))
    return CentreZoom(larger, name="zoom")(x), side / larger


def _multiscale_backbone(input_shape, weights, normalization, strides, zoom: float = 1.0):
    """pixels -> [zoom] -> [gray_to_rgb] -> input_normalization -> MobileNetV2 giving its activations at ``strides``;
    also the exact zoom (1.0 without).

    The backbone of ``backbones.build_backbone`` (same weights, normalisation
    and BatchNormalization momentum) with its application re-wired to output
    several feature maps; the re-wired model keeps the application's name and
    all its layers, so ``backbones.set_trainable_blocks`` finds and splits it
    exactly as in the ``mobilenetv2`` regressor.
    """
    backbone = backbones.build_backbone("mobilenetv2", input_shape, weights=weights, normalization=normalization)
    name = backbones.BACKBONES["mobilenetv2"].application_name
    application = backbone.get_layer(name)
    taps = keras.Model(application.inputs, [application.get_layer(MOBILENETV2_TAPS[s]).output for s in strides], name=name)
    pixels = pixel_input(input_shape)
    x, exact = zoom_layers(pixels, zoom) if zoom != 1.0 else (pixels, 1.0)
    if input_shape[-1] == 1:
        x = backbone.get_layer("gray_to_rgb")(x)
    x = backbone.get_layer("input_normalization")(x)
    return pixels, dict(zip(strides, taps(x))), exact


def _sep_bn_relu(x, filters: int, name: str):
    x = keras.layers.SeparableConv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_sepconv")(x)
    x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def _project(x, filters: int, name: str):
    x = keras.layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_conv")(x)
    return keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)


def _top_down(features: dict, stride: int, channels: int):
    """The stride-32 map upsampled level by level to ``stride``, adding each level's backbone activation."""
    x = keras.layers.ReLU(name="top_s32_relu")(_project(features[32], channels, "top_s32"))
    level = 32
    while level > stride:
        level //= 2
        lateral = _project(features[level], channels, f"lateral_s{level}")
        x = keras.layers.UpSampling2D(2, interpolation="bilinear", name=f"up_s{level}")(x)
        extra_h, extra_w = x.shape[1] - lateral.shape[1], x.shape[2] - lateral.shape[2]
        if extra_h or extra_w:  # odd sizes: the backbone rounds up at each stride-2 step
            x = keras.layers.Cropping2D(((0, extra_h), (0, extra_w)), name=f"up_s{level}_crop")(x)
        x = keras.layers.Add(name=f"merge_s{level}")([x, lateral])
        x = keras.layers.ReLU(name=f"merge_s{level}_relu")(x)
        x = _sep_bn_relu(x, channels, f"refine_s{level}")
    return x


def build_mobilenetv2_heatmap(input_shape, num_points, weights="none", train_blocks=-1, normalization="auto",
                              head="pip", stride=None, channels=128, head_convs=1, max_offset=None,
                              spread_weight=0.0, zoom=1.0):
    """MobileNetV2 (keras.applications, no top) -> top-down decoder -> PIPNet or integral heatmap head.

    Args:
        weights: 'none', 'imagenet' or a local weights file (backbones.build_backbone).
        train_blocks: trainable blocks from the top, -1 = all (MobileNetV2 inverted-residual blocks, 17).
        normalization: 'auto' or a pixel normalisation mode (backbones.PixelNormalization).
        head: 'pip' (score + x/y offset maps on a stride-``stride`` grid, soft decoding)
            or 'integral' (K heatmaps at stride 4, soft-argmax).
        stride: stride of the head's grid: 'pip' 8, 16 or 32 (None: 16, 8x8 cells at 128 px),
            'integral' 4 or 8 (None: 4).
        channels: width of the decoder and of the head.
        head_convs: separable 3x3 conv + BN + ReLU blocks before the head's 1x1 outputs.
        max_offset: 'pip' only: None (free offsets) or the most cells a cell may place its point
            from its centre (a tanh bound, ``layers.PixelInPixelDecode``).
        spread_weight: 'pip' only: weight of the training loss on the spread of the cells' estimates
            around each point (0: none; ``layers.PixelInPixelDecode``).
        zoom: 'pip' only: the network sees the centre ``zoom`` of each crop, enlarged to the input size
            (``zoom_layers``; 0.9 makes the usual crop of 1.5 x dlib's box one of 1.35), and returns points in
            the whole crop's coordinates, so data, photos and video stay as they are (1.0: the whole crop).
    """
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")
    allowed = HEAD_STRIDES[head]
    stride = allowed[0] if stride is None else stride
    if isinstance(stride, bool) or stride not in allowed:
        raise ValueError(f"the {head!r} head's stride must be one of {sorted(allowed)} (or None: {allowed[0]}), got {stride!r}")
    stride = int(stride)
    (channels,) = check_units("channels", (channels,), allow_empty=False)
    if isinstance(zoom, bool) or not isinstance(zoom, (int, float)) or not 0.5 <= zoom <= 1:
        raise ValueError(f"zoom must be a number from 0.5 to 1, got {zoom!r}")
    for option, value, unset in (("max_offset", max_offset, None), ("spread_weight", spread_weight, 0.0),
                                 ("zoom", zoom, 1.0)):
        if head != "pip" and value != unset:
            raise ValueError(f"{option} is an option of the 'pip' head, got {option}={value!r} with head={head!r}")
    if isinstance(head_convs, bool) or not isinstance(head_convs, int) or head_convs < 0:
        raise ValueError(f"head_convs must be an integer >= 0, got {head_convs!r}")

    strides = tuple(s for s in sorted(MOBILENETV2_TAPS, reverse=True) if s >= stride)
    pixels, features, exact_zoom = _multiscale_backbone(tuple(input_shape), weights, normalization, strides, zoom)
    x = _top_down(features, stride, channels)
    for i in range(1, head_convs + 1):
        x = _sep_bn_relu(x, channels, f"head{i}")
    if head == "pip":
        scores = keras.layers.Conv2D(num_points, 1, kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
                                     dtype="float32", name="pip_scores")(x)
        offsets = keras.layers.Conv2D(2 * num_points, 1, kernel_initializer="zeros", dtype="float32", name="pip_offsets")(x)
        landmarks = PixelInPixelDecode(max_offset, spread_weight, exact_zoom, name="landmarks")([scores, offsets])
    else:
        heatmaps = keras.layers.Conv2D(num_points, 1, kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
                                       dtype="float32", name="heatmaps")(x)
        landmarks = SoftArgmax2D(name="landmarks")(heatmaps)
    model = keras.Model(pixels, landmarks, name=f"mobilenetv2_{head}_landmarks")
    backbones.set_trainable_blocks(model, train_blocks)
    return model


register(ModelSpec("mobilenetv2_heatmap", build_mobilenetv2_heatmap,
          "MobileNetV2 + top-down decoder + localisation head: PIPNet grid (default) or integral heatmaps",
          (128, 128, 3), source="ours (PIPNet, integral regression)", backbone="mobilenetv2", default_train_blocks=-1))
