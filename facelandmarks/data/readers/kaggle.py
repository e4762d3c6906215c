"""Kaggle facial keypoints: 15 points, 96x96 gray crops in one CSV, missing cells unlabelled."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from facelandmarks.data.records import (
    AnnotationError,
    FaceRecord,
    Listing,
    Skip,
    _parse_float,
    _points_from_values,
    csv_rows,
)
from facelandmarks.landmarks import KAGGLE15_NAMES


def read_kaggle(source: str | os.PathLike) -> Listing:
    """Kaggle facial keypoints: a CSV of 30 coordinate columns and an ``Image`` column.

    ``source`` is the CSV or a folder holding ``training.csv``.  Each image is
    already a face crop (96 x 96 gray), so the crop box is the whole image.
    Empty or NaN coordinates are unlabelled points.  Rows carry no identity,
    so the split is by row.
    """
    source = Path(source)
    csv_path = source / "training.csv" if source.is_dir() else source
    if not csv_path.is_file():
        raise AnnotationError(f"{source}: no training.csv")
    columns = [f"{name}_{axis}" for name in KAGGLE15_NAMES for axis in ("x", "y")]
    listing = Listing("kaggle", str(source), "kaggle15")
    header = None
    for line, row in csv_rows(csv_path):
        if header is None:
            header = row
            missing = [c for c in columns + ["Image"] if c not in header]
            if missing:
                raise AnnotationError(f"{csv_path}: missing column(s) {', '.join(missing)}")
            where = [header.index(c) for c in columns]
            image_at = header.index("Image")
            continue
        if not row:
            continue
        if len(row) != len(header):
            raise AnnotationError(f"{csv_path}:{line}: {len(row)} fields, expected {len(header)}")
        try:
            values = [_parse_float(row[i]) for i in where]
        except ValueError:
            raise AnnotationError(f"{csv_path}:{line}: non-numeric coordinate") from None
        points, labelled = _points_from_values(values, len(KAGGLE15_NAMES))
        name = f"{csv_path.name}:{line}"
        try:
            pixels = np.array(row[image_at].split(), np.int64)
        except (ValueError, OverflowError):
            listing.skips.append(Skip("kaggle", name, "corrupt image: non-numeric pixel values"))
            continue
        side = math.isqrt(len(pixels))
        if side < 8 or side * side != len(pixels) or pixels.min() < 0 or pixels.max() > 255:
            listing.skips.append(
                Skip("kaggle", name, f"corrupt image: {len(pixels)} pixel values, not a square 8-bit image")
            )
            continue
        listing.records.append(
            FaceRecord(
                "kaggle", name, None, points, labelled, f"kaggle/{csv_path.stem}:{line}",
                given_box=np.array([0, 0, side, side], np.float32), given_kind="crop",
                pixels=pixels.astype(np.uint8).reshape(side, side),
            )
        )
    if header is None:
        raise AnnotationError(f"{csv_path}: empty file, expected a header with the 30 coordinate columns and Image")
    return listing
