"""Rebuilding a trained model without its backbone weights file keeps the input normalisation it trained with."""

import pytest

from facelandmarks.models import rebuild_options


@pytest.mark.parametrize(("model", "weights", "expected"), [
    ("mobilenetv2", "../shared/weights/mobilenet_v2_imagenet_notop.weights.h5", "torch"),  # the offline file's mode
    ("mobilenetv2_heatmap", "some/file.weights.h5", "torch"),
    ("mobilenetv2", "none", "tf"),  # Keras' own mode for MobileNetV2
])
def test_the_trained_normalisation_is_written_into_the_options(model, weights, expected):
    options = rebuild_options(model, weights, {"dropout": 0.0} if model == "mobilenetv2" else {"head": "pip"})
    assert options["normalization"] == expected
    assert len(options) == 2  # the given option is kept


def test_an_explicit_normalisation_and_models_without_a_backbone_are_left_alone():
    assert rebuild_options("mobilenetv2", "x.weights.h5", {"normalization": "caffe"})["normalization"] == "caffe"
    assert rebuild_options("scratch", "none", {"dropout": 0.1}) == {"dropout": 0.1}
