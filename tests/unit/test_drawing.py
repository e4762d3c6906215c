"""Photo overlays on synthetic images: markers in proportion to each face, enlarged face crops (real photos:
``tests/data/test_photos.py``)."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from facelandmarks import drawing
from facelandmarks.data import faces
from facelandmarks.drawing import PREDICTION, draw_points, face_side, line_width, marker_radius, save_png
from facelandmarks.inference.photos import CROP_SIZE, crop_name, write_results
from facelandmarks.inference.predictor import FaceLandmarks

GRAY = 128


def jaw(side: float, cx: float, cy: float) -> np.ndarray:
    """17 points evenly spaced on a jaw-like half ellipse (ear to chin to ear) whose bounding box is ``side``
    px wide: neighbours lie 0.14 x ``side`` apart (on annotated 300-W faces: 0.11 to 0.14)."""
    angles = np.linspace(0.0, np.pi, 2001)
    arc = np.stack([cx - side / 2 * np.cos(angles), cy + 0.9 * side * np.sin(angles)], 1)
    length = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(arc, axis=0), axis=1))])
    at = np.linspace(0.0, length[-1], 17)
    return np.stack([np.interp(at, length, arc[:, 0]), np.interp(at, length, arc[:, 1])], 1)


def red_blobs(image: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """Number, areas and centroids of the 8-connected red regions drawn on a gray image."""
    mask = (image[..., 0].astype(int) - image[..., 1] > 60).astype(np.uint8)
    count, _, stats, centroids = cv2.connectedComponentsWithStats(mask, connectivity=8)
    return count - 1, stats[1:, cv2.CC_STAT_AREA], centroids[1:]


def synthetic_face(points: np.ndarray) -> FaceLandmarks:
    detection = faces.detection_like_box(points)
    return FaceLandmarks(detection, 1.0, faces.crop_box_from_detection(detection), points)


def test_marker_radius_grows_with_the_face_and_is_at_least_one_pixel():
    small, large = jaw(100, 500, 300), jaw(400, 500, 300)
    assert face_side(large) == pytest.approx(400)
    assert marker_radius(large) == pytest.approx(4 * marker_radius(small))
    assert marker_radius(jaw(20, 50, 50)) == 1.0
    with_nan = np.concatenate([small, [[np.nan, np.nan]]])
    assert marker_radius(with_nan) == marker_radius(small)
    assert marker_radius(np.full((3, 2), np.nan)) == 1.0


def test_box_line_width_grows_with_the_box():
    assert line_width([10, 10, 60, 60]) == 1
    assert line_width([0, 0, 400, 380]) == 3


@pytest.mark.parametrize("side", [40, 90, 200, 400])
def test_jaw_dots_stay_distinct_at_any_face_size(side):
    image = np.full((1080, 1920, 3), GRAY, np.uint8)
    points = jaw(side, 960, 300)
    drawn = draw_points(image, points, PREDICTION, radius=marker_radius(points))
    count, areas, _ = red_blobs(drawn)
    assert count == 17, f"{side} px face: {count} separate dots"
    assert areas.min() >= 3  # visible, not a stray anti-aliased pixel


def test_the_image_sized_default_merges_the_dots_of_a_small_face():
    # What photos looked like before: 1/160 of the photo's smaller side on a 90 px face.
    image = np.full((1080, 1920, 3), GRAY, np.uint8)
    count, _, _ = red_blobs(draw_points(image, jaw(90, 960, 300), PREDICTION))
    assert count < 17


def test_overlay_json_and_crops_of_two_faces(tmp_path):
    image = np.full((900, 1400, 3), GRAY, np.uint8)
    small, large = synthetic_face(jaw(60, 200, 300)), synthetic_face(jaw(360, 900, 250))
    info = {"scheme": "jaw17", "min_score": 0.04, "dropped_below_min_score": 1}
    png = write_results(Path("/photos/x.jpg"), image, [small, large], tmp_path, info, crops=True)
    assert png == tmp_path / "x.jpg_landmarks.png"
    overlay = cv2.imread(str(png))[..., ::-1]
    count, areas, centroids = red_blobs(overlay)
    assert count == 34
    near_small = centroids[:, 0] < 500
    assert areas[~near_small].min() > 5 * areas[near_small].max()  # radius 5.4 px vs the 1 px floor
    record = json.loads((tmp_path / "x.jpg_landmarks.json").read_text())
    assert record["min_score"] == 0.04 and record["dropped_below_min_score"] == 1 and record["scheme"] == "jaw17"
    assert record["crops"] == ["x.jpg_face0.png", "x.jpg_face1.png"]
    assert [f["score"] for f in record["faces"]] == [1.0, 1.0]
    for name, face in zip(record["crops"], (small, large)):
        crop = cv2.imread(str(tmp_path / name))[..., ::-1]
        assert crop.shape == (CROP_SIZE, CROP_SIZE, 3)
        count, areas, centroids = red_blobs(crop)
        assert count == 17 and areas.min() > 20  # drawn at the crop's scale, not the photo's
        expected = faces.points_to_crop(face.points, face.crop_box) * CROP_SIZE - 0.5
        nearest = np.linalg.norm(centroids[:, None] - expected[None], axis=2).min(0)
        assert nearest.max() < 1.0


def test_crops_of_photos_with_one_stem_do_not_collide(tmp_path):
    image = np.full((400, 400, 3), GRAY, np.uint8)
    face = synthetic_face(jaw(100, 200, 150))
    for name in ("x.jpg", "x.png"):
        write_results(Path(name), image, [face], tmp_path, {}, crops=True)
    assert crop_name(Path("x.jpg"), 0) != crop_name(Path("x.png"), 0)
    assert sorted(p.name for p in tmp_path.glob("*_face*.png")) == ["x.jpg_face0.png", "x.png_face0.png"]


def test_no_crops_unless_asked(tmp_path):
    image = np.full((400, 400, 3), GRAY, np.uint8)
    write_results(Path("x.jpg"), image, [synthetic_face(jaw(100, 200, 150))], tmp_path, {})
    assert not list(tmp_path.glob("*_face*")) and "crops" not in json.loads((tmp_path / "x.jpg_landmarks.json").read_text())


def test_a_png_is_written_whole_or_the_earlier_one_stays(tmp_path, monkeypatch):
    """A preview, gallery or overlay written while the run is killed or stopped: never half a file."""
    path = tmp_path / "preview.png"
    old, new = np.zeros((8, 8, 3), np.uint8), np.full((8, 8, 3), 200, np.uint8)
    save_png(path, old)
    real = cv2.imwrite

    def stopped_halfway(name, image):
        real(name, image)
        Path(name).write_bytes(Path(name).read_bytes()[:20])  # cut short, as a kill would leave it
        raise KeyboardInterrupt

    monkeypatch.setattr(drawing.cv2, "imwrite", stopped_halfway)
    with pytest.raises(KeyboardInterrupt):
        save_png(path, new)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["preview.png"]
    assert np.array_equal(cv2.imread(str(path)), old)
    save_png(path, new)
    assert np.array_equal(cv2.imread(str(path)), new) and [p.name for p in tmp_path.iterdir()] == ["preview.png"]


def test_marking_a_photo_again_leaves_only_this_runs_results_of_it(tmp_path, monkeypatch, capsys):
    """A photo marked again (fewer faces found, no --crops, no face at all) used to keep the earlier run's crops and
    chips of faces this run did not find, and a photo without a face now kept its earlier overlay and JSON: a folder
    of chips for recognition held faces its JSON no longer lists.  Another photo's results and other files stay."""
    from facelandmarks.inference import photos
    from facelandmarks.inference.predictor import Predictor
    from tests.unit.test_video import SquareDetector, SquareModel, frame

    class Detector(SquareDetector):
        dropped, min_score = 0, property(lambda self: 0.04, lambda self, value: None)

    monkeypatch.setattr(photos.Predictor, "load", lambda *a, **k: Predictor(SquareModel(), "ibug68", detector=Detector()))
    photo, out = tmp_path / "squares.png", tmp_path / "out"
    out.mkdir()
    keep = {"other.jpg_landmarks.json", "other.jpg_aligned0.png", "notes.txt", "squares.png_notes.png"}
    for name in keep:
        (out / name).write_text("not this photo's")

    def mark(image, **options):
        cv2.imwrite(str(photo), image)
        photos.run_on_images(tmp_path, photo, out, **options)
        ours = sorted(p.name for p in out.iterdir() if p.name not in keep)
        assert keep <= {p.name for p in out.iterdir()}
        return ours, capsys.readouterr()

    ours, said = mark(frame((10, 10), (120, 60)), crops=True, align=(48, 0.0))
    assert ours == ["squares.png_aligned0.png", "squares.png_aligned1.png", "squares.png_face0.png",
                    "squares.png_face1.png", "squares.png_landmarks.json", "squares.png_landmarks.png"]
    assert "removed" not in said.out
    ours, said = mark(frame((10, 10)), align=(48, 0.0))
    assert ours == ["squares.png_aligned0.png", "squares.png_landmarks.json", "squares.png_landmarks.png"]
    assert said.out.endswith("; 3 files of an earlier run removed\n")
    assert len(json.loads((out / "squares.png_landmarks.json").read_text())["faces"]) == 1
    ours, said = mark(frame())
    assert ours == [] and said.err == f"{photo}: no face found; 3 files of an earlier run removed\n"


def test_several_photos_none_readable_is_one_line_without_a_made_up_path(tmp_path, monkeypatch):
    """It said 'the photos: none of its 2 images could be read', as if 'the photos' were a folder."""
    from facelandmarks.inference import photos
    from facelandmarks.inference.predictor import Predictor
    from tests.unit.test_video import SquareDetector, SquareModel

    monkeypatch.setattr(photos.Predictor, "load", lambda *a, **k: Predictor(SquareModel(), "ibug68", detector=SquareDetector()))
    (tmp_path / "folder").mkdir()
    for name in ("a.jpg", "folder/b.png"):
        (tmp_path / name).write_text("not a photo")
    with pytest.raises(ValueError, match="^none of the 2 images given could be read$"):
        photos.run_on_images(tmp_path, [tmp_path / "a.jpg", tmp_path / "folder"], tmp_path / "out")
    with pytest.raises(ValueError, match=f"^{tmp_path / 'folder'}: none of its 1 image could be read$"):
        photos.run_on_images(tmp_path, tmp_path / "folder", tmp_path / "out")
