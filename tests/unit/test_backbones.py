"""Backbone freezing without face data: which layers ``set_trainable_blocks`` unfreezes.

Layer flags are set by Keras the same way on every backend, so these run once, on the default backend
(``make test`` runs the ``backend`` tests again on JAX; building ResNet50, DenseNet121 and InceptionV3
there took 11-22 s each for nothing new).
"""

import keras
import pytest

from facelandmarks.models import backbones


@pytest.mark.parametrize(
    "backbone, n, expected",
    [
        ("resnet50", 2, lambda name: name.startswith(("conv5_block2_", "conv5_block3_"))),
        ("mobilenetv2", 2, lambda name: name.startswith(("block_15_", "block_16_")) or name in ("Conv_1", "Conv_1_bn", "out_relu")),
        ("densenet121", 2, lambda name: name.startswith(("conv5_block15_", "conv5_block16_")) or name in ("bn", "relu")),
    ],
)
def test_set_trainable_blocks_unfreezes_exactly_the_last_blocks(backbone, n, expected):
    model = backbones.build_backbone(backbone, (32, 32, 3))
    assert backbones.set_trainable_blocks(model, n) > 0
    application = model.get_layer(backbones.BACKBONES[backbone].application_name)
    layers = [layer for layer in application.layers if not isinstance(layer, keras.layers.InputLayer)]
    assert {layer.name for layer in layers if layer.trainable} == {layer.name for layer in layers if expected(layer.name)}
    backbones.set_trainable_blocks(model, 0)
    assert not model.trainable_weights
    backbones.set_trainable_blocks(model, -1)
    assert all(layer.trainable for layer in layers)


def test_inception_two_blocks_are_the_keras_fine_tuning_guides_top_two():
    # Keras's InceptionV3 fine-tuning recipe freezes layers[:249] and trains "the top 2 inception blocks".
    model = backbones.build_backbone("inception", (75, 75, 3))
    backbones.set_trainable_blocks(model, 2)
    layers = model.get_layer("inception_v3").layers
    assert [layer.trainable for layer in layers[249:]] == [True] * (len(layers) - 249)
    assert not any(layer.trainable for layer in layers[1:249])
    with pytest.raises(ValueError, match="train blocks for inception must be an integer from -1 .all. to 11, got 12"):
        backbones.set_trainable_blocks(model, 12)
