"""A markup of your own keeps where dlib's box lies around its points (``landmark_box``) from its data to every crop
cut around predicted points: the run, the export, ``Predictor``'s recrop and the video tracker.

A sparse markup (eye corners, nose tip, mouth corners) spans about half of what iBUG 68's points do; boxes cut
around its predicted points as if they were iBUG 68's were half the size of the crops it was trained on (face5:
5.91 % NME plain, 9.91 % with --recrop; a still video's points swung between detections)."""

import json

import cv2
import numpy as np
import pytest

from facelandmarks import landmarks
from facelandmarks.data import faces, npz
from facelandmarks.inference.predictor import Predictor
from facelandmarks.inference.video import FaceTracker
from facelandmarks.landmarks import Scheme, register_scheme
from facelandmarks.scheme_files import definition_to_store, landmark_box_of, register_definition, scheme_json
from facelandmarks.training.runs import recrop_boxes

FIVE = {"name": "unitboxfive", "points": ["right_eye", "left_eye", "nose", "right_mouth", "left_mouth"],
        "pairs": [["right_eye", "left_eye"], ["right_mouth", "left_mouth"]], "normalize": ["right_eye", "left_eye"]}
# the five points within a face's square, which the face's 68 points span corner to corner: half its span
FIVE_SHAPE = np.array([[0.25, 0.25], [0.75, 0.25], [0.5, 0.5], [0.3, 0.75], [0.7, 0.75]])
# where iBUG 68's box around the square (1.02 x its side, 0.10 of it up) lies around those five: twice as far out
BOX = (2.04, 0.0, -0.2)


@pytest.fixture
def five():
    scheme = register_scheme(Scheme.from_dict(FIVE))
    yield scheme
    landmarks._REGISTERED.pop(FIVE["name"], None)


def test_a_stored_definition_carries_the_box_and_registers_the_same_markup(five, tmp_path):
    stored = definition_to_store(five, BOX)
    assert landmark_box_of(stored) == pytest.approx(BOX) and landmark_box_of(json.dumps(stored)) == pytest.approx(BOX)
    assert landmark_box_of(json.loads(scheme_json(five, BOX))) == pytest.approx(BOX)
    # another measurement of the same markup is no clash, and the scheme itself is the markup alone
    assert register_definition({**stored, "landmark_box": [1.9, 0.01, -0.3]}, "other.npz") is five
    # files written before it, and the built-in markups, keep iBUG 68's relation
    assert landmark_box_of(five.to_dict()) is None and landmark_box_of(None) is None
    assert definition_to_store(five) == five.to_dict() and definition_to_store("ibug68", BOX) is None
    with pytest.raises(ValueError, match=r"^run/config.json: landmark_box must be \[scale > 0"):
        register_definition({**stored, "landmark_box": [0, 0, 0]}, "run/config.json")
    with pytest.raises(ValueError, match="unknown key 'landmark_box'"):  # a measurement, not part of a scheme file
        Scheme.from_dict(stored)
    manifest = npz.write_manifest(tmp_path / "set_train.shards.json", [], five.name, (8, 8, 3), landmark_box=BOX)
    assert json.loads(manifest.read_text())["scheme_definition"]["landmark_box"] == pytest.approx(BOX)


def sparse_crops(count=12, size=48, seed=0):
    """(N, 5, 2) points of crops cut as iBUG 68's would be around faces whose other points span the square
    the five lie in, corner to corner; and the crops' size."""
    rng = np.random.default_rng(seed)
    uv = []
    for side in rng.uniform(80, 120, count):
        shape = np.vstack([FIVE_SHAPE + rng.normal(0, 0.01, (5, 2)), [[0, 0], [1, 1]]])
        points = shape * (side - 1) + rng.uniform(100, 200, 2)
        uv.append(faces.points_to_crop(points[:5], faces.crop_box_from_landmarks(points)))
    return np.array(uv, np.float32), size


def test_select_points_measures_where_the_crops_box_lies_around_the_points_it_keeps(five):
    uv, size = sparse_crops()
    n = len(uv)
    arrays = {"landmarks": uv, "visible": np.ones((n, 5), bool), "images": np.zeros((n, size, size, 3), np.uint8),
              "detection": np.array(["landmarks"] * n), "scheme": np.array(five.name), "scheme_json": np.array(scheme_json(five))}
    kept = npz.select_points(arrays, five, range(5))
    box = npz.landmark_box(kept)
    assert box == pytest.approx(BOX, rel=0.1, abs=0.03)  # in crop pixels: the points' box is a pixel wider
    # a box cut around each face's five points with it is the crop the face came in; iBUG 68's is half of it
    for face in uv:
        cut = faces.crop_box_from_landmarks(face * size - 0.5, None, box) / size
        assert np.abs(cut - [0, 0, 1, 1]).max() < 0.06
        assert faces.crop_box_from_landmarks(face * size - 0.5)[2] / size - faces.crop_box_from_landmarks(
            face * size - 0.5)[0] / size < 0.6
    assert npz.landmark_box({k: v for k, v in arrays.items() if k != "scheme_json"}) is None  # an older file
    packed = {k: v for k, v in arrays.items() if k != "images"} | {"images_shape": np.array([n, size, size, 3])}
    assert npz.measured_landmark_box(packed) == pytest.approx(box, abs=1e-4)  # JPEG-packed crops, as select-points reads them, undecoded


