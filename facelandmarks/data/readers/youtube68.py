"""YouTube Faces with 68 iBUG points (CSV of keypoints per frame), split by person."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from facelandmarks.data.readers.ibug300w import IBUG_ORIGIN
from facelandmarks.data.records import (
    AnnotationError,
    FaceRecord,
    Listing,
    Skip,
    _parse_float,
    _points_from_values,
    csv_rows,
)


def _read_keypoint_csv(csv_path: Path, num_points: int) -> list[tuple[int, str, np.ndarray, np.ndarray]]:
    """Rows ``name, x0, y0, ...`` of a YouTube68-style CSV (first row a header)."""
    rows = []
    for line, row in csv_rows(csv_path):
        if line == 1 or not row:
            continue
        if len(row) != 1 + 2 * num_points:
            raise AnnotationError(f"{csv_path}:{line}: {len(row)} fields, expected {1 + 2 * num_points}")
        try:
            values = [_parse_float(v) for v in row[1:]]
        except ValueError:
            raise AnnotationError(f"{csv_path}:{line}: non-numeric coordinate") from None
        points, labelled = _points_from_values(values, num_points)
        rows.append((line, row[0], points, labelled))
    return rows


def read_youtube68(source: str | os.PathLike) -> Listing:
    """YouTube68: ``{training,test}_frames_keypoints.csv`` and the ``training/``, ``test/`` folders.

    Points are moved to 0-based (``IBUG_ORIGIN``).

    The subject is the file name without its trailing ``_NN``.
    """
    source = Path(source)
    listing = Listing("youtube68", str(source), "ibug68")
    found = False
    for split, folder, csv_name in (
        ("train", "training", "training_frames_keypoints.csv"),
        ("test", "test", "test_frames_keypoints.csv"),
    ):
        csv_path = source / csv_name
        if not csv_path.is_file():
            continue
        found = True
        named = set()
        for _, name, points, labelled in _read_keypoint_csv(csv_path, 68):
            points[labelled] -= IBUG_ORIGIN
            relative = f"{folder}/{name}"
            named.add(name)
            image = source / folder / name
            if not image.is_file():
                listing.skips.append(Skip("youtube68", relative, f"image missing for row of {csv_name}"))
                continue
            subject = "youtube68/" + re.sub(r"_\d+$", "", Path(name).stem)
            listing.records.append(
                FaceRecord("youtube68", relative, str(image), points, labelled, subject, split=split)
            )
        if (source / folder).is_dir() and os.access(source / folder, os.R_OK | os.X_OK):
            unlabelled = sum(1 for p in (source / folder).iterdir() if p.name not in named)
            if unlabelled:
                listing.notes.append(f"{unlabelled} images in {folder}/ have no landmark row (not used)")
    if not found:
        raise AnnotationError(
            f"{source}: no training_frames_keypoints.csv or test_frames_keypoints.csv"
        )
    return listing
