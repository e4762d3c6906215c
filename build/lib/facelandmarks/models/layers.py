"""Custom layers of the landmark models, registered so saved ``.keras`` files reload."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from facelandmarks.models.backbones import PACKAGE


@keras.saving.register_keras_serializable(package=PACKAGE)
class FeatureTransform(keras.layers.Layer):
    """Element-wise view of a feature vector: 'identity', 'square' or 'sine' (seed 000's bottleneck)."""

    FUNCTIONS = ("identity", "square", "sine")

    def __init__(self, function: str, **kwargs):
        super().__init__(**kwargs)
        if function not in self.FUNCTIONS:
            raise ValueError(f"function must be one of {self.FUNCTIONS}, got {function!r}")
        self.function = function

    def call(self, inputs):
        if self.function == "square":
            return ops.square(inputs)
        if self.function == "sine":
            return ops.sin(inputs)
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "function": self.function}


@keras.saving.register_keras_serializable(package=PACKAGE)
class SoftArgmax2D(keras.layers.Layer):
    """Heatmap logits (N, H, W, K) -> expected position (N, K, 2) in normalised coordinates.

    A softmax over the H x W positions of each channel gives a probability
    map; the output is its mean position, ``x = sum p(i, j) (j + 0.5) / W``
    (likewise y): differentiable, sub-pixel, and in the same [0, 1] crop
    coordinates as the regressors (pixel centres at ``(p + 0.5) / S``).
    Computed in float32 whatever the global dtype policy.
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)

    def call(self, inputs):
        logits = ops.cast(inputs, "float32")
        _, height, width, channels = logits.shape
        flat = ops.reshape(ops.transpose(logits, (0, 3, 1, 2)), (-1, channels, height * width))
        probs = ops.reshape(ops.softmax(flat, axis=-1), (-1, channels, height, width))
        xs = (np.arange(width, dtype=np.float32) + 0.5) / width
        ys = (np.arange(height, dtype=np.float32) + 0.5) / height
        x = ops.sum(ops.sum(probs, axis=2) * xs, axis=-1)
        y = ops.sum(ops.sum(probs, axis=3) * ys, axis=-1)
        return ops.stack([x, y], axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[3], 2)
