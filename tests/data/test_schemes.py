"""Markups of your own end to end on real samples: prepare (COCO JSON, dlib XML, a subset of ibug68), train briefly,
evaluate with the scheme's normalisation (NME, CED, flip test), overlay photos with the scheme's point count."""

import json
from pathlib import Path

import numpy as np
import pytest

from facelandmarks import landmarks
from facelandmarks.data import npz
from facelandmarks.data.prepare import PrepareOptions, prepare
from facelandmarks.data.records import ReaderOptions
from facelandmarks.landmarks import get_scheme
from facelandmarks.scheme_files import load_scheme, resolve_scheme

pytestmark = pytest.mark.data

ROOT = Path(__file__).resolve().parents[2]
MMPOSE = Path("samples") / "mmpose" / "tests" / "data"
FACE5_FROM_IBUG68 = [36, 45, 30, 48, 54]  # outer eye corners, nose tip, mouth corners


def train_briefly(train, test, run_dir, epochs=1, batch=8):
    from facelandmarks.training.config import TrainConfig
    from facelandmarks.training.fit import fit

    config = TrainConfig(model="scratch", data=str(train), val=str(test), run_dir=str(run_dir), epochs=epochs, batch=batch,
                         lr=2e-3, preview_every=0, workers=1, seed=1)
    fit(config, verbose=0)
    return Path(run_dir)


def forget(name):
    """Drop a registered scheme, as a fresh process would not know it."""
    landmarks._REGISTERED.pop(name, None)


@pytest.mark.parametrize("dataset, scheme_spec, k", [
    ("wflw", "wflw98", 98),
    ("cofw", str(ROOT / "configs" / "schemes" / "cofw29.json"), 29),
    ("aflw", str(ROOT / "configs" / "schemes" / "aflw19.json"), 19),  # NME by the face box
    ("lapa", str(ROOT / "configs" / "schemes" / "lapa106.json"), 106),
    ("300w", "ibug68", 68),
])
def test_coco_samples_prepare_train_evaluate_and_overlay(data_dir, tmp_path, dataset, scheme_spec, k):
    from facelandmarks.evaluation.evaluate import evaluate_runs
    from facelandmarks.inference.photos import run_on_images
    from facelandmarks.inference.predictor import Predictor

    source = data_dir / MMPOSE / dataset / f"test_{dataset}.json"
    scheme = resolve_scheme(scheme_spec)
    options = PrepareOptions(size=48, out=str(tmp_path / dataset), workers=1, progress=False,
                             reader=ReaderOptions(scheme=scheme, use_bbox=True))
    report = prepare([("coco", str(source))], options)
    assert report["scheme"] == scheme.name and report["counts"]["given"] == report["counts"]["written"] > 0
    train, test = tmp_path / f"{dataset}_train.npz", tmp_path / f"{dataset}_test.npz"
    if not npz.load_npz(test)["landmarks"].size:  # the hash split put both images on one side: test on train
        test = train
    arrays = npz.load_npz(train)
    assert arrays["landmarks"].shape[1:] == (k, 2) and arrays["mirrored"].any()
    assert ("scheme_json" in arrays) == (dataset in ("cofw", "aflw", "lapa"))  # built-in schemes need no definition

    run_dir = train_briefly(train, test, tmp_path / "run", batch=2)
    config = json.loads((run_dir / "config.json").read_text())
    assert config["num_points"] == k and config["scheme"] == scheme.name
    if dataset == "cofw":
        assert config["scheme_definition"]["normalize"] == [8, 9]
        forget("cofw29")
        assert Predictor.load(run_dir, runtime="keras").scheme.num_points == 29  # registered from config.json

    rows = evaluate_runs([run_dir], test, tmp_path / "eval", timing=False, gallery_faces=1, flip_test=True)
    assert len(rows) == 2 and all(np.isfinite(row["nme"]) and row["nme"] > 0 for row in rows)
    assert (tmp_path / "eval" / "ced.png").stat().st_size > 0
    photo = data_dir / MMPOSE / dataset / json.loads(source.read_text())["images"][0]["file_name"]
    run_on_images(run_dir, photo, tmp_path / "photos", runtime="keras")
    record = json.loads(next((tmp_path / "photos").glob("*.json")).read_text())
    assert record["faces"] and all(len(face["points"]) == k for face in record["faces"])
    assert (tmp_path / "photos" / f"{photo.name}_landmarks.png").stat().st_size > 0


