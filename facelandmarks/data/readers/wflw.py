"""WFLW: 98 points, the official annotation lists give the split."""

from __future__ import annotations

import os
from pathlib import Path

from facelandmarks.data.records import (
    AnnotationError,
    FaceRecord,
    Listing,
    Skip,
    _parse_float,
    _points_from_values,
    read_text,
)

WFLW_OFFICIAL = {"list_98pt_rect_attr_train.txt": "train", "list_98pt_rect_attr_test.txt": "test"}


def read_wflw(source: str | os.PathLike) -> Listing:
    """WFLW: annotation lines ``x0 y0 … x97 y97 [x_min y_min x_max y_max 6 attributes] image``.

    Uses the official ``list_98pt_rect_attr_{train,test}.txt`` when present
    (their split is kept), otherwise every annotation ``.txt`` under
    ``source`` (duplicate lines counted once).  Images are looked up under
    ``WFLW_images/``, ``images/``, ``source`` and the list's own folder.
    WFLW carries no identity: the subject is the image.
    """
    source = Path(source)
    texts = sorted(p for p in source.rglob("*.txt") if p.name not in ("README.txt", "PROVENANCE.txt"))
    official = [p for p in texts if p.name in WFLW_OFFICIAL]
    lists = official or texts
    if not lists:
        raise AnnotationError(f"{source}: no WFLW annotation .txt files")
    listing = Listing("wflw", str(source), "wflw98")
    seen = set()
    for list_path in lists:
        split = WFLW_OFFICIAL.get(list_path.name)
        for line, text in enumerate(read_text(list_path).splitlines(), start=1):
            fields = text.split()
            if not fields:
                continue
            if len(fields) not in (197, 207):
                raise AnnotationError(
                    f"{list_path}:{line}: {len(fields)} fields, expected 196 coordinates "
                    "(+ 4 box + 6 attributes) + image name"
                )
            key = (fields[-1], tuple(fields[:196]))
            if key in seen:
                continue
            seen.add(key)
            try:
                values = [_parse_float(v) for v in fields[:196]]
            except ValueError:
                raise AnnotationError(f"{list_path}:{line}: non-numeric coordinate") from None
            points, labelled = _points_from_values(values, 98)
            image_name = fields[-1]
            folders = (source / "WFLW_images", source / "images", source, list_path.parent)
            image = next((folder / image_name for folder in folders if (folder / image_name).is_file()), None)
            if image is None:  # say where it was looked for: WFLW ships its images apart from the lists
                listing.skips.append(Skip("wflw", image_name, f"image missing for {list_path.name}:{line} (not under "
                                          f"{', '.join(str(f) for f in dict.fromkeys(folders))})"))
                continue
            listing.records.append(
                FaceRecord("wflw", image_name, str(image), points, labelled, f"wflw/{image_name}", split=split)
            )
    if official:
        listing.notes.append("official WFLW train/test lists give the split")
    return listing
