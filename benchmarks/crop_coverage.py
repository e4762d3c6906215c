"""Where dlib's box sits on a face, and how much of the face the crop holds.

Measures, on faces of real 300-W + YouTube68 data that dlib's HOG detector
finds (``faces.FaceDetector.find_face``, the detection ``datagen.py prepare``
uses), the numbers ``faces.py`` cites:

* dlib's box relative to the landmarks' bounding box: median side ratio
  (``LANDMARK_BOX_SCALE``) and vertical centre shift in units of the landmark
  box's larger side (``LANDMARK_BOX_SHIFT``, negative = dlib's centre is higher);
* the fraction of landmarks, and of whole faces, inside the crop box
  ``crop_box_from_detection`` makes at several scales (``CROP_SCALE``) and at
  ``CROP_SHIFT``;
* the same coverage for the fallback box built from the landmarks.

Faces are a deterministic, evenly spaced sample (``--limit``).  Only faces
whose detection ``find_face`` accepts are counted (it asks for 90 % of the
landmarks inside the crop), so the coverage is that of the detections the
preparation uses.  The readers come from ``datagen.py``.

    python benchmarks/crop_coverage.py --limit 800
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from facelandmarks.cli.common import OneLineParser, complain
from facelandmarks.data import faces
from facelandmarks.data.readers.ibug300w import read_300w
from facelandmarks.data.readers.youtube68 import read_youtube68
from facelandmarks.data.records import FaceRecord, ImageReadError, read_image

try:
    import _common  # python benchmarks/crop_coverage.py: this folder leads sys.path
except ModuleNotFoundError:  # run or imported from the repository root
    from benchmarks import _common

SCALES = (1.3, 1.4, 1.5, 1.6, 1.8)
_DETECTOR = {}


def _measure(record: FaceRecord):
    """dlib's box for one face, or None when dlib finds none matching its landmarks."""
    detector = _DETECTOR.setdefault("dlib", faces.FaceDetector())
    try:
        image, _ = read_image(record.image_path)
    except ImageReadError:
        return None
    found = detector.find_face(image, record.points, record.labelled)
    return None if found is None else np.asarray(found, np.float64)


def inside_fraction(box, points) -> np.ndarray:
    """Per point: inside ``box`` (pixel centres at p + 0.5)."""
    c = points + 0.5
    return (c[:, 0] >= box[0]) & (c[:, 0] <= box[2]) & (c[:, 1] >= box[1]) & (c[:, 1] <= box[3])


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    _common.add_face_data_options(parser, "300w/ and youtube68/", 800, "faces to sample, evenly spaced")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = _common.parse_face_data_args(parser, argv)
    records = _common.evenly_spaced(_common.read_records(parser, read_300w, args.data / "300w")
                                    + _common.read_records(parser, read_youtube68, args.data / "youtube68"), args.limit)
    boxes = _common.detect_in_pool(_measure, records, args.workers, chunksize=4)

    scale, shift_x, shift_y, covered = [], [], [], {s: [] for s in SCALES}
    fallback_points, fallback_faces = [], []
    for record, det in zip(records, boxes):
        points = record.points[record.labelled]
        fallback = inside_fraction(faces.crop_box_from_landmarks(points), points)
        fallback_points.append(fallback.mean())
        fallback_faces.append(fallback.all())
        if det is None:
            continue
        lm = faces.landmark_bounds(points)
        side = max(lm[2] - lm[0], lm[3] - lm[1])
        scale.append(max(det[2] - det[0], det[3] - det[1]) / side)
        shift_x.append(((det[0] + det[2]) - (lm[0] + lm[2])) / 2 / side)
        shift_y.append(((det[1] + det[3]) - (lm[1] + lm[3])) / 2 / side)
        for s in SCALES:
            covered[s].append(inside_fraction(faces.crop_box_from_detection(det, scale=s), points))
    n = len(scale)
    if not n:  # was a line without the script's name or the folder, exit status 1
        complain(f"crop_coverage.py: {args.data}: dlib found none of the {len(records)} faces sampled from 300w/ and "
                 "youtube68/; nothing to measure")
        return 2
    print(f"\n{len(records)} faces sampled from 300-W + YouTube68; dlib found {n} ({n / len(records):.1%})\n")
    print("| dlib box / landmark box | median | 10th pct | 90th pct |")
    print("|---|---|---|---|")
    for label, values in (("side ratio (LANDMARK_BOX_SCALE)", scale), ("centre shift x / side", shift_x),
                          ("centre shift y / side (LANDMARK_BOX_SHIFT)", shift_y)):
        lo, mid, hi = np.percentile(values, [10, 50, 90])
        print(f"| {label} | {mid:.3f} | {lo:.3f} | {hi:.3f} |")
    print(f"\ncrop_box_from_detection at CROP_SHIFT {faces.CROP_SHIFT} (faces.py uses CROP_SCALE {faces.CROP_SCALE})\n")
    print("| crop scale | landmarks inside | faces wholly inside |")
    print("|---|---|---|")
    for s in SCALES:
        per_face = covered[s]
        points_in = np.concatenate(per_face).mean()
        faces_in = np.mean([f.all() for f in per_face])
        print(f"| {s}{' (used)' if s == faces.CROP_SCALE else ''} | {points_in:.2%} | {faces_in:.1%} |")
    print(f"| fallback box from landmarks (all {len(records)} faces) | {np.mean(fallback_points):.2%} | "
          f"{np.mean(fallback_faces):.1%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