class StillModel:
    """Crops (N, S, S, 3) -> (N, 5, 2): the five points where a face of the crop's bright square has them."""

    def __init__(self, size=48):
        self.input_shape = (None, size, size, 3)

    def predict_on_batch(self, batch):
        out = []
        for crop in batch:
            ys, xs = np.nonzero(crop.mean(axis=-1) > 100)
            if len(xs) == 0:
                out.append(np.full((5, 2), np.nan))
                continue
            lo, hi = (np.array([xs.min(), ys.min()]) + 0.5) / len(crop), (np.array([xs.max(), ys.max()]) + 0.5) / len(crop)
            out.append(lo + FIVE_SHAPE * (hi - lo))
        return np.array(out, np.float32)


def square_crop(size=48, side=31):
    """A face's crop: its square (its 68 points' span) as large and where iBUG 68's crop around it holds it."""
    crop = np.zeros((size, size, 3), np.uint8)
    top = (size - side) // 2
    crop[top:top + side, top:top + side] = 200
    return crop


@pytest.mark.parametrize("stored", [BOX, None])
def test_recrop_cuts_around_the_points_with_the_runs_relation(five, stored):
    size, crop = 48, square_crop()
    config = {"scheme_definition": definition_to_store(five, stored)}
    predictor = Predictor(StillModel(size), five.name, config=config, recrop=True)
    assert predictor.landmark_box == (pytest.approx(stored) if stored else None)
    plain = Predictor(StillModel(size), five.name, config=config).predict_crops(crop[None])
    boxes = recrop_boxes(plain, size, stored)
    again = StillModel(size).predict_on_batch(faces.cut_patches(crop[None].astype(np.float32), boxes, size))
    expected = (plain + faces.from_patch(again, boxes)) / 2
    np.testing.assert_allclose(predictor.predict_crops(crop[None]), expected, atol=1e-5)
    side = float(boxes[0, 2] - boxes[0, 0])
    if stored:  # the face's crop again: the square's points where the first pass found them
        assert side == pytest.approx(1.0, abs=0.08)
        np.testing.assert_allclose(expected, plain, atol=0.02)
    else:  # an older run: iBUG 68's box, half the crop
        assert side < 0.6


class SquareDetector:
    """Finds the bright square; its box is the one dlib would draw around 68 points spanning it."""

    def detect_all(self, image):
        count, _, stats, _ = cv2.connectedComponentsWithStats((image.mean(axis=-1) > 100).astype(np.uint8))
        boxes = [faces.detection_like_box(np.array([[x, y], [x + w - 1, y + h - 1]])) for x, y, w, h, _ in stats[1:count]]
        return np.array(boxes, np.float32).reshape(-1, 4), np.ones(len(boxes), np.float32)


@pytest.mark.parametrize("stored", [BOX, None])
def test_the_tracker_follows_a_still_face_in_the_box_its_detection_gave(five, stored):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 60, (160, 200, 3)).astype(np.uint8)
    image[50:110, 70:130] = rng.integers(150, 256, (60, 60, 3))
    predictor = Predictor(StillModel(), five.name, detector=SquareDetector(),
                          config={"scheme_definition": definition_to_store(five, stored)})
    tracker = FaceTracker(predictor, redetect_every=10, smooth=False)
    first = tracker.update(image)
    later = [tracker.update(image) for _ in range(4)]
    if stored:  # tracked between detections, in the detection's box, the points where they were
        assert tracker.detections == 1 and tracker.tracked == 4
        side = float(first[0].crop_box[2] - first[0].crop_box[0])
        for found in later:  # to within a pixel of the 48-pixel crops the model sees
            np.testing.assert_allclose(found[0].crop_box, first[0].crop_box, atol=0.05 * side)
            np.testing.assert_allclose(found[0].points, first[0].points, atol=side / 48)
    else:  # an older run: iBUG 68's box around five points, half the face's, loses it or follows it too tight
        sides = [float(f[0].crop_box[2] - f[0].crop_box[0]) for f in later if f]
        assert tracker.detections > 1 or min(sides) < 0.8 * float(first[0].crop_box[2] - first[0].crop_box[0])


def test_a_pipeline_cuts_around_stage_1s_points_with_stage_1s_relation(five):
    from facelandmarks.pipelines.config import PipelineConfig
    from facelandmarks.pipelines.predictor import PipelinePredictor

    stage1 = Predictor(StillModel(), five.name, config={"scheme_definition": definition_to_store(five, BOX)})
    config = PipelineConfig(kind="cascade", run_dir="runs/five-cascade", stage1="runs/five", regions=[], scheme=five.name)
    piped = PipelinePredictor(config, stage1, {})
    assert piped.landmark_box == pytest.approx(BOX)  # what FaceTracker reads; stage 1 recrops with its own
