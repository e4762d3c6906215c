"""A built-in markup whose points span the face differently from iBUG 68's (kaggle15: no jaw) carries where dlib's box
lies around them (``scheme_files.BUILTIN_LANDMARK_BOXES``): its runs, exports and npz files store no definition, so
every crop cut around its points (recrop, the video tracker, a pipeline, prepare's box for a face dlib misses) reads
it by the markup's name.  Cut as iBUG 68's, kaggle15's crops were a fifth too small and too high (median IoU 0.57 with
the crop of dlib's box on 300-W + YouTube68: benchmarks/builtin_landmark_box.py).  iBUG 68's stays None: its crops
are unchanged."""

import json

import cv2
import numpy as np
import pytest

from facelandmarks.data import faces, npz
from facelandmarks.inference.predictor import Predictor
from facelandmarks.landmarks import KAGGLE15_NAMES, Scheme
from facelandmarks.scheme_files import (
    BUILTIN_LANDMARK_BOXES,
    builtin_landmark_box,
    definition_to_store,
    landmark_box_of,
)

KAGGLE = (1.35, 0.0, 0.01)  # what the benchmark measured (scheme_files' comment): a typo there fails here
OWN = (2.04, 0.0, -0.2)


class FlatModel:
    """Crops (N, S, S, 3) -> (N, K, 2): every face's K points where ``shape`` puts them."""

    def __init__(self, shape, size=48):
        self.shape, self.input_shape = np.asarray(shape, np.float32), (None, size, size, 3)

    def predict_on_batch(self, batch):
        return np.repeat(self.shape[None], len(batch), axis=0)


def test_kaggle15_has_its_own_relation_and_the_outlines_keep_ibug68s():
    assert BUILTIN_LANDMARK_BOXES == {"kaggle15": KAGGLE}
    assert builtin_landmark_box("kaggle15") == KAGGLE
    for name in ("ibug68", "muct76", "wflw98", "kaggle15/eyes", "unitface5", None):
        assert builtin_landmark_box(name) is None, name
    # what a run, an export or an npz of a built-in reads: no stored definition, the markup's name
    assert landmark_box_of(None, scheme="kaggle15") == KAGGLE and landmark_box_of(None, scheme="ibug68") is None
    assert landmark_box_of("{}", "x", Scheme.from_dict({"name": "unitface5", "points": 5, "normalize": "box"})) is None
    assert landmark_box_of(None) is None  # no scheme named: iBUG 68's, as before
    # a stored measurement wins (a definition of your own markup; a built-in stores none)
    assert landmark_box_of({"name": "x", "landmark_box": list(OWN)}, scheme="kaggle15") == pytest.approx(OWN)
    assert definition_to_store("kaggle15", KAGGLE) is None


@pytest.mark.parametrize("scheme, expected", [("kaggle15", KAGGLE), ("ibug68", None), ("muct76", None)])
def test_runs_and_exports_of_built_ins_read_their_markups_relation(scheme, expected):
    from facelandmarks.landmarks import get_scheme

    model = FlatModel(np.full((get_scheme(scheme).num_points, 2), 0.5))
    for config in ({}, {"scheme_definition": None}):  # a run's config.json, an export.json: neither stores one
        assert Predictor(model, scheme, config=config).landmark_box == expected


def test_a_kaggle15_predictor_recrops_with_kaggle15s_box():
    # kaggle15 points spanning 0.4 of the crop: iBUG 68's relation cuts 1.02 x 1.5 of that, kaggle15's 1.35 x 1.5
    shape = 0.3 + 0.4 * np.random.default_rng(0).uniform(0, 1, (15, 2))
    shape[[0, 1]] = [[0.3, 0.3], [0.7, 0.3]]
    shape[[13, 14]] = [[0.5, 0.5], [0.5, 0.7]]
    predictor = Predictor(FlatModel(shape), "kaggle15", recrop=True)
    crop = np.zeros((1, 48, 48, 3), np.uint8)
    from facelandmarks.training.runs import recrop_boxes

    points = predictor.model.predict_on_batch(crop)
    boxes = recrop_boxes(points, 48, predictor.landmark_box)
    np.testing.assert_allclose(boxes[0], faces.crop_box_from_landmarks(points[0] * 48 - 0.5, None, KAGGLE) / 48, atol=1e-6)
    span = float(np.ptp(points[0] * 48, axis=0).max() + 1) / 48
    assert boxes[0, 2] - boxes[0, 0] == pytest.approx(KAGGLE[0] * faces.CROP_SCALE * span, rel=1e-4)


def test_npz_files_and_shard_sets_of_built_ins_read_their_markups_relation(tmp_path):
    arrays = {"scheme": np.array("kaggle15"), "landmarks": np.zeros((1, 15, 2), np.float32)}
    assert npz.landmark_box(arrays) == KAGGLE  # no scheme_json: a built-in's files never store one
    assert npz.landmark_box({**arrays, "scheme": np.array("ibug68")}) is None
    for scheme, expected in (("kaggle15", KAGGLE), ("ibug68", None)):
        manifest = npz.write_manifest(tmp_path / f"{scheme}_train.shards.json", [], scheme, (8, 8, 3))
        assert "scheme_definition" not in json.loads(manifest.read_text())
        assert npz.ShardSet(manifest).landmark_box == expected


def test_prepare_boxes_a_kaggle15_face_dlib_misses_with_kaggle15s_relation(tmp_path):
    """kaggle15 points on photos of no face (a CSV, ``--scheme kaggle15``): every crop is the fallback box, cut
    around the points with kaggle15's relation (it was iBUG 68's: 1.02 x their span, 0.10 of it up)."""
    from facelandmarks.cli.datagen import main as datagen

    rng = np.random.default_rng(0)
    shape = np.array([[62, 38], [34, 38], [56, 38], [70, 38], [40, 38], [26, 38], [55, 29], [74, 30], [41, 29],
                      [22, 30], [48, 56], [62, 75], [34, 75], [48, 72], [48, 80]], np.float64)
    rows = []
    for i in range(8):
        name = f"face{i}.png"
        cv2.imwrite(str(tmp_path / name), rng.integers(0, 256, (160, 160, 3)).astype(np.uint8))
        points = shape + rng.uniform(20, 50, 2) + rng.normal(0, 0.5, shape.shape)
        rows.append(name + "," + ",".join(f"{v:.2f}" for v in points.ravel()))
    header = "image," + ",".join(f"{n}_{axis}" for n in KAGGLE15_NAMES for axis in ("x", "y"))
    (tmp_path / "points.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    assert datagen(["prepare", "csv", "--source", str(tmp_path / "points.csv"), "--scheme", "kaggle15", "--size", "96",
                    "--workers", "1", "--out", str(tmp_path / "out" / "k"), "--quiet"]) == 0
    arrays = {k: np.concatenate([npz.load_npz(tmp_path / "out" / f"k_{side}.npz")[k] for side in ("train", "test")])
              for k in ("landmarks", "visible", "detection", "images")}
    assert set(arrays["detection"]) == {"landmarks"}
    assert npz.measured_landmark_box(arrays) == pytest.approx(KAGGLE, abs=0.01)