def test_dlib_xml_sample_prepares_as_ibug68_and_trains(data_dir, tmp_path):
    from facelandmarks.evaluation.evaluate import evaluate_runs

    xml = data_dir / "samples" / "dlib" / "examples" / "faces" / "training_with_face_landmarks.xml"
    prepare([("dlibxml", str(xml))], PrepareOptions(size=48, out=str(tmp_path / "dlib"), workers=1, progress=False))
    train, test = tmp_path / "dlib_train.npz", tmp_path / "dlib_test.npz"
    assert npz.load_npz(train)["landmarks"].shape[1:] == (68, 2)
    run_dir = train_briefly(train, test, tmp_path / "run", batch=4)
    rows = evaluate_runs([run_dir], test, tmp_path / "eval", timing=False, gallery_faces=1)
    assert np.isfinite(rows[0]["nme"])


def test_a_five_point_scheme_of_our_own_from_ibug68_mirrors_the_right_points(tiny_ibug, tmp_path):
    from facelandmarks.evaluation.evaluate import evaluate_runs

    face5 = load_scheme(ROOT / "configs" / "schemes" / "face5.json")
    # eye corner <-> eye corner, nose tip fixed, mouth corner <-> mouth corner
    assert face5.mirror == (1, 0, 2, 4, 3) and face5.norm_points == (0, 1)
    base = get_scheme("ibug68")
    for part in ("train", "test"):
        arrays = npz.select_points(npz.load_npz(tiny_ibug[part]), face5, FACE5_FROM_IBUG68)
        npz.save_npz(tmp_path / f"face5_{part}.npz", arrays)
    train = npz.load_npz(tmp_path / "face5_train.npz")
    full = npz.load_npz(tiny_ibug["train"])
    np.testing.assert_array_equal(train["landmarks"], full["landmarks"][:, FACE5_FROM_IBUG68])
    # every mirrored face holds the original's points swapped exactly as face5 says, at x' = 1 - x
    mirrored = np.flatnonzero(train["mirrored"])
    original = {name: i for i, name in enumerate(train["name"]) if not train["mirrored"][i]}
    assert len(mirrored) > 10
    for i in mirrored:
        j = original[train["name"][i]]
        expected, _ = landmarks.mirror_landmarks(train["landmarks"][j], train["visible"][j], face5)
        np.testing.assert_allclose(train["landmarks"][i], expected, atol=1e-5)
        np.testing.assert_allclose(train["landmarks"][i][2, 0], 1 - train["landmarks"][j][2, 0], atol=1e-5)  # the nose
    assert [FACE5_FROM_IBUG68[m] for m in face5.mirror] == [base.mirror[i] for i in FACE5_FROM_IBUG68]

    forget("face5")  # the npz files carry the definition
    run_dir = train_briefly(tmp_path / "face5_train.npz", tmp_path / "face5_test.npz", tmp_path / "run")
    rows = evaluate_runs([run_dir], tmp_path / "face5_test.npz", tmp_path / "eval", timing=False, gallery_faces=1,
                         flip_test=True)
    assert len(rows) == 2 and all(0 < row["nme"] < 100 for row in rows)
    assert set(json.loads((run_dir / "config.json").read_text())["scheme_definition"]["points"]) == set(face5.point_names)

    # a coarse-to-fine pipeline refines the scheme's own regions, by their names
    from facelandmarks.cli import train as train_cli
    from facelandmarks.inference.predictor import Predictor

    forget("face5")
    assert train_cli.main(["cascade", "--stage1", str(run_dir), "--data", str(tmp_path / "face5_train.npz"),
                           "--epochs", "1", "--batch", "8", "--workers", "1", "--preview-every", "0",
                           "--run-dir", str(tmp_path / "cascade"), "--copies", "1", "--patch-size", "24",
                           "--regions", "eyes,mouth"]) == 0
    forget("face5")
    piped = Predictor.load(tmp_path / "cascade", runtime="keras")
    assert piped.scheme.name == "face5" and sorted(piped.refiners) == ["eyes", "mouth"]
    crops = npz.load_npz(tmp_path / "face5_test.npz")["images"]
    coarse, refined = piped.stage1.predict_crops(crops), piped.predict_crops(crops)
    np.testing.assert_allclose(refined[:, 2], coarse[:, 2])  # the nose is in no refined region
    assert np.abs(refined[:, [0, 1, 3, 4]] - coarse[:, [0, 1, 3, 4]]).max() > 0


def test_a_subset_whose_pairs_disagree_with_the_data_names_the_point(tiny_ibug):
    face5 = load_scheme(ROOT / "configs" / "schemes" / "face5.json")
    with pytest.raises(ValueError, match=r"--points: point nose_tip \(ibug68 31\) mirrors to ibug68 35"):
        npz.select_points(npz.load_npz(tiny_ibug["test"]), face5, [36, 45, 31, 48, 54])
