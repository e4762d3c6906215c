"""JAX's 3x3 depthwise convolutions as nine shifted slices (``facelandmarks.models.depthwise``): the same outputs and
gradients as the backend's own convolution, and on JAX no grouped convolution left in a compiled layer (XLA's CPU
code for one made MobileNetV2's training step 3.2x slower: docs/results.md#jax-on-a-cpu-depthwise-convolutions-as-slices-6-dec)."""

import re

import keras
import numpy as np
import pytest
from keras.src.backend import nn

from facelandmarks.models import depthwise

pytestmark = pytest.mark.backend

JAX = keras.config.backend() == "jax"


def _own_depthwise_conv():
    """The backend's own depthwise convolution (on JAX, the one the package replaced)."""
    return getattr(nn.depthwise_conv, "xla_depthwise_conv", nn.depthwise_conv)


def _grouped_convolutions(layer, x) -> list[int]:
    """The feature_group_count of every convolution in the program JAX compiles for ``layer(x)``."""
    import jax
    text = jax.jit(lambda x: layer(x)).lower(x).as_text()
    return [int(n) for n in re.findall(r"feature_group_count = (\d+)", text)]


@pytest.mark.parametrize("size, stride, padding", [(9, 1, "same"), (8, 2, "same"), (9, 2, "same"), (8, 2, "valid"),
                                                    (7, 1, "valid")])
def test_slices_give_the_backends_own_outputs_and_gradients(size, stride, padding):
    rng = np.random.default_rng(size + stride)
    x = rng.normal(size=(2, size, size, 5)).astype("float32")
    kernel = rng.normal(size=(3, 3, 5, 1)).astype("float32")
    weights = rng.normal(size=(2, *keras.ops.shape(nn.depthwise_conv(x, kernel, stride, padding))[1:])).astype("float32")
    own = _own_depthwise_conv()

    def both(function):
        """Outputs, and the gradients of sum(outputs * weights) with respect to the input and the kernel."""
        if JAX:
            import jax
            out = function(x, kernel)
            grads = jax.grad(lambda a, k: (function(a, k) * weights).sum(), argnums=(0, 1))(x, kernel)
        else:
            import tensorflow as tf
            a, k = tf.constant(x), tf.constant(kernel)
            with tf.GradientTape() as tape:
                tape.watch([a, k])
                out = function(a, k)
                total = tf.reduce_sum(out * weights)
            grads = tape.gradient(total, [a, k])
        return [keras.ops.convert_to_numpy(t) for t in (out, *grads)]

    slices = both(lambda a, k: depthwise.depthwise_slices(a, k, stride, padding))
    reference = both(lambda a, k: own(a, k, stride, padding))
    for got, want in zip(slices, reference):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


def test_jax_compiles_3x3_depthwise_layers_without_a_grouped_convolution_and_tensorflow_keeps_its_own():
    x = np.ones((2, 8, 8, 4), "float32")
    layers = [keras.layers.DepthwiseConv2D(3, strides=s, padding=p) for s, p in ((1, "same"), (2, "same"), (2, "valid"))]
    layers.append(keras.layers.SeparableConv2D(6, 3, padding="same"))  # the decoder's: depthwise, then 1x1
    for layer in layers:
        layer.build(x.shape)
    if not JAX:  # TensorFlow's kernels beat the slices (2.6x on the whole step): its convolution stays
        assert not hasattr(nn.depthwise_conv, "xla_depthwise_conv")
        return
    for layer in layers:
        assert set(_grouped_convolutions(layer, x)) <= {1}, layer.name  # none, or the separable's 1x1
    wide = keras.layers.DepthwiseConv2D(5, padding="same")  # beyond the slices: JAX's own, as before
    wide.build(x.shape)
    assert _grouped_convolutions(wide, x) == [4]


def test_use_slices_replaces_a_backends_convolution_once_and_leaves_other_calls_to_it():
    class Module:
        calls = []

        @staticmethod
        def depthwise_conv(inputs, kernel, strides=1, padding="valid", data_format=None, dilation_rate=1):
            Module.calls.append((tuple(kernel.shape), strides, dilation_rate))
            return "own"

    assert depthwise.use_slices(Module) and depthwise.use_slices(Module)
    assert Module.depthwise_conv.xla_depthwise_conv.__name__ == "depthwise_conv"
    assert not hasattr(Module.depthwise_conv.xla_depthwise_conv, "xla_depthwise_conv")  # not wrapped twice
    x = np.ones((1, 6, 6, 2), "float32")
    assert Module.depthwise_conv(x, np.ones((3, 3, 2, 1), "float32"), 1, "same").shape == (1, 6, 6, 2)
    assert Module.calls == []
    for kernel, strides, dilation in (((5, 5, 2, 1), 1, 1), ((3, 3, 2, 2), 1, 1), ((3, 3, 2, 1), (1, 2), 1),
                                      ((3, 3, 2, 1), 1, 2)):
        assert Module.depthwise_conv(x, np.ones(kernel, "float32"), strides, "same", None, dilation) == "own"
    assert len(Module.calls) == 4
