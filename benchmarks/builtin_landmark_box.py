"""Where dlib's box lies around each built-in markup's points: the relations ``scheme_files.BUILTIN_LANDMARK_BOXES`` cites.

A crop cut around predicted points (``--recrop``, the video tracker, a face dlib misses in ``prepare``) is the box
dlib would have drawn around them: ``faces.detection_like_box`` with the markup's relation ``(scale, dx, dy)`` (the
box's side in units of the points' span, its centre's offset from theirs in the same units).  iBUG 68's is
``faces.LANDMARK_BOX_SCALE`` / ``LANDMARK_BOX_SHIFT``; a markup that spans less of the face (kaggle15: no jaw) needs
its own.  Measured as ``cropping.calibrate_landmark_box`` measures a markup of your own: dlib's HOG detector on the
photo, the detection whose crop holds the points and whose centre is nearest theirs, ``faces.box_relation``.

* ibug68 and kaggle15 on the 300-W photos (AFW + HELEN train) and YouTube68's frames: kaggle15's points are derived
  from each face's iBUG 68 points (``kaggle15_from_ibug68``: eye centres the means of the six eye points, the rest iBUG 68 points), and
  measured against the detection chosen for the 68, so the two columns are the same faces and boxes;
* muct76 on the MUCT photos (``muct/jpg`` with ``muct76-opencv.csv``; unavailable points left out);
* wflw98 on the few WFLW samples (``samples/mmpose/tests/data/wflw``).

Also printed: the IoU of the crop cut around each face's points with iBUG 68's relation, and with the markup's
median, against the crop cut around dlib's box (1 = the same crop).

    python benchmarks/builtin_landmark_box.py
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from facelandmarks.cli.common import OneLineParser, complain
from facelandmarks.data import faces
from facelandmarks.data.cropping import nearest_detection
from facelandmarks.data.readers.coco import read_coco
from facelandmarks.data.readers.ibug300w import read_300w
from facelandmarks.data.readers.muct import read_muct
from facelandmarks.data.readers.youtube68 import read_youtube68
from facelandmarks.data.records import ImageReadError, ReaderOptions, read_image
from facelandmarks.landmarks import WFLW98
from facelandmarks.scheme_files import kaggle15_from_ibug68

try:
    import _common  # python benchmarks/builtin_landmark_box.py: this folder leads sys.path
except ModuleNotFoundError:  # run or imported from the repository root
    from benchmarks import _common

_DETECTOR = {}


def _detections(path: str):
    detector = _DETECTOR.setdefault("dlib", faces.FaceDetector())
    try:
        image, _ = read_image(path)
    except ImageReadError:
        return None
    return np.asarray(detector.detect(image)[0], np.float64).reshape(-1, 4)


def _row(name: str, data: str, measured: list) -> str:
    if not measured:
        return f"| {name} | {data} | 0 | - | - | - | - | - |"
    relations = np.array([r for r, _ in measured])
    lo, mid, hi = np.percentile(relations, [10, 50, 90], axis=0)
    spread = " / ".join(f"{a:.2f}..{b:.2f}" for a, b in zip(lo, hi))
    fixed = np.median([faces.box_iou(faces.crop_box_from_landmarks(p, s), faces.crop_box_from_detection(d)) for _, (p, s, d) in measured])
    own = np.median([faces.box_iou(faces.crop_box_from_landmarks(p, s, tuple(mid)), faces.crop_box_from_detection(d))
                     for _, (p, s, d) in measured])
    return (f"| {name} | {data} | {len(measured)} | {mid[0]:.3f} | {mid[1]:+.3f} | {mid[2]:+.3f} | {spread} | "
            f"{fixed:.3f} / {own:.3f} |")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    _common.add_face_data_options(parser, "300w/, muct/ and samples/ (and youtube68/)", 0, "300-W faces, evenly spaced")
    parser.add_argument("--no-youtube68", dest="youtube68", action="store_false",
                        help="leave out YouTube68's frames (iBUG 68's relation was measured on 300-W + YouTube68)")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = _common.parse_face_data_args(parser, argv)
    ibug = _common.evenly_spaced(_common.read_records(parser, read_300w, args.data / "300w"), args.limit)
    youtube = _common.read_records(parser, read_youtube68, args.data / "youtube68") if args.youtube68 else []
    muct = [r for r in _common.read_records(parser, read_muct, args.data / "muct") if Path(r.image_path).is_file()]
    wflw = _common.read_records(parser, read_coco, args.data / "samples" / "mmpose" / "tests" / "data" / "wflw" / "test_wflw.json",
                                ReaderOptions(scheme=WFLW98))
    groups = {"300-W": ibug, "YouTube68": youtube, "MUCT": muct, "WFLW samples": wflw}
    records = [r for group in groups.values() for r in group]
    found = iter(_common.detect_in_pool(_detections, [r.image_path for r in records], args.workers, chunksize=8))
    measured = {}
    for source, group in groups.items():
        markup = {"MUCT": "muct76", "WFLW samples": "wflw98"}.get(source, "ibug68")
        for record in group:
            detections = next(found)
            det = None if detections is None else nearest_detection(detections, record.points, record.labelled)
            if det is None:
                continue
            seen = record.labelled
            measured.setdefault((markup, source), []).append((faces.box_relation(det, record.points, seen), (record.points, seen, det)))
            if markup == "ibug68":  # the same detection around the kaggle15 points derived from these 68
                points = kaggle15_from_ibug68(record.points)
                measured.setdefault(("kaggle15", source), []).append((faces.box_relation(det, points), (points, None, det)))
    read = ", ".join(f"{source} {len(group)}" for source, group in groups.items() if group)
    if not measured:  # printed the table's header with no row, exit status 0
        complain(f"builtin_landmark_box.py: {args.data}: dlib found none of the {len(records)} faces read ({read}); "
                 "nothing to measure")
        return 2
    for markup in ("ibug68", "kaggle15"):
        both = measured.get((markup, "300-W"), []) + measured.get((markup, "YouTube68"), [])
        if youtube and both:
            measured[(markup, "300-W + YouTube68")] = both
    print(f"\nfaces read: {read} (dlib HOG, no upsampling)\n")
    print("| markup | photos | faces measured | scale | dx | dy | 10th..90th pct (scale / dx / dy) | "
          "crop IoU with dlib's: iBUG 68's relation / own median |")
    print("|---|---|---|---|---|---|---|---|")
    for (markup, source), rows in sorted(measured.items(), key=lambda item: ("ibug68", "kaggle15", "muct76", "wflw98").index(item[0][0])):
        print(_row(markup, source, rows))
    print(f"\niBUG 68's relation in faces.py: scale {faces.LANDMARK_BOX_SCALE}, dx 0, dy {faces.LANDMARK_BOX_SHIFT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
