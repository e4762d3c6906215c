"""MUCT: 76 points, one CSV for every image, split by subject (seed 000)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from facelandmarks.data.records import (
    AnnotationError,
    FaceRecord,
    Listing,
    Skip,
    _parse_float,
    _points_from_values,
    csv_rows,
)
from facelandmarks.landmarks import get_scheme

# The primary seed tests on MUCT's first 82 of its 276 subjects; subjects 247
# and 248 are identical twins and must not be split apart.
MUCT_SEED_TEST_SUBJECTS = 82


MUCT_SUBJECTS = 276


MUCT_TWINS = ("247", "248")


MUCT_IMAGE_WIDTH = 480


def read_muct(source: str | os.PathLike) -> Listing:
    """MUCT: ``muct-landmarks/muct76-opencv.csv`` and the images in ``jpg/``.

    Rows named ``ir…`` (the official mirrored shapes) are not used: mirrors are
    made from the images.  A point at (0, 0) is unavailable.
    """
    source = Path(source)
    candidates = [source / "muct-landmarks" / "muct76-opencv.csv", source / "muct76-opencv.csv"]
    csv_path = next((p for p in candidates if p.is_file()), None)
    if csv_path is None:
        raise AnnotationError(f"{source}: no MUCT landmark file (looked for {', '.join(map(str, candidates))})")
    image_dir = source / "jpg"
    listing = Listing("muct", str(source), "muct76", split_rule="muct")
    scheme = get_scheme("muct76")
    mirror_rows = 0
    header = None
    for line, row in csv_rows(csv_path):
        if header is None:
            header = row
            if header[:4] != ["name", "tag", "x00", "y00"] or len(header) != 2 + 2 * scheme.num_points:
                raise AnnotationError(f"{csv_path}: header is not 'name,tag,x00,y00,...,x75,y75'")
            continue
        if not row:
            continue
        if len(row) != len(header):
            raise AnnotationError(f"{csv_path}:{line}: {len(row)} fields, expected {len(header)}")
        name = row[0]
        if name.startswith("ir"):
            mirror_rows += 1
            continue
        if not re.fullmatch(r"i\d{3}\w+-\w+", name):
            raise AnnotationError(f"{csv_path}:{line}: image name {name!r} is not like 'i000qa-fn'")
        try:
            values = [_parse_float(v) for v in row[2:]]
        except ValueError:
            raise AnnotationError(f"{csv_path}:{line}: non-numeric coordinate") from None
        points, labelled = _points_from_values(values, scheme.num_points)
        labelled &= (points != 0).any(axis=1)  # (0, 0) marks an unavailable point
        relative = f"jpg/{name}.jpg"
        image = image_dir / f"{name}.jpg"
        if not image.is_file():
            listing.skips.append(Skip("muct", relative, f"image missing for landmark row {name}"))
            continue
        listing.records.append(
            FaceRecord("muct", relative, str(image), points, labelled, f"muct/{name[1:4]}")
        )
    if header is None:
        raise AnnotationError(f"{csv_path}: empty file, expected the header 'name,tag,x00,y00,...,x75,y75'")
    listing.notes.append(
        f"{mirror_rows} official mirror rows (ir…) not used: mirrors are made from the images"
    )
    return listing
