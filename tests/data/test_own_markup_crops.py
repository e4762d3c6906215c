"""A sparse markup of your own (eye corners, nose tip, mouth corners) gets the crops the full face gets.

Its points span about half of what iBUG 68's do (no jaw, no brows); boxes drawn around them as if they were
iBUG 68's rejected dlib's detections of the right face as too large, and boxed the faces from the points
alone 1.6 times too tight, with a warning that the points were probably in another order."""

import csv

import numpy as np
import pytest

from facelandmarks import landmarks
from facelandmarks.data import npz
from facelandmarks.data.prepare import PrepareOptions, prepare
from facelandmarks.data.records import ReaderOptions
from facelandmarks.landmarks import Scheme

pytestmark = pytest.mark.data

FACE5 = {"name": "cropfive", "points": ["right_eye_outer", "left_eye_outer", "nose_tip", "right_mouth", "left_mouth"],
         "pairs": [["right_eye_outer", "left_eye_outer"], ["right_mouth", "left_mouth"]],
         "normalize": ["right_eye_outer", "left_eye_outer"]}
FROM_IBUG68 = [36, 45, 30, 48, 54]


def read_pts(path):
    values = path.read_text().split("{")[1].split("}")[0].split()
    return np.asarray(values, np.float64).reshape(68, 2)


def test_a_five_point_markup_is_boxed_as_its_faces_are_not_as_68_points_would_be(data_dir, tmp_path):
    faces = sorted((data_dir / "300w" / "afw").glob("*.pts"))[:40]
    for name, columns in (("full", range(68)), ("five", FROM_IBUG68)):
        with open(tmp_path / f"{name}.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["image", *(f"c{i}" for i in range(2 * len(columns)))])
            for pts in faces:
                writer.writerow([f"afw/{pts.stem}.jpg", *read_pts(pts)[list(columns)].ravel()])
    five = landmarks.register_scheme(Scheme.from_dict(FACE5))
    try:
        reports = {}
        for name, scheme in (("full", landmarks.get_scheme("ibug68")), ("five", five)):
            options = PrepareOptions(size=32, out=str(tmp_path / name), workers=1, progress=False, mirror=False,
                                     reader=ReaderOptions(scheme=scheme, images=str(data_dir / "300w")))
            reports[name] = prepare([("csv", str(tmp_path / f"{name}.csv"))], options)
        full, sparse = ({key: np.concatenate([npz.load_npz(tmp_path / f"{name}_{side}.npz")[key] for side in ("train", "test")])
                         for key in ("name", "box", "detection")} for name in ("full", "five"))
    finally:
        landmarks._REGISTERED.pop("cropfive", None)
    assert not reports["five"]["warnings"], reports["five"]["warnings"]
    assert reports["five"]["counts"]["fallback"] <= reports["full"]["counts"]["fallback"] + 2, \
        (reports["five"]["counts"], reports["full"]["counts"])
    assert list(full["name"]) == list(sparse["name"]) and len(full["name"]) == 40
    # every face, dlib's or boxed from its points, is cropped at about the scale of its 68-point crop
    side = {name: arrays["box"][:, 2] - arrays["box"][:, 0] for name, arrays in (("full", full), ("five", sparse))}
    ratio = side["five"] / side["full"]
    assert np.all(np.abs(ratio - 1) < 0.25), {n: round(float(r), 2) for n, r, d in zip(sparse["name"], ratio,
                                                                                     sparse["detection"]) if abs(r - 1) >= 0.25}
