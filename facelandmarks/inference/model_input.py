"""Face crops as a model takes them: their channels and size (``match_channels``, ``resize_crops``), and how many
go through one forward pass (``forward_batch``, from the model's largest layer output, ``activation_bytes``).

``Predictor.prepare`` and ``Predictor.batch_size`` use them; ``inference.quantize`` prepares its calibration
crops with the first two, so an int8 model is calibrated on what it will be fed.
"""

from __future__ import annotations

import math

import cv2
import numpy as np


def match_channels(images: np.ndarray, channels: int) -> np.ndarray:
    """RGB -> gray or gray -> RGB so ``images`` (N, S, S, C) has ``channels`` channels."""
    have = images.shape[-1]
    if have == channels:
        return images
    if have == 3 and channels == 1:
        weights = np.array([0.299, 0.587, 0.114], np.float32)
        return np.round(images.astype(np.float32) @ weights)[..., None].clip(0, 255).astype(np.uint8)
    if have == 1 and channels == 3:
        return np.repeat(images, 3, axis=-1)
    raise ValueError(f"cannot feed {have}-channel images to a {channels}-channel model")


def resize_crops(images: np.ndarray, size: int) -> np.ndarray:
    """``images`` (N, S, S, C) as ``size`` x ``size`` crops: averaged over areas when shrunk, linear when enlarged."""
    if images.shape[1] == size:
        return images
    interpolation = cv2.INTER_AREA if size < images.shape[1] else cv2.INTER_LINEAR
    channels = images.shape[-1]
    return np.stack([cv2.resize(im, (size, size), interpolation=interpolation).reshape(size, size, channels) for im in images])


MAX_BATCH = 64  # faces per forward pass at most
# The largest layer output a forward pass may hold: glibc gives each thread's arena heaps of at most 64 MB
# (HEAP_MAX_SIZE on 64-bit), and a layer's input and output are alive together, so anything above half of
# that is mapped afresh on every call and faulted in page by page, whatever ``runtime.tune_allocator`` sets.
PASS_BYTES = 32 * 1024 * 1024


def activation_bytes(model) -> int | None:
    """Bytes of the largest layer output for one face, nested models included; None when the model does
    not show its layers (an export run by ONNX Runtime or LiteRT)."""
    if not hasattr(model, "layers"):  # an export: no Keras, TensorFlow or JAX is loaded for it
        return None
    import keras

    largest, stack = 0, list(model.layers)
    while stack:
        layer = stack.pop()
        stack.extend(getattr(layer, "layers", []))
        try:
            outputs = keras.tree.flatten(layer.output)
        except (AttributeError, ValueError, RuntimeError):  # a layer of a subclassed model, never called symbolically
            continue
        for tensor in outputs:
            shape = tuple(tensor.shape)[1:]
            if shape and all(isinstance(d, int) for d in shape):
                largest = max(largest, math.prod(shape) * _itemsize(tensor.dtype))
    return largest or None


def _itemsize(dtype) -> int:
    import keras

    try:
        return np.dtype(keras.backend.standardize_dtype(dtype)).itemsize
    except TypeError:  # a dtype numpy does not know (bfloat16 without ml_dtypes): 16 bits
        return 2


def forward_batch(activation: int | None, flip_test: bool = False) -> int:
    """Faces per forward pass: the largest power of two, at most ``MAX_BATCH``, whose largest activation
    (``activation`` bytes per face) stays within ``PASS_BYTES``.

    Through Keras on a 2-core AMD EPYC without AVX-512, the shipped MobileNetV2 at 128 px (1.6 MB per
    face in its largest layer) spent 20.9 % of its CPU time in the kernel at batch 64 (825 page faults
    per face) and 4.5 % at batch 16 (11 per face), with the allocator tuned
    (``benchmarks/predict_batches.py``; docs/results.md#benchmarks).  The flip
    test doubles the rows of every pass, so it halves the faces.  Unknown activation sizes (exports,
    which manage their own memory) keep ``MAX_BATCH``.
    """
    rows = MAX_BATCH if not activation else max(1, min(MAX_BATCH, PASS_BYTES // activation))
    if flip_test:
        rows = max(1, rows // 2)
    return 1 << (rows.bit_length() - 1)
