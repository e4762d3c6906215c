"""The shipped model on real faces computes the same points with JAX's depthwise convolutions as slices
(``facelandmarks.models.depthwise``) as with JAX's own: the same layers and weights, loaded as before."""

import keras
import numpy as np
import pytest
from keras.src.backend import nn

from facelandmarks import Predictor

from .face_batches import face_batch

pytestmark = [pytest.mark.data, pytest.mark.backend]


def test_the_shipped_model_gives_the_same_points_with_the_slices(data_dir, monkeypatch):
    predictor = Predictor.load(runtime="keras")
    x = predictor.prepare(face_batch(data_dir, "ibug68", size=128, count=8)[0])
    points = keras.ops.convert_to_numpy(predictor.model(x, training=False))  # eager: each layer calls the op now
    if keras.config.backend() == "jax":
        assert hasattr(nn.depthwise_conv, "xla_depthwise_conv")  # the package routed it through the slices
        monkeypatch.setattr(nn, "depthwise_conv", nn.depthwise_conv.xla_depthwise_conv)
    own = keras.ops.convert_to_numpy(predictor.model(x, training=False))
    assert points.shape == (8, 68 * 2) or points.shape == (8, 68, 2)
    np.testing.assert_allclose(points, own, atol=1e-4)
    assert np.abs(points.reshape(8, 68, 2) - face_batch(data_dir, "ibug68", size=128, count=8)[1]).mean() < 0.05
