"""``datagen.py info``: a human summary of a dataset or bottleneck npz, a shard manifest or a prepared set."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np

from facelandmarks.data import fileset, npz


def _share(fraction: float, digits: int) -> str:
    """``fraction`` as a percentage with ``digits`` decimals, or more where those would round a share short of
    all (or above none) to 100 % (0 %): a point hidden on 0.5 % of the faces reads 99.5 %, not 100 %."""
    text = f"{fraction:.{digits}%}"
    while 0 < fraction < 1 and float(text[:-1]) in (0, 100) and digits < 4:
        digits += 1
        text = f"{fraction:.{digits}%}"
    return text


def describe(path: str | os.PathLike) -> str:
    """A human summary of a dataset (or bottleneck) file, a ``.shards.json`` or a set's ``.manifest.json``.

    Raises:
        DatasetError: naming the file, when it cannot be read or its set is mixed.
    """
    if str(path).endswith(fileset.MANIFEST_SUFFIX):
        return _describe_set(Path(path))
    if npz.is_manifest(path):
        return _describe_shards(Path(path))
    arrays = npz.load_npz(path)
    scheme = npz.scheme_of(arrays)
    n = len(arrays["landmarks"])
    lines = [f"{path}: {n} faces, scheme {scheme.name} ({scheme.num_points} points)"]
    if "images" in arrays:
        _, s, _, c = arrays["images"].shape
        lines.append(f"  images: {s} x {s} px, {c} channel(s){_storage(path)}")
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
            f"  visible: {_share(visible.mean(), 1)} of points; {int((~visible).any(axis=1).sum())} faces with hidden "
            "points; least visible points: " + ", ".join(f"{i} ({_share(per_point[i], 0)})" for i in worst)
        )
    for key in ("detection",):
        if key in arrays and n:
            lines.append("  detection: " + ", ".join(f"{k} {v}" for k, v in Counter(arrays[key].tolist()).most_common()))
    for key in ("mirrored", "vflipped"):
        if key in arrays:
            lines.append(f"  {key}: {int(arrays[key].sum())}")
    if "set_id" in arrays:
        lines.append(f"  set: {arrays['set_id']}")
    return "\n".join(lines)


def _storage(path) -> str:
    """', stored as JPEG of quality Q' for a packed file (``packed.py``), else ''."""
    with np.load(path, allow_pickle=False) as data:  # reads only the members asked for
        if "images_jpeg_quality" not in data.files:
            return ""
        quality, stored = int(data["images_jpeg_quality"]), int(data["images_jpeg_offsets"].size - 1)
        rows = int(data["images_copy_of"].size)
    copies = f", the other {rows - stored} rows their flipped copies" if rows > stored else ""  # once said with none
    return f", stored as JPEG of quality {quality} ({stored} encoded{copies})"


def _describe_set(manifest: Path) -> str:
    """Every file of a prepared set, each checked against the manifest (sizes and SHA-256)."""
    body = npz.check_set(manifest, hashes=True)
    total = sum(int(entry["bytes"]) for entry in body["files"].values())
    lines = [f"{manifest}: set {body['set_id']} ({body.get('created', '?')}), {len(body['files'])} files, "
             f"{total / 1e6:.1f} MB, all present and matching"]
    lines += [f"  {name}: {int(entry['bytes']) / 1e6:.1f} MB" for name, entry in body["files"].items()]
    return "\n".join(lines)


def _describe_shards(manifest: Path) -> str:
    shards = npz.ShardSet(manifest)
    shape = " x ".join(str(v) for v in shards.image_shape)
    return (f"{manifest}: {shards.faces} faces in {len(shards)} shards, scheme {shards.scheme.name} "
            f"({shards.scheme.num_points} points), images {shape}; set {shards.set_id or '?'}")
