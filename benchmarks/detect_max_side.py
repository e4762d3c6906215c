"""How many annotated faces dlib's detector finds, and how long it takes, when it searches a photo shrunk to a
longest side (``Predictor.load(detect_max_side=...)``, ``evaluate.py --detect-max-side``) instead of the photo itself.

Each annotated face of 300-W AFW, 300-W HELEN (train set) and MUCT (``--sets``; the faces of ``--limit`` photos
per set, evenly spaced) is looked for as ``Predictor`` looks (``FaceDetector.detect_all``: two scales on photos
up to 2.5 Mpx, detections under the default min score dropped) in its photo as stored (at most 640 px here) and
in the photo enlarged to ``--side`` px (4032: a 12 Mpx phone photo's longer side), searched at full resolution
and at each ``--max-sides`` value. A face counts as found when a detection matches its landmarks as ``prepare``
matches them (``faces.match_detection``). Prints one markdown table per set: faces found, faces found at full
resolution but not at this side, the smallest face found (its landmark box's larger side over the photo's longer
side) and the median milliseconds per photo. One process.

    python benchmarks/detect_max_side.py --limit 100
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from facelandmarks.cli.common import OneLineParser
from facelandmarks.data.detect_size import MIN_DETECT_SIDE

try:
    import _common  # python benchmarks/detect_max_side.py: this folder leads sys.path
except ModuleNotFoundError:  # run or imported from the repository root
    from benchmarks import _common

SETS = {"afw": ("300w/afw", "read_300w"), "helen": ("300w/helen/trainset", "read_300w"), "muct": ("muct", "read_muct")}


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    _common.add_face_data_options(parser, "300w/ and muct/", 100, "photos per set, evenly spaced")
    parser.add_argument("--sets", default="afw,helen,muct", help=f"comma-separated, of {', '.join(SETS)} (default all)")
    parser.add_argument("--side", type=int, default=4032,
                        help="enlarge each photo to this longer side in px, as a phone photo (default 4032: 12 Mpx)")
    parser.add_argument("--max-sides", type=_common.comma_numbers(int, MIN_DETECT_SIDE, "sides in px"), default=[1024, 1600, 2048, 2560],
                        help="the longest sides to search at, comma-separated (default 1024,1600,2048,2560)")
    return parser


def timed(detector, image, max_side):
    from facelandmarks.data.detect_size import detect_in_copy

    start = time.perf_counter()
    boxes, _ = detect_in_copy(detector, image, max_side)
    return boxes, 1000.0 * (time.perf_counter() - start)


def measure(records, settings: dict, side: int, progress: str) -> dict:
    """``{setting: (found (N,) bool, ms per photo)}`` and 'size': each face's larger landmark side / photo side."""
    import cv2

    from facelandmarks.data import faces
    from facelandmarks.data.records import ImageReadError, read_image

    detector = faces.FaceDetector()  # as Predictor's
    out = {name: ([], []) for name in settings}
    sizes = []
    for i, record in enumerate(records):
        try:
            image, _ = read_image(record.image_path)
        except ImageReadError as err:
            print(f"{record.image_path}: {err}; skipped", file=sys.stderr)
            continue
        factor = side / max(image.shape[:2])
        big = cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_CUBIC)
        visible = record.labelled
        bounds = faces.landmark_bounds(record.points, visible)
        sizes.append(max(bounds[2] - bounds[0], bounds[3] - bounds[1]) / max(image.shape[:2]))
        for name, (max_side, enlarged) in settings.items():
            photo, scale = (big, big.shape[1] / image.shape[1]) if enlarged else (image, 1.0)
            boxes, ms = timed(detector, photo, max_side)
            points = (record.points + 0.5) * scale - 0.5
            out[name][0].append(faces.match_detection(boxes, points, visible) is not None)
            out[name][1].append(ms)
        if (i + 1) % 10 == 0 or i + 1 == len(records):
            print(f"{progress}: {i + 1} of {len(records)} photos", file=sys.stderr, flush=True)
    return {name: (np.array(found, bool), np.array(ms)) for name, (found, ms) in out.items()} | {"size": np.array(sizes)}


def main(argv=None) -> int:
    parser = build_parser()
    args = _common.parse_face_data_args(parser, argv)
    chosen = [s.strip() for s in args.sets.split(",") if s.strip()]
    if not chosen or any(s not in SETS for s in chosen):
        parser.error(f"--sets: {args.sets!r}: give comma-separated names of {', '.join(SETS)}")
    if args.side < MIN_DETECT_SIDE:
        parser.error(f"--side must be >= {MIN_DETECT_SIDE}, got {args.side}")
    from facelandmarks.data.readers import ibug300w, muct
    from facelandmarks.machine import cpu_description

    readers = {"read_300w": ibug300w.read_300w, "read_muct": muct.read_muct}
    listed = {}
    for name in chosen:
        folder, reader = SETS[name]
        if not (args.data / folder).is_dir():
            parser.error(f"{args.data / folder}: no such folder (--data: the face data, with {folder}/)")
        listed[name] = _common.evenly_spaced(_common.read_records(parser, readers[reader], args.data / folder), args.limit)
    settings = {"as stored": (None, False), f"{args.side} px, full": (None, True)}
    settings |= {f"{args.side} px, max side {m}": (m, True) for m in args.max_sides}
    print(f"machine: {cpu_description()}; detect_all per photo, one process")
    for name, records in listed.items():
        result = measure(records, settings, args.side, name)
        full = result[f"{args.side} px, full"][0]
        print(f"\n{name}: {len(full)} annotated faces (one per photo), their larger landmark side {np.min(result['size']):.1%}"
              f"-{np.max(result['size']):.1%} of the photo's longer side (median {np.median(result['size']):.1%})\n")
        print("| searched | faces found | found at full, missed here | smallest found | median ms / photo |")
        print("|---|--:|--:|--:|--:|")
        for setting in settings:
            found, ms = result[setting]
            smallest = f"{result['size'][found].min():.1%}" if found.any() else "-"
            print(f"| {setting} | {found.sum()} | {(full & ~found).sum()} | {smallest} | {np.median(ms):.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
