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
import os
import sys
from pathlib import Path

import numpy as np

from facelandmarks.data import faces
from facelandmarks.data.cropping import nearest_detection, worker_context
from facelandmarks.data.readers.coco import read_coco
from facelandmarks.data.readers.ibug300w import read_300w
from facelandmarks.data.readers.muct import read_muct
from facelandmarks.data.readers.youtube68 import read_youtube68
from facelandmarks.data.records import ImageReadError, ReaderOptions, read_image
from facelandmarks.landmarks import WFLW98
from facelandmarks.scheme_files import kaggle15_from_ibug68

ROOT = Path(__file__).resolve().parents[1]

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
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("FACE_DATA_DIR", ROOT.parent / "shared" / "data")),
                        help="folder holding 300w/, muct/ and samples/ (default $FACE_DATA_DIR or ../shared/data)")
    parser.add_argument("--limit", type=int, default=0, help="300-W faces, evenly spaced (0: all; default 0)")
    parser.add_argument("--no-youtube68", dest="youtube68", action="store_false",
                        help="leave out YouTube68's frames (iBUG 68's relation was measured on 300-W + YouTube68)")
    parser.add_argument("--workers", type=int, default=0, help="processes (default one per CPU)")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.limit < 0:
        parser.error(f"--limit must be >= 0, got {args.limit}")
    ibug = read_300w(args.data / "300w").records
    if args.limit and args.limit < len(ibug):
        ibug = [ibug[i] for i in np.linspace(0, len(ibug) - 1, args.limit).round().astype(int)]
    youtube = read_youtube68(args.data / "youtube68").records if args.youtube68 else []
    muct = [r for r in read_muct(args.data / "muct").records if Path(r.image_path).is_file()]
    wflw = read_coco(args.data / "samples" / "mmpose" / "tests" / "data" / "wflw" / "test_wflw.json",
                     ReaderOptions(scheme=WFLW98)).records
    groups = {"300-W": ibug, "YouTube68": youtube, "MUCT": muct, "WFLW samples": wflw}
    records = [r for group in groups.values() for r in group]
    from tqdm import tqdm

    with worker_context().Pool(args.workers or os.cpu_count()) as pool:
        found = iter(tqdm(pool.imap(_detections, [r.image_path for r in records], chunksize=8), total=len(records),
                          desc="detect", unit="face"))
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
    for markup in ("ibug68", "kaggle15"):
        both = measured.get((markup, "300-W"), []) + measured.get((markup, "YouTube68"), [])
        if youtube and both:
            measured[(markup, "300-W + YouTube68")] = both
    print("\nfaces read: " + ", ".join(f"{source} {len(group)}" for source, group in groups.items() if group)
          + " (dlib HOG, no upsampling)\n")
    print("| markup | photos | faces measured | scale | dx | dy | 10th..90th pct (scale / dx / dy) | "
          "crop IoU with dlib's: iBUG 68's relation / own median |")
    print("|---|---|---|---|---|---|---|---|")
    for (markup, source), rows in sorted(measured.items(), key=lambda item: ("ibug68", "kaggle15", "muct76", "wflw98").index(item[0][0])):
        print(_row(markup, source, rows))
    print(f"\niBUG 68's relation in faces.py: scale {faces.LANDMARK_BOX_SCALE}, dx 0, dy {faces.LANDMARK_BOX_SHIFT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
