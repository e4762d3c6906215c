"""Bottleneck files: features of a frozen backbone for every face of a dataset, for head-only training."""

from __future__ import annotations

import os

import numpy as np

from facelandmarks.data import npz
from facelandmarks.models import backbones

BACKBONES = ("inception", "resnet50", "mobilenetv2")


def bottleneck(data: str | os.PathLike, out: str | os.PathLike, backbone: str, weights: str = "imagenet", batch_size: int = 32) -> dict:
    """Write the features of a frozen backbone for every face of ``data``.

    The output keeps every key of the input except ``images`` and adds
    ``features`` float32 (N, F) and ``backbone``.
    """
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; known: {', '.join(BACKBONES)}")
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    npz.check_output_file(out, data)  # before the features, not after
    arrays = npz.load_npz(data)
    if "images" not in arrays:
        raise npz.DatasetError(f"{data}: has no images (already a bottleneck file?)")
    features = np.asarray(backbones.extract_features(arrays["images"], backbone, weights, batch_size=batch_size), np.float32)
    n = len(arrays["images"])
    if features.ndim != 2 or len(features) != n:
        raise ValueError(f"backbone {backbone} returned features of shape {features.shape} for {n} images")
    out_arrays = {k: v for k, v in arrays.items() if k != "images"}
    out_arrays["features"] = features
    out_arrays["backbone"] = np.array(backbone)
    npz.validate(out_arrays, out)
    npz.save_npz(out, out_arrays)
    print(f"{out}: {n} faces, {features.shape[1]} {backbone} features each ({weights} weights)")
    return out_arrays
