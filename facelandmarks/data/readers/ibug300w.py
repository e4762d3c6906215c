"""300-W: iBUG .pts files beside their images; the dataset's own test folders give the split."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from facelandmarks.data.records import (
    IMAGE_SUFFIXES,
    AnnotationError,
    FaceRecord,
    Listing,
    Skip,
    _find_image,
    read_text,
)

# 300-W folders with a fixed role in the benchmark's split.
TEST_FOLDERS = {"testset", "test", "testing", "ibug", "01_indoor", "02_outdoor"}


TRAIN_FOLDERS = {"trainset", "train", "training", "afw"}


def read_pts(path: str | os.PathLike, num_points: int = 68) -> np.ndarray:
    """Landmarks of a 300-W ``.pts`` file: float64 (num_points, 2), as given.

    Accepts the ``version / n_points / { ... }`` layout and headerless files
    of one ``x y`` line per point.  NaN or infinite coordinates are returned
    as they are: ``prepare`` skips such a face with that reason (one bad face
    does not stop a run).

    Raises:
        AnnotationError: naming the file, when the layout or the point count is wrong.
    """
    path = Path(path)
    text = read_text(path)
    if "{" in text:
        head, _, rest = text.partition("{")
        body, closed, _ = rest.partition("}")
        if not closed:
            raise AnnotationError(f"{path}: '{{' without closing '}}'")
        declared = re.search(r"n_points\s*:\s*(\d+)", head)
        if declared and int(declared.group(1)) != num_points:
            raise AnnotationError(
                f"{path}: n_points is {declared.group(1)}, expected {num_points} (ibug68)"
            )
    else:
        body = text
    rows = [line.split() for line in body.splitlines() if line.strip()]
    if len(rows) != num_points:
        raise AnnotationError(f"{path}: {len(rows)} points, expected {num_points} (ibug68)")
    try:
        if any(len(row) != 2 for row in rows):
            raise ValueError("a line does not hold exactly two numbers")
        points = np.array(rows, np.float64)
    except ValueError as err:
        raise AnnotationError(f"{path}: not 'x y' number pairs ({err})") from None
    return points


def _folder_role(parts: tuple[str, ...]) -> str | None:
    lowered = {p.lower() for p in parts}
    if lowered & TEST_FOLDERS:
        return "test"
    if lowered & TRAIN_FOLDERS:
        return "train"
    return None


# iBUG's annotation files (300-W ``.pts``, and YouTube68, which follows them) count pixels from 1; the
# toolkit counts from 0 with pixel centres on integers (landmarks.py).  Left as given, every face would
# carry a 1 px offset that mirroring turns into -1 px, and a model trained on both learns neither:
# MobileNetV2 trained on unconverted data sat 1.08 crop px left of YouTube68's points and 0.64 of
# 300-W's -- 1 original pixel at those crops' scales (1.07 and 0.66 crop px per pixel).
IBUG_ORIGIN = 1.0


def read_300w(source: str | os.PathLike) -> Listing:
    """300-W: every ``.pts`` under ``source`` with its image beside it; points moved to 0-based.

    The subject is the image id: the file stem without its ``_<face>``
    suffix.  Folders with a role in the 300-W benchmark (``testset``, ``ibug``,
    ``01_Indoor`` ... for testing; ``trainset``, ``afw`` for training) give the
    split when at least one testing folder is present.
    """
    source = Path(source)
    if not source.is_dir():
        raise AnnotationError(f"{source}: not a folder")
    pts_files = sorted(source.rglob("*.pts"))
    if not pts_files:
        raise AnnotationError(f"{source}: no .pts files found")
    listing = Listing("300w", str(source), "ibug68")
    roles = []
    for pts in pts_files:
        relative = pts.relative_to(source)
        points = read_pts(pts, 68) - IBUG_ORIGIN
        image = _find_image(pts.parent, pts.stem)
        image_name = str(relative.with_suffix(image.suffix if image else ".jpg"))
        if image is None:
            listing.skips.append(Skip("300w", image_name, f"image missing for {relative} (no {pts.stem}.* beside it: "
                                                          f"looked for {', '.join(IMAGE_SUFFIXES[:9])})"))
            continue
        group = relative.parts[0] if len(relative.parts) > 1 else ""
        image_id = re.sub(r"_\d{1,2}$", "", pts.stem)
        subject = f"300w/{group}/{image_id}" if group else f"300w/{image_id}"
        roles.append(_folder_role((source.resolve().name, *relative.parts[:-1])))  # --source .../ibug is a test folder too
        listing.records.append(
            FaceRecord("300w", image_name, str(image), points, np.ones(68, bool), subject)
        )
    if "test" in roles:
        for record, role in zip(listing.records, roles):
            record.split = role
        listing.notes.append("300-W test folders present: folder roles give the split")
    else:
        listing.notes.append(f"no 300-W test folder ({', '.join(sorted(TEST_FOLDERS))}) in {source}: the faces are "
                             f"split by image like any dataset's")
    return listing
