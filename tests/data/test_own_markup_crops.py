"""A sparse markup of your own (eye corners, nose tip, mouth corners) gets the crops the full face gets.

Its points span about half of what iBUG 68's do (no jaw, no brows); boxes drawn around them as if they were
iBUG 68's rejected dlib's detections of the right face as too large, and boxed the faces from the points
alone 1.6 times too tight, with a warning that the points were probably in another order."""

import csv
import json

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


def test_the_measured_box_travels_from_prepare_to_the_run_the_export_and_the_recrop(data_dir, tmp_path):
    from facelandmarks.data import faces
    from facelandmarks.inference import export
    from facelandmarks.inference.predictor import Predictor
    from facelandmarks.scheme_files import landmark_box_of
    from facelandmarks.training.config import TrainConfig
    from facelandmarks.training.fit import fit
    from facelandmarks.training.runs import recrop_boxes

    with open(tmp_path / "five.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", *(f"c{i}" for i in range(10))])
        for pts in sorted((data_dir / "300w" / "afw").glob("*.pts"))[:40]:
            writer.writerow([f"afw/{pts.stem}.jpg", *read_pts(pts)[FROM_IBUG68].ravel()])
    try:
        five = landmarks.register_scheme(Scheme.from_dict(FACE5))
        options = PrepareOptions(size=32, out=str(tmp_path / "five"), workers=1, progress=False,
                                 reader=ReaderOptions(scheme=five, images=str(data_dir / "300w")))
        report = prepare([("csv", str(tmp_path / "five.csv"))], options)
        box = npz.landmark_box(npz.load_npz(tmp_path / "five_train.npz"))
        assert box is not None and 1.6 < box[0] < 2.6, box  # five points span about half of what 68 do
        assert npz.landmark_box(npz.load_npz(tmp_path / "five_test.npz")) == box
        assert any("measured dlib's box" in note for note in report["notes"])
        sharded = PrepareOptions(size=32, out=str(tmp_path / "shards"), workers=1, progress=False, shard_size=16,
                                 reader=ReaderOptions(scheme=five, images=str(data_dir / "300w")))
        manifest = prepare([("csv", str(tmp_path / "five.csv"))], sharded)["outputs"]["train"]["path"]
        assert npz.landmark_box(npz.ShardSet(manifest)) == pytest.approx(box, abs=1e-4)

        landmarks._REGISTERED.pop("cropfive", None)  # a fresh process: the files carry all of it
        run = tmp_path / "run"
        fit(TrainConfig(model="scratch", data=str(tmp_path / "five_train.npz"), val=str(tmp_path / "five_test.npz"),
                        run_dir=str(run), epochs=1, batch=8, preview_every=0, workers=1, seed=1), verbose=0)
        stored = json.loads((run / "config.json").read_text())["scheme_definition"]
        assert landmark_box_of(stored) == pytest.approx(box, abs=1e-4)
        landmarks._REGISTERED.pop("cropfive", None)
        assert Predictor.load(run, runtime="keras").landmark_box == pytest.approx(box, abs=1e-4)
        export.export_run(run, formats=("onnx",))
        landmarks._REGISTERED.pop("cropfive", None)
        exported = Predictor.load(run / "export", runtime="onnx")
        assert exported.runtime == "onnx" and exported.landmark_box == pytest.approx(box, abs=1e-4)
    finally:
        landmarks._REGISTERED.pop("cropfive", None)
    # recropped around their true points, the faces dlib found get the crop they were cut in: dlib's box's crop
    test = npz.load_npz(tmp_path / "five_test.npz")
    found = np.concatenate([test["detection"], npz.load_npz(tmp_path / "five_train.npz")["detection"]]) == "dlib"
    points = np.concatenate([test["landmarks"], npz.load_npz(tmp_path / "five_train.npz")["landmarks"]])[found]
    assert len(points) >= 20
    for relation, near in ((exported.landmark_box, 1.0), (None, 0.5)):  # None: iBUG 68's, what recrop cut before
        boxes = recrop_boxes(points, 32, relation)
        assert np.median(boxes[:, 2] - boxes[:, 0]) == pytest.approx(near, abs=0.12), relation
    off = {relation: np.median(np.abs(recrop_boxes(points, 32, relation) - [0, 0, 1, 1])) for relation in (exported.landmark_box, None)}
    assert off[exported.landmark_box] < 0.1 and off[None] > 0.2, off  # dlib's box moves about the points a little
    boxes = recrop_boxes(points, 32, exported.landmark_box)
    assert faces.crop_box_from_landmarks(points[0] * 32 - 0.5, None, exported.landmark_box) == pytest.approx(boxes[0] * 32)
