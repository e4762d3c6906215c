"""Bottleneck files: features of a frozen backbone for head-only training, and ``info`` on any npz."""

from __future__ import annotations

import os
from collections import Counter

import numpy as np

from facelandmarks.data import npz

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
    arrays = npz.load_npz(data)
    if "images" not in arrays:
        raise npz.DatasetError(f"{data}: has no images (already a bottleneck file?)")
    try:
        from facelandmarks.models import backbones
    except ModuleNotFoundError as err:
        if err.name != "backbones":
            raise
        raise ValueError("bottleneck needs backbones.py beside datagen.py") from None

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


def describe(path: str | os.PathLike) -> str:
    """A human summary of a dataset (or bottleneck) file."""
    arrays = npz.load_npz(path)
    scheme = npz.scheme_of(arrays)
    n = len(arrays["landmarks"])
    lines = [f"{path}: {n} faces, scheme {scheme.name} ({scheme.num_points} points)"]
    if "images" in arrays:
        _, s, _, c = arrays["images"].shape
        lines.append(f"  images: {s} x {s} px, {c} channel(s)")
    if "features" in arrays:
        lines.append(f"  features: {arrays['features'].shape[1]} per face from {arrays.get('backbone', '?')}")
    if "source" in arrays and n:
        lines.append("  sources: " + ", ".join(f"{k} {v}" for k, v in Counter(arrays["source"].tolist()).most_common()))
    subjects = Counter(arrays["subject"].tolist())
    if subjects:
        per = np.array(sorted(subjects.values()))
        lines.append(
            f"  subjects: {len(subjects)}; faces per subject min {per.min()}, median {np.median(per):g}, "
            f"max {per.max()}; most: " + ", ".join(f"{k} ({v})" for k, v in subjects.most_common(3))
        )
    visible = arrays["visible"]
    if n:
        per_point = visible.mean(axis=0)
        worst = np.argsort(per_point)[:3]
        lines.append(
            f"  visible: {visible.mean():.1%} of points; {int((~visible).any(axis=1).sum())} faces with hidden "
            "points; least visible points: " + ", ".join(f"{i} ({per_point[i]:.0%})" for i in worst)
        )
    for key in ("detection",):
        if key in arrays and n:
            lines.append("  detection: " + ", ".join(f"{k} {v}" for k, v in Counter(arrays[key].tolist()).most_common()))
    for key in ("mirrored", "vflipped"):
        if key in arrays:
            lines.append(f"  {key}: {int(arrays[key].sum())}")
    return "\n".join(lines)
