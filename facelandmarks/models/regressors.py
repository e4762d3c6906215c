"""Pretrained backbones (InceptionV3, ResNet50, DenseNet-121, MobileNetV2) with a dense landmark head."""

from __future__ import annotations

import keras

from facelandmarks.models import backbones
from facelandmarks.models.heads import (
    check_dropout,
    check_units,
    dense_stack,
    landmark_output,
    pixel_input,
)
from facelandmarks.models.registry import ModelSpec, register


def _backbone_regressor(backbone_name: str):
    def build(input_shape, num_points, weights="none", train_blocks=-1, normalization="auto", dense_units=(512,), dropout=0.3):
        dense_units, dropout = check_units("dense_units", dense_units), check_dropout(dropout)
        pixels = pixel_input(input_shape)
        backbone = backbones.build_backbone(backbone_name, input_shape, weights=weights, normalization=normalization)
        x = backbone(pixels)
        x = keras.layers.GlobalAveragePooling2D(name="feature_pool")(x)
        x = dense_stack(x, dense_units, dropout, "head")
        model = keras.Model(pixels, landmark_output(x, num_points), name=f"{backbone_name}_landmarks")
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


register(ModelSpec("inception", _backbone_regressor("inception"), "InceptionV3 regressor, retrains the last N mixed blocks",
          (299, 299, 3), source="seed 000 3.2.2", backbone="inception", default_train_blocks=2))
register(ModelSpec("resnet50", _backbone_regressor("resnet50"), "ResNet50 regressor, retrains the last N residual blocks",
          (224, 224, 3), source="seed 000 3.2.3, 004", backbone="resnet50", default_train_blocks=2))
register(ModelSpec("densenet121", _backbone_regressor("densenet121"), "DenseNet-121 regressor (1x1 conv for gray input)",
          (224, 224, 3), source="seed 004", backbone="densenet121", default_train_blocks=-1))
register(ModelSpec("mobilenetv2", _backbone_regressor("mobilenetv2"), "MobileNetV2 regressor: fast on CPU, offline ImageNet weights",
          (224, 224, 3), source="ours", backbone="mobilenetv2", default_train_blocks=-1))
