"""FaceTracker's logic on synthetic frames: a bright textured square stands in for a face, a
numpy "model" puts 68 points on the square in a crop, a "detector" finds squares."""

import cv2
import numpy as np
import pytest

from facelandmarks.data import faces
from facelandmarks.inference.predictor import Predictor
from facelandmarks.inference.video import (
    FaceTracker,
    appearance_patch,
    box_change,
    is_lost,
    match_by_overlap,
    moved_much,
    open_capture,
)

RNG = np.random.default_rng(0)
SHAPE = np.vstack([[[0, 0], [1, 0], [0, 1], [1, 1]], RNG.uniform(0, 1, (64, 2))])  # corners span the square
BACKGROUND = RNG.integers(0, 60, (120, 200, 3)).astype(np.uint8)
TEXTURE = RNG.integers(150, 256, (40, 40, 3)).astype(np.uint8)


class SquareModel:
    """Crops (N, S, S, 3) -> (N, 68, 2): SHAPE spread over the bright pixels of each crop (a mean face
    in the middle when there are none)."""

    def __init__(self, size=64):
        self.input_shape = (None, size, size, 3)

    def predict_on_batch(self, batch):
        size = batch.shape[1]
        out = []
        for crop in batch:
            ys, xs = np.nonzero(crop.mean(axis=-1) > 100)
            if len(xs) == 0:
                out.append(0.3 + 0.4 * SHAPE)
                continue
            lo = (np.array([xs.min(), ys.min()]) + 0.5) / size
            hi = (np.array([xs.max(), ys.max()]) + 0.5) / size
            out.append(lo + SHAPE * (hi - lo))
        return np.array(out, np.float32)


class SquareDetector:
    """Finds the bright squares; their boxes are the ones dlib would draw around SHAPE on them."""

    def __init__(self, blind=()):
        self.calls = 0
        self.blind = set(blind)  # the calls on which it finds nothing, as dlib misses a face now and then

    def detect_all(self, image):
        self.calls += 1
        if self.calls in self.blind:
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
        count, _, stats, _ = cv2.connectedComponentsWithStats((image.mean(axis=-1) > 100).astype(np.uint8))
        boxes = [faces.detection_like_box(SHAPE * [w - 1, h - 1] + [x, y]) for x, y, w, h, _ in stats[1:count]]
        if self.calls % 2:
            boxes = boxes[::-1]  # order must not matter to the tracks
        return np.array(boxes, np.float32).reshape(-1, 4), np.ones(len(boxes), np.float32)


def frame(*corners, side=40):
    """The background with a textured square at each (x, y) top-left corner."""
    image = BACKGROUND.copy()
    for x, y in corners:
        image[y:y + side, x:x + side] = cv2.resize(TEXTURE, (side, side), interpolation=cv2.INTER_NEAREST)
    return image


def run(frames, redetect_every, smooth=True, blind=()):
    """(faces per frame, whether the detector ran per frame) of a tracker over ``frames``."""
    detector = SquareDetector(blind)
    tracker = FaceTracker(Predictor(SquareModel(), "ibug68", detector=detector), redetect_every, smooth=smooth)
    found, detected = [], []
    for image in frames:
        calls = detector.calls
        found.append(tracker.update(image))
        detected.append(detector.calls > calls)
    assert tracker.detections == sum(detected) and tracker.tracked == len(frames) - sum(detected)
    return found, detected


def test_match_by_overlap_pairs_each_box_once_best_first():
    old = [[0, 0, 10, 10], [20, 0, 30, 10]]
    new = [[21, 0, 31, 10], [1, 0, 11, 10], [2, 0, 12, 10], [100, 100, 110, 110]]
    assert match_by_overlap(old, new) == {0: 1, 1: 0}
    assert match_by_overlap([], new) == {} and match_by_overlap(old, []) == {}


