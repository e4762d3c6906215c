"""3x3 depthwise convolutions on JAX as nine shifted slices: XLA's CPU code for them is slow.

XLA compiles a depthwise convolution (a convolution with ``feature_group_count`` = channels) for a CPU
into a generic loop: one forward + backward pass of MobileNetV2's depthwise layers at 128 px, batch 64,
took 17-43x as long on JAX as on TensorFlow's kernels, and no XLA flag of jaxlib 0.10.2 changed that
(``benchmarks/layer_speed.py``; docs/results.md#jax-on-a-cpu-depthwise-convolutions-as-slices-6-dec).
Written as nine slices of the padded input, each times its tap's per-channel weights, summed, the same
layer compiles to fused elementwise code: MobileNetV2's whole training step on JAX ran 3.2-3.4x as fast,
with about 1 GB more peak memory at batch 64 (``benchmarks/step_settings.py``).  TensorFlow's own kernels
beat the slices there (2.6x on the step), so only JAX's ``depthwise_conv`` is replaced; the layers, their
weights and saved files stay as they are, and every depthwise convolution the slices do not cover (other
kernel sizes, dilation, depth multipliers, channels first) goes to JAX's as before, as does every one on a
GPU (not measured).  ``FACELANDMARKS_JAX_DEPTHWISE=xla`` keeps JAX's own for all.
"""

from __future__ import annotations

import os

from facelandmarks.runtime import JAX_DEPTHWISE_ENV as ENV  # 'slices' (the default) or 'xla': JAX's own


def depthwise_slices(x, kernel, stride: int, padding: str = "same"):
    """A depthwise 3x3 convolution of NHWC ``x`` by ``kernel`` (3, 3, C, 1), padding 'same' or 'valid' (as Keras
    pads: the extra row and column at the end), stride ``stride``: nine shifted (and, stride 2, subsampled) slices
    of the (padded) input times per-channel weights, summed, in keras.ops."""
    from keras import ops

    height, width = x.shape[1], x.shape[2]
    if padding.lower() == "same":
        pads = []
        for size in (height, width):
            total = max((-(-size // stride) - 1) * stride + 3 - size, 0)
            pads.append([total // 2, total - total // 2])
        x = ops.pad(x, [[0, 0], *pads, [0, 0]])
        height, width = height + sum(pads[0]), width + sum(pads[1])
    rows, cols = (height - 3) // stride + 1, (width - 3) // stride + 1
    y = None
    for i in range(3):
        for j in range(3):
            tap = x[:, i:i + (rows - 1) * stride + 1:stride, j:j + (cols - 1) * stride + 1:stride, :] * kernel[i, j, :, 0]
            y = tap if y is None else y + tap
    return y


def _covered(inputs, kernel, strides, padding, data_format, dilation_rate) -> int:
    """The stride when ``depthwise_slices`` computes this call, else 0."""
    import keras

    strides = (strides,) * 2 if isinstance(strides, int) else tuple(strides)
    dilation = (dilation_rate,) * 2 if isinstance(dilation_rate, int) else tuple(dilation_rate)
    data_format = data_format or keras.config.image_data_format()
    if (len(inputs.shape) != 4 or len(kernel.shape) != 4 or tuple(kernel.shape[:2]) != (3, 3) or kernel.shape[3] != 1
            or dilation != (1, 1) or len(set(strides)) != 1 or data_format != "channels_last"
            or str(padding).lower() not in ("same", "valid")):
        return 0
    return strides[0]


def _on_cpu() -> bool:
    """Whether JAX computes on a CPU (asked at each trace, not at import: that would start JAX's backends)."""
    import jax

    return jax.default_backend() == "cpu"


def use_slices(nn_module=None) -> bool:
    """Route ``nn_module``'s ``depthwise_conv`` (None: the JAX backend's, where Keras runs on JAX and ``ENV`` is not
    'xla', and then only while JAX computes on a CPU: a GPU's depthwise kernels were not measured against the
    slices) through ``depthwise_slices`` where it covers the call; True where it did (once per module)."""
    import keras

    cpu_only = nn_module is None
    if nn_module is None:
        if keras.config.backend() != "jax" or os.environ.get(ENV, "slices").strip().lower() == "xla":
            return False
        try:  # Keras's own module, not its API: a Keras that moved it trains as before, only slower
            from keras.src.backend.jax import nn as nn_module
        except ImportError:
            return False
    original = getattr(nn_module, "depthwise_conv", None)
    if original is None:
        return False
    if getattr(original, "xla_depthwise_conv", None) is not None:
        return True

    def depthwise_conv(inputs, kernel, strides=1, padding="valid", data_format=None, dilation_rate=1):
        stride = _covered(inputs, kernel, strides, padding, data_format, dilation_rate)
        if stride and (cpu_only is False or _on_cpu()):
            return depthwise_slices(inputs, kernel, stride, str(padding))
        return original(inputs, kernel, strides, padding, data_format, dilation_rate)

    depthwise_conv.xla_depthwise_conv = original  # the backend's own, for tests and benchmarks
    nn_module.depthwise_conv = depthwise_conv  # separable_conv calls it too, by this module-level name
    return True
