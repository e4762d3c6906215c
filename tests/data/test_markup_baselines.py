"""dlib and 68-point models scored on a markup of your own, through its scheme's "ibug68" (where each of its points
lies in iBUG 68): real 300-W photos, real dlib, the shipped model."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from facelandmarks import landmarks
from facelandmarks.cli import datagen
from facelandmarks.data import npz
from facelandmarks.scheme_files import load_scheme

pytestmark = pytest.mark.data

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "weights" / "mobilenetv2-pip-128"
FACE5 = [36, 45, 30, 48, 54]
DLIB = "dlib (ERT, 68 pts)"  # its row's name
FACES = ["1051618982_1", "111076519_1", "111076519_2", "1130084326_1", "1130084326_2", "1139324862_1"]


def forget(*names):
    """Drop registered schemes, as a fresh process would not know them."""
    for name in names:
        landmarks._REGISTERED.pop(name, None)


@pytest.fixture(scope="module")
def face5_set(data_dir, tmp_path_factory):
    """Six 300-W (AFW) faces prepared as ibug68 at 128 px (the shipped model's size), and as face5 by select-points."""
    root = tmp_path_factory.mktemp("face5_300w")
    source = root / "300w" / "afw"
    source.mkdir(parents=True)
    for stem in FACES:
        for suffix in (".jpg", ".pts"):
            shutil.copy(data_dir / "300w" / "afw" / f"{stem}{suffix}", source)
    assert datagen.main(["prepare", "300w", "--source", str(root / "300w"), "--size", "128", "--out", str(root / "w"),
                         "--workers", "1", "--quiet", "--test-fraction", "0"]) == 0
    every = npz.load_npz(root / "w_train.npz", decode_images=False)
    npz.save_npz(root / "ibug68.npz", npz.subset(every, np.flatnonzero(~every["mirrored"])))  # dlib runs on the photos
    forget("face5")
    assert datagen.main(["select-points", "--data", str(root / "ibug68.npz"), "--scheme",
                         str(ROOT / "configs" / "schemes" / "face5.json"), "--points", ",".join(map(str, FACE5)),
                         "--out", str(root / "face5.npz")]) == 0
    forget("face5")
    return root


@pytest.fixture(scope="module")
def by_hand(face5_set):
    """dlib's and the shipped model's 68 points on every face, as each predicts them alone."""
    from facelandmarks.inference.dlib_baseline import DlibPredictor
    from facelandmarks.inference.predictor import Predictor

    ibug = npz.load_npz(face5_set / "ibug68.npz")
    return {"dlib": DlibPredictor().predict_dataset(ibug, progress=False),
            "shipped": Predictor.load(SHIPPED, runtime="keras").predict_crops(ibug["images"]), "ibug68": ibug}


def nme_by_hand(pred68, gt5, visible5, mapped, absent=()):
    """Mean over faces of the mean error of the points ``mapped`` to iBUG 68 (``mapped``: face5 point -> iBUG 68
    index), by the distance of points 0 and 1 (face5's outer eye corners, kaggle15's eye centres), in %."""
    per_face = []
    for face in range(len(gt5)):
        norm = np.linalg.norm(gt5[face, 0].astype(np.float64) - gt5[face, 1])
        errors = [np.linalg.norm(pred68[face, i].astype(np.float64) - gt5[face, p]) for p, i in mapped.items()
                  if visible5[face, p] and p not in absent]
        per_face.append(np.mean(errors) / norm)
    return 100 * float(np.mean(per_face))


def test_select_points_writes_where_the_points_lie_in_ibug68(face5_set):
    definition = json.loads(str(np.load(face5_set / "face5.npz")["scheme_json"]))
    assert definition["ibug68"] == FACE5


def test_dlib_and_the_shipped_model_score_on_face5_points(face5_set, by_hand, tmp_path):
    from facelandmarks.evaluation.evaluate import evaluate_runs
    from tests.data.test_schemes import train_briefly

    forget("face5")
    run = train_briefly(face5_set / "face5.npz", face5_set / "face5.npz", tmp_path / "face5-run", batch=6)  # a run of yours
    forget("face5")
    rows = evaluate_runs([run, SHIPPED], face5_set / "face5.npz", tmp_path / "eval", baseline="dlib", timing=False,
                         gallery_faces=1)
    by_name = {row["model"]: row for row in rows}
    assert set(by_name) == {"face5-run", "mobilenetv2-pip-128", DLIB, f"{DLIB}, +1 px"}
    assert by_name["face5-run"]["nme"] > 0
    face5 = npz.load_npz(face5_set / "face5.npz")
    mapped = dict(enumerate(FACE5))
    for name, pred in ((DLIB, by_hand["dlib"]), ("mobilenetv2-pip-128", by_hand["shipped"])):
        expected = nme_by_hand(pred, face5["landmarks"], face5["visible"], mapped)
        assert abs(by_name[name]["nme"] - expected) < 1e-6, name
        assert 0 < by_name[name]["nme"] < 20
    markdown = (tmp_path / "eval" / "results.md").read_text()
    assert "Rows of iBUG 68 points (face5-run" not in markdown and "of 5 points" not in markdown
    assert f"Rows of iBUG 68 points (mobilenetv2-pip-128; {DLIB}; {DLIB}, +1 px) are scored on face5's points" in markdown


def as_kaggle15(arrays: dict) -> dict:
    """iBUG 68 faces with their points made Kaggle's 15 (``kaggle15_from_ibug68``), every one labelled."""
    from facelandmarks.scheme_files import kaggle15_from_ibug68

    return {**arrays, "landmarks": kaggle15_from_ibug68(arrays["landmarks"]).astype(np.float32),
            "visible": np.ones((len(arrays["landmarks"]), 15), bool), "scheme": np.array("kaggle15")}


def test_dlib_and_the_shipped_model_score_on_kaggle15_points(face5_set, by_hand, tmp_path):
    """The built-in kaggle15 says where Kaggle's 15 points lie in iBUG 68 (eye centres the means of the six eye
    points, the rest iBUG 68 points): dlib and the shipped model score on Kaggle data beside its runs. It said
    nothing, and `--baseline dlib` was refused. Here the 300-W faces' points made Kaggle's."""
    from facelandmarks.evaluation.evaluate import evaluate_runs
    from facelandmarks.scheme_files import kaggle15_from_ibug68

    kaggle = as_kaggle15(npz.load_npz(face5_set / "ibug68.npz", decode_images=False))
    npz.save_npz(tmp_path / "kaggle15.npz", kaggle)
    rows = evaluate_runs([SHIPPED], tmp_path / "kaggle15.npz", tmp_path / "eval", baseline="dlib", timing=False,
                         gallery_faces=1)
    by_name = {row["model"]: row for row in rows}
    assert set(by_name) == {"mobilenetv2-pip-128", DLIB, f"{DLIB}, +1 px"}
    for name, pred in ((DLIB, by_hand["dlib"]), ("mobilenetv2-pip-128", by_hand["shipped"])):
        expected = nme_by_hand(kaggle15_from_ibug68(pred), kaggle["landmarks"], kaggle["visible"], {p: p for p in range(15)})
        assert abs(by_name[name]["nme"] - expected) < 1e-6, name  # normalised by the eye centres, as kaggle15 is
        assert 0 < by_name[name]["nme"] < 20
    markdown = (tmp_path / "eval" / "results.md").read_text()
    assert f"Rows of iBUG 68 points (mobilenetv2-pip-128; {DLIB}; {DLIB}, +1 px) are scored on kaggle15's points" in markdown
    assert "left_eye_center 42+43+44+45+46+47" in markdown


def test_a_point_ibug68_lacks_is_left_out_and_said_so(face5_set, by_hand, tmp_path):
    """A markup whose nose tip is none of iBUG 68's: dlib's and the shipped model's rows score the other four."""
    from facelandmarks.evaluation.evaluate import evaluate_runs

    arrays = npz.load_npz(face5_set / "face5.npz", decode_images=False)
    definition = json.loads(str(arrays["scheme_json"]))
    definition.update(name="face5nose", ibug68=[36, 45, None, 48, 54])
    arrays.update(scheme=np.array("face5nose"), scheme_json=np.array(json.dumps(definition)))
    npz.save_npz(tmp_path / "face5nose.npz", arrays)
    forget("face5nose")
    rows = evaluate_runs([SHIPPED], tmp_path / "face5nose.npz", tmp_path / "eval", baseline="dlib", timing=False,
                         gallery_faces=1)
    by_name = {row["model"]: row for row in rows}
    assert set(by_name) == {f"{name} (4 of 5 points)" for name in ("mobilenetv2-pip-128", DLIB, f"{DLIB}, +1 px")}
    mapped = {0: 36, 1: 45, 3: 48, 4: 54}
    for name, pred in ((DLIB, by_hand["dlib"]), ("mobilenetv2-pip-128", by_hand["shipped"])):
        row = by_name[f"{name} (4 of 5 points)"]
        assert abs(row["nme"] - nme_by_hand(pred, arrays["landmarks"], arrays["visible"], mapped)) < 1e-6, name
        assert np.isnan(row["nme_nose"]) and row["nme_eyes"] > 0
    markdown = (tmp_path / "eval" / "results.md").read_text()
    assert "nose_tip: no iBUG 68 point, left out of the rows marked (4 of 5 points)" in markdown
    region_rows = markdown.split("## NME % per region")[1].split("##")[0]
    dlib_row = next(line for line in region_rows.splitlines() if line.startswith(f"| {DLIB} (4 of 5 points)"))
    assert dlib_row.split("|")[3].strip() == "–"  # eyes | nose: the nose's cell is empty, not 0
    forget("face5nose")


def test_data_whose_scheme_does_not_say_keeps_a_one_line_refusal(face5_set, tmp_path, capsys):
    from facelandmarks.cli import evaluate

    arrays = npz.load_npz(face5_set / "face5.npz", decode_images=False)
    definition = json.loads(str(arrays["scheme_json"]))
    definition.pop("ibug68")
    definition["name"] = "face5plain"
    arrays.update(scheme=np.array("face5plain"), scheme_json=np.array(json.dumps(definition)))
    npz.save_npz(tmp_path / "plain.npz", arrays)
    forget("face5plain")
    assert evaluate.main([str(SHIPPED), "--data", str(tmp_path / "plain.npz"), "--baseline", "dlib", "--no-timing",
                          "--out", str(tmp_path / "eval")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "plain.npz" in err and '"ibug68"' in err
    assert not (tmp_path / "eval").exists()
    forget("face5plain")


@pytest.mark.parametrize("mapping, problem", [
    ([36, 45, 30, 48], r"'ibug68' must list one entry per point \(5\)"),
    ([36, 45, 30, 48, 68], r"'ibug68' entry 4 \(left_mouth_corner\) is 68"),
    ([36, 45, [30, "x"], 48, 54], r"'ibug68' entry 2 \(nose_tip\)"),
])
def test_a_bad_mapping_is_one_line_naming_the_file(face5_set, tmp_path, capsys, mapping, problem):
    definition = json.loads((ROOT / "configs" / "schemes" / "face5.json").read_text())
    definition.update(name="face5bad", ibug68=mapping)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(definition))
    with pytest.raises(ValueError, match=rf"^{bad}: {problem}"):
        load_scheme(bad, register=False)
    assert datagen.main(["select-points", "--data", str(face5_set / "ibug68.npz"), "--scheme", str(bad),
                         "--points", "36,45,30,48,54", "--out", str(tmp_path / "x.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bad) in err and not (tmp_path / "x.npz").exists()


def test_select_points_refuses_points_the_scheme_places_elsewhere(face5_set, tmp_path, capsys):
    forget("face5")
    assert datagen.main(["select-points", "--data", str(face5_set / "ibug68.npz"), "--scheme",
                         str(ROOT / "configs" / "schemes" / "face5.json"), "--points", "39,42,30,48,54",
                         "--out", str(tmp_path / "x.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert "puts point right_eye_outer at iBUG 68 36, but the points picked put it at 39" in err
    forget("face5")


def test_mixed9_declares_its_means():
    mixed9 = load_scheme(ROOT / "configs" / "schemes" / "mixed9.json", register=False)
    assert mixed9.ibug68 == (tuple(range(36, 42)), tuple(range(42, 48)), (1, 31), (15, 35), (36,), (45,), (30,), (48,), (54,))
    # a mirrored face's points are the mirrored iBUG 68 points' means: the mapping agrees with both markups' pairs
    ibug = landmarks.get_scheme("ibug68")
    for i, group in enumerate(mixed9.ibug68):
        assert sorted(ibug.mirror[j] for j in group) == sorted(mixed9.ibug68[mixed9.mirror[i]])


def test_select_points_from_ibug68_writes_the_mapping_a_scheme_file_lacks(face5_set, tmp_path):
    """A scheme file of one's own without "ibug68", picked from iBUG 68 data: the npz says where its points lie, and
    dlib scores on it in the same process (the scheme registered from the file learns it)."""
    from facelandmarks.evaluation.evaluate import evaluate_runs

    definition = json.loads((ROOT / "configs" / "schemes" / "face5.json").read_text())
    definition.pop("ibug68")
    definition["name"] = "mine5"
    (tmp_path / "mine5.json").write_text(json.dumps(definition))
    forget("mine5")
    assert datagen.main(["select-points", "--data", str(face5_set / "ibug68.npz"), "--scheme", str(tmp_path / "mine5.json"),
                         "--points", "45,36,30,54,48", "--out", str(tmp_path / "mine5.npz")]) == 0  # mirrored order
    assert json.loads(str(np.load(tmp_path / "mine5.npz")["scheme_json"]))["ibug68"] == [45, 36, 30, 54, 48]
    assert landmarks.get_scheme("mine5").ibug68 == ((45,), (36,), (30,), (54,), (48,))
    rows = evaluate_runs([], tmp_path / "mine5.npz", tmp_path / "eval", baseline="dlib", timing=False, gallery_faces=1)
    assert rows[0]["model"] == DLIB and rows[0]["nme"] > 0
    forget("mine5")


def mixed9_from_68(p):
    """mixed9's points as docs/own-landmarks.md made its data from 300-W's .pts (written out, not read from the scheme)."""
    return np.stack([p[:, 36:42].mean(1), p[:, 42:48].mean(1), (p[:, 1] + p[:, 31]) / 2, (p[:, 15] + p[:, 35]) / 2,
                     p[:, 36], p[:, 45], p[:, 30], p[:, 48], p[:, 54]], 1)


def test_mixed9s_means_score_dlib_as_its_data_was_made(face5_set, by_hand, tmp_path):
    """mixed9.json's "ibug68" (eye centres, cheeks: means) against the recipe its data was made with, on real faces."""
    from facelandmarks.evaluation.evaluate import evaluate_runs
    from facelandmarks.scheme_files import scheme_json

    arrays = npz.load_npz(face5_set / "ibug68.npz", decode_images=False)
    mixed9 = load_scheme(ROOT / "configs" / "schemes" / "mixed9.json", register=False)
    gt = mixed9_from_68(arrays["landmarks"].astype(np.float64)).astype(np.float32)
    arrays.update(landmarks=gt, visible=np.ones(gt.shape[:2], bool), scheme=np.array("mixed9"),
                  scheme_json=np.array(scheme_json(mixed9)))
    npz.save_npz(tmp_path / "mixed9.npz", arrays)
    forget("mixed9")
    rows = evaluate_runs([], tmp_path / "mixed9.npz", tmp_path / "eval", baseline="dlib", timing=False, gallery_faces=1)
    pred = mixed9_from_68(by_hand["dlib"].astype(np.float64))
    norm = np.linalg.norm(gt[:, 4].astype(np.float64) - gt[:, 5], axis=-1)  # the outer eye corners
    expected = 100 * float((np.linalg.norm(pred - gt, axis=-1).mean(1) / norm).mean())
    assert rows[0]["model"] == DLIB and abs(rows[0]["nme"] - expected) < 1e-6
    forget("mixed9")