def test_lost_when_the_patch_is_flat_or_unlike_or_the_points_do_not_fit_the_box():
    box = np.array([20, 10, 80, 70], np.float32)
    image = frame((30, 20))
    patch = appearance_patch(image, box)
    assert appearance_patch(np.full_like(image, 90), box) is None
    assert appearance_patch(image, box + 500) is None
    brighter = appearance_patch(np.clip(image.astype(int) * 2 // 3 + 40, 0, 255).astype(np.uint8), box)
    assert not is_lost(patch, brighter, box, box), "a change of brightness and contrast is no loss"
    assert is_lost(patch, None, box, box)
    assert is_lost(patch, appearance_patch(frame((100, 60)), box), box, box)
    assert is_lost(patch, patch, box, box * [1, 1, 1.4, 1.4])
    assert is_lost(patch, patch, box, box + [20, 0, 20, 0])
    assert is_lost(patch, patch, box, np.full(4, np.nan, np.float32))
    assert box_change(box, box + [3, 0, 3, 0]) == pytest.approx((1.0, 0.05))
    assert moved_much(box, box + [6, 0, 6, 0]) and not moved_much(box, box + [1, 1, 1, 1])


def test_detects_every_n_frames_and_follows_a_moving_face_between():
    frames = [frame((20 + 2 * t, 30 + t)) for t in range(23)]
    found, detected = run(frames, redetect_every=5)
    assert detected == [t % 5 == 0 for t in range(23)]
    assert all(len(f) == 1 and f[0].track_id == 0 and f[0].tracked != d for f, d in zip(found, detected))
    assert found[1][0].to_json()["track_id"] == 0 and found[1][0].to_json()["tracked"] is True
    for t, (face,) in enumerate(found):
        assert np.abs(faces.landmark_bounds(face.points) - [20 + 2 * t, 30 + t, 60 + 2 * t, 70 + t]).max() < 2.5


def test_per_frame_detection_with_redetect_every_1_and_no_zero():
    _, detected = run([frame((20, 30))] * 4, redetect_every=1)
    assert all(detected)
    with pytest.raises(ValueError, match="redetect_every"):
        FaceTracker(Predictor(SquareModel(), "ibug68", detector=SquareDetector()), 0)


def test_a_jump_or_a_blank_frame_is_detected_afresh():
    frames = [frame((20, 30))] * 3 + [frame((140, 60))] * 3 + [BACKGROUND] + [frame((140, 60))] * 2
    found, detected = run(frames, redetect_every=30)
    assert detected == [True, False, False, True, False, False, True, True, False]
    assert [f[0].track_id if f else None for f in found] == [0, 0, 0, 1, 1, 1, None, 2, 2]


def test_two_faces_keep_their_tracks_across_detections():
    frames = [frame((10 + t, 20), (120 - t, 50)) for t in range(12)]
    found, detected = run(frames, redetect_every=4)
    assert sum(detected) == 3
    left = [min(faces_now, key=lambda f: f.points[:, 0].mean()).track_id for faces_now in found]
    assert all(sorted(f.track_id for f in faces_now) == [0, 1] for faces_now in found)
    assert len(set(left)) == 1, "the face on the left keeps its track"


def test_smoothing_steadies_the_points_and_leaves_the_tracking_alone():
    """A square trembling by up to 2 px, then a larger one in its place (the face is lost and detected
    again, keeping its track): the smoothed points tremble less, the detections, tracks and crop boxes
    are those of the raw run, and after the loss the points start afresh."""
    offsets = RNG.integers(-2, 3, (30, 2))
    frames = [frame((60 + dx, 40 + dy)) for dx, dy in offsets] + [frame((60, 40), side=56)] * 3
    raw, raw_detected = run(frames, 8, smooth=False)
    smooth, detected = run(frames, 8)
    assert detected == raw_detected and detected[30], "the larger square is a loss"
    assert [[f.track_id for f in fs] for fs in smooth] == [[f.track_id for f in fs] for fs in raw] == [[0]] * 33
    assert all(np.array_equal(a[0].crop_box, b[0].crop_box) for a, b in zip(smooth, raw))
    assert not np.allclose(smooth[29][0].points, raw[29][0].points)

    def jitter(found):
        return np.mean([np.linalg.norm(b[0].points - a[0].points, axis=1).mean() for a, b in zip(found[5:29], found[6:30])])

    assert jitter(smooth) < 0.9 * jitter(raw)  # 2 px a frame is fast for a 60 px face: how much is test_smoothing's
    assert np.allclose(smooth[30][0].points, raw[30][0].points), "a lost face's smoother starts afresh"
    raw, _ = run(frames, 1, smooth=False)
    smooth, _ = run(frames, 1)
    assert not np.allclose(smooth[29][0].points, raw[29][0].points)
    assert np.allclose(smooth[30][0].points, raw[30][0].points), "so does a detected one whose box holds something else"


def test_a_face_the_detector_misses_is_kept_by_tracking_unless_per_frame_detection():
    frames = [frame((20 + t, 30)) for t in range(12)]
    found, detected = run(frames, redetect_every=5, blind={2})  # the second detection (frame 5) finds nothing
    assert detected == [t % 5 == 0 for t in range(12)]
    assert all(len(f) == 1 and f[0].track_id == 0 for f in found), "the face keeps its points and its track"
    assert found[5][0].tracked and not found[10][0].tracked
    found, _ = run(frames, redetect_every=1, blind={6})
    assert found[5] == [] and found[6][0].track_id == 1, "per-frame detection: a face is where the detector finds it"
    tracker = FaceTracker(Predictor(SquareModel(), "ibug68", detector=SquareDetector({2})), 5)
    for image in frames:
        tracker.update(image)
    assert tracker.kept == 1


def test_a_time_not_after_the_last_counts_as_one_frame_later():
    tracker = FaceTracker(Predictor(SquareModel(), "ibug68", detector=SquareDetector()), 5, fps=10)
    steady = FaceTracker(Predictor(SquareModel(), "ibug68", detector=SquareDetector()), 5, fps=10)
    frames = [frame((20 + 3 * (t % 2), 30)) for t in range(6)]
    stuck = [tracker.update(image, 0.0) for image in frames]  # a camera that repeats its timestamp
    ticking = [steady.update(image) for image in frames]
    assert all(np.allclose(a[0].points, b[0].points) for a, b in zip(stuck, ticking))


def test_a_camera_or_file_that_cannot_be_opened_is_one_line(tmp_path, capfd):
    with pytest.raises(OSError, match="^99: cannot open camera$"):
        open_capture("99")
    assert capfd.readouterr().err == "", "OpenCV's own warnings stay silent"
    (tmp_path / "notes.mp4").write_text("not a video")
    with pytest.raises(OSError, match="notes.mp4: cannot open video$"):
        open_capture(tmp_path / "notes.mp4")
    with pytest.raises(FileNotFoundError, match="missing.mp4: no such video file"):
        open_capture(tmp_path / "missing.mp4")
