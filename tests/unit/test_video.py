"""FaceTracker's logic on synthetic frames: a bright textured square stands in for a face, a
numpy "model" puts 68 points on the square in a crop, a "detector" finds squares.  The aligned-face
videos: blobs drawn where a face's eyes, nose and mouth are, turned and moved, come back in place."""

import heapq
import struct
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from facelandmarks.data import faces
from facelandmarks.inference import video
from facelandmarks.inference.align import TEMPLATE_112, template
from facelandmarks.inference.aligned_video import AlignedVideos, aligned_path, check_aligned_outputs
from facelandmarks.inference.predictor import Predictor
from facelandmarks.inference.video import (
    FaceTracker,
    appearance_patch,
    box_change,
    is_lost,
    match_by_overlap,
    moved_much,
    run_on_video,
)
from facelandmarks.inference.video_files import open_capture, read_video_landmarks

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
    with pytest.raises(OSError, match=r"notes.mp4: cannot open video( \(FFmpeg: [^()]+\))?$"):
        open_capture(tmp_path / "notes.mp4")
    with pytest.raises(FileNotFoundError, match="missing.mp4: no such video file"):
        open_capture(tmp_path / "missing.mp4")


def test_an_mp4_cut_short_is_one_line_with_ffmpegs_reason_and_nothing_else_on_stderr(tmp_path, capfd):
    """FFmpeg prints '[mov,mp4,... @ 0x...] moov atom not found' on the process's stderr, beside OpenCV's logging:
    the line the user sees is the error alone, with that reason in it."""
    clip = tmp_path / "cut.mp4"
    writer, noise = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48)), np.random.default_rng(1)
    for _ in range(10):
        writer.write(noise.integers(0, 256, (48, 64, 3)).astype(np.uint8))  # a file long enough to cut
    writer.release()
    clip.write_bytes(clip.read_bytes()[:len(clip.read_bytes()) // 2])  # the index (moov) is written last
    capfd.readouterr()
    with pytest.raises(OSError, match=r"cut.mp4: cannot open video \(FFmpeg: moov atom not found\)$"):
        open_capture(clip)
    assert capfd.readouterr().err == ""


def blob_face(angle: float, scale: float, centre, size=(200, 150)) -> tuple[np.ndarray, np.ndarray]:
    """(a frame, iBUG-68 points): white blobs at the 112-px template's eyes, nose tip and mouth corners, turned
    by ``angle`` degrees, scaled and centred on ``centre``; the points' anchors lie on the blobs."""
    a = np.deg2rad(angle)
    rotate = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    place = lambda xy: (np.asarray(xy) - 56.0) @ rotate.T + centre  # noqa: E731
    points = place(RNG.uniform(30, 82, (68, 2)))
    ring = 5.0 * np.stack([np.cos(np.arange(6) * np.pi / 3), np.sin(np.arange(6) * np.pi / 3)], axis=1)
    points[36:42], points[42:48] = place(TEMPLATE_112[0] + ring), place(TEMPLATE_112[1] + ring)
    points[[30, 48, 54]] = place(TEMPLATE_112[2:])
    yy, xx = np.mgrid[0:size[1], 0:size[0]].astype(np.float64)
    image = np.zeros(size[::-1])
    for x, y in place(TEMPLATE_112):
        image += 255 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * (4.0 * scale) ** 2))
    return np.repeat(np.clip(image, 0, 255).astype(np.uint8)[..., None], 3, axis=2), points


def square_clip(path, count: int):
    """An MJPG AVI of ``count`` 200 x 120 frames, the square moving 3 px right each frame."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 20, (200, 120))
    for t in range(count):
        writer.write(frame((20 + 3 * t, 30)))
    writer.release()
    return path


def read_frames(path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while (frame := capture.read()[1]) is not None:
        frames.append(frame)
    capture.release()
    return frames


def blob_centres(chip: np.ndarray, where: np.ndarray, radius: float) -> np.ndarray:
    """The brightness-weighted centre of ``chip`` within ``radius`` of each of ``where``."""
    gray = chip.mean(axis=2)
    yy, xx = np.mgrid[0:gray.shape[0], 0:gray.shape[1]]
    out = []
    for x, y in where:
        weight = gray * (((xx - x) ** 2 + (yy - y) ** 2) < radius**2)
        out.append([(weight * xx).sum() / weight.sum(), (weight * yy).sum() / weight.sum()])
    return np.array(out)


def test_aligned_video_names_follow_the_overlay():
    assert aligned_path("out/clip_landmarks.mp4", 3).as_posix() == "out/clip_landmarks_face3_aligned.mp4"
    assert aligned_path("a/talk.avi", 0).as_posix() == "a/talk_face0_aligned.avi"


def test_each_tracked_face_gets_a_video_of_upright_chips_one_per_frame_it_is_in(tmp_path):
    """Two faces, turned by -25..+25 degrees and moving, track 0 in frames 0-5 and track 1 in frames 2-8: each
    video holds its face's frames in order, with the eyes, nose and mouth where the template puts them."""
    out = tmp_path / "clip_landmarks.mp4"
    size, centres = 64, template("ibug68", 64)[1]
    with AlignedVideos(out, "ibug68", size, fps=10) as chips:
        for t in range(9):
            left, left_points = blob_face(-25 + 6 * t, 0.6, (50 + 2 * t, 70))
            right, right_points = blob_face(25 - 6 * t, 0.8, (150, 80 - t))
            found = [SimpleNamespace(track_id=0, points=left_points)] if t < 6 else []
            found += [SimpleNamespace(track_id=1, points=right_points)] if t >= 2 else []
            chips.write(np.maximum(left, right), found)
            if t == 6:  # track 0 ended a frame ago: its video is finished while track 1's is written
                assert aligned_path(out, 0).is_file() and not aligned_path(out, 1).is_file()
    assert chips.frames == {0: 6, 1: 7} and chips.blank == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip_landmarks_face0_aligned.mp4", "clip_landmarks_face1_aligned.mp4"]
    for track_id, count in ((0, 6), (1, 7)):
        frames = read_frames(aligned_path(out, track_id))
        assert len(frames) == count and all(f.shape == (size, size, 3) for f in frames)
        capture = cv2.VideoCapture(str(aligned_path(out, track_id)))
        assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(10)
        capture.release()
        for chip in frames:
            found = blob_centres(chip, centres, radius=6)
            assert np.abs(found - centres).max() < 1.0, f"track {track_id}: blobs at {found.round(1)}, not {centres.round(1)}"


def test_a_face_without_its_anchors_gets_a_black_chip_and_a_gray_video_colour_chips(tmp_path):
    image, points = blob_face(10, 0.7, (100, 75))
    broken = points.copy()
    broken[36] = np.nan  # an eye point: no fit
    chips = AlignedVideos(tmp_path / "g.mp4", "ibug68", 32)
    for p in (points, broken, points):
        chips.write(image[..., 0], [SimpleNamespace(track_id=4, points=p)])  # gray frames
    assert chips.close() == {4: tmp_path / "g_face4_aligned.mp4"} and chips.blank == 1
    frames = read_frames(tmp_path / "g_face4_aligned.mp4")
    assert len(frames) == 3, "the black chip keeps the video in step with the points file"
    assert frames[0].max() > 150 and frames[1].max() < 30 and frames[2].max() > 150


def test_close_removes_only_an_earlier_runs_videos_of_this_name_and_only_after_frames_came(tmp_path):
    out = tmp_path / "clip.mp4"
    earlier = ["clip_face0_aligned.mp4", "clip_face7_aligned.mp4", "clip_face9_aligned.partial.mp4"]
    kept = ["clip.mp4", "clip.jsonl", "clip_face1_aligned.avi", "other_face7_aligned.mp4", "clip_face7_aligned.mp4.txt"]
    for name in earlier + kept:
        (tmp_path / name).write_bytes(b"x")
    AlignedVideos(out, "ibug68", 32).close()  # no frame (a video that could not be read): nothing replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(earlier + kept)
    image, points = blob_face(0, 0.7, (100, 75))
    with AlignedVideos(out, "ibug68", 32) as chips:
        chips.write(image, [SimpleNamespace(track_id=0, points=points)])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["clip_face0_aligned.mp4"] + kept)
    assert len(read_frames(tmp_path / "clip_face0_aligned.mp4")) == 1


def test_a_video_that_cannot_be_finished_leaves_the_others_finished_and_earlier_videos_alone(tmp_path):
    out = tmp_path / "clip.mp4"
    (tmp_path / "clip_face0_aligned.mp4").mkdir()  # its partial file cannot take this name
    (tmp_path / "clip_face5_aligned.mp4").write_bytes(b"an earlier run's")
    image, points = blob_face(0, 0.7, (100, 75))
    chips = AlignedVideos(out, "ibug68", 32)
    chips.write(image, [SimpleNamespace(track_id=0, points=points), SimpleNamespace(track_id=1, points=points + 3)])
    with pytest.raises(OSError):
        chips.close()
    assert len(read_frames(tmp_path / "clip_face1_aligned.mp4")) == 1
    assert (tmp_path / "clip_face5_aligned.mp4").read_bytes() == b"an earlier run's"


def test_refusals_before_any_work(tmp_path):
    out = tmp_path / "clip_landmarks.mp4"
    with pytest.raises(ValueError, match="clip_landmarks_face2_aligned.mp4: named as an aligned-face video of "
                                         ".*clip_landmarks.mp4"):
        check_aligned_outputs(out, 112, 0.0, keep=(tmp_path / "clip_landmarks_face2_aligned.mp4",))
    elsewhere = tmp_path / "sub" / "clip_landmarks_face2_aligned.mp4"
    check_aligned_outputs(out, 112, 0.0, keep=(elsewhere, "0"))  # another folder, a camera
    check_aligned_outputs(out, 112, 0.0, keep=(tmp_path / "clip_face2_aligned.mp4",))  # clip.mp4's, not this overlay's
    with pytest.raises(ValueError, match="at least 16 px"):
        check_aligned_outputs(out, 8, 0.0)
    with pytest.raises(ValueError, match="fps must be positive, got 0"):
        AlignedVideos(out, "ibug68", 32, fps=0)
    chips = AlignedVideos(out, "ibug68", 32)
    image, points = blob_face(0, 0.7, (100, 75))
    chips.write(image, [SimpleNamespace(track_id=0, points=points)])
    chips.write(image, [])
    with pytest.raises(ValueError, match="track 0 came back after its video was finished"):
        chips.write(image, [SimpleNamespace(track_id=0, points=points)])
    chips.close()


class InterruptingDetector(SquareDetector):
    """SquareDetector that is interrupted (Ctrl-C) on its ``stop``-th call."""

    def __init__(self, stop):
        super().__init__()
        self.stop = stop

    def detect_all(self, image):
        if self.calls + 1 == self.stop:
            raise KeyboardInterrupt
        return super().detect_all(image)


@pytest.mark.parametrize("stop, max_frames, frames", [(None, None, 12), (None, 5, 5), (8, None, 7)])
def test_run_on_video_leaves_finished_face_videos_at_the_end_max_frames_and_ctrl_c(stop, max_frames, frames, tmp_path,
                                                                                    monkeypatch):
    """run_on_video with the square "model": one face video per track, a chip per frame the points file lists the
    track in, all released and renamed however the run ends (Ctrl-C on the 8th frame: 7 frames written)."""
    detector = InterruptingDetector(stop)
    monkeypatch.setattr(video.Predictor, "load", lambda *a, **k: Predictor(SquareModel(), "ibug68", detector=detector))
    clip = square_clip(tmp_path / "squares.avi", 12)
    out = tmp_path / "out" / "squares_landmarks.mp4"
    args = (tmp_path, clip, out, max_frames)
    if stop:
        with pytest.raises(KeyboardInterrupt):
            run_on_video(*args, redetect_every=1, align=(48, 0.1))
    else:
        result = run_on_video(*args, redetect_every=1, align=(48, 0.1))
        assert result["aligned"] == {0: str(aligned_path(out, 0))}
    assert sorted(p.name for p in out.parent.iterdir()) == ["squares_landmarks.jsonl", "squares_landmarks.mp4",
                                                             "squares_landmarks_face0_aligned.mp4"]
    header, lines = read_video_landmarks(out.with_suffix(".jsonl"))
    assert header["align"] == {"size": 48, "padding": 0.1} and len(lines) == frames
    assert all([f["track_id"] for f in line["faces"]] == [0] for line in lines)
    chips = read_frames(aligned_path(out, 0))
    assert len(chips) == len(read_frames(out)) == frames and chips[0].shape == (48, 48, 3)


def test_two_overlays_of_one_clip_in_one_folder_keep_their_own_face_videos(tmp_path, monkeypatch):
    """evaluate.py's default overlay out/clip_landmarks.mp4 and --out out/clip.mp4 both wrote out/clip_face0_aligned.mp4
    (the name less a trailing _landmarks): the second run replaced the first's face video and kept its overlay."""
    monkeypatch.setattr(video.Predictor, "load", lambda *a, **k: Predictor(SquareModel(), "ibug68", detector=SquareDetector()))
    clip = square_clip(tmp_path / "clip.avi", 6)
    folder = tmp_path / "out"
    for name, frames in (("clip_landmarks.mp4", 6), ("clip.mp4", 3)):  # the default, then --out out/clip.mp4
        result = run_on_video(tmp_path, clip, folder / name, max_frames=frames, redetect_every=1, align=(48, 0.1))
        assert set(result["aligned"]) == {0}
    assert sorted(p.name for p in folder.iterdir()) == [
        "clip.jsonl", "clip.mp4", "clip_face0_aligned.mp4",
        "clip_landmarks.jsonl", "clip_landmarks.mp4", "clip_landmarks_face0_aligned.mp4"]
    for name, frames in (("clip_landmarks.mp4", 6), ("clip.mp4", 3)):  # each overlay's face video is its own
        assert len(read_frames(aligned_path(folder / name, 0))) == len(read_frames(folder / name)) == frames


@pytest.mark.parametrize("min_score, recorded", [(0.5, 0.5), (float("-inf"), None)])
def test_the_points_file_records_the_detection_threshold_as_a_photos_json_does(min_score, recorded, tmp_path, monkeypatch):
    """--video --min-score changes which faces the points file lists, and its header did not say the threshold."""
    monkeypatch.setattr(video.Predictor, "load", lambda *a, **k: Predictor(SquareModel(), "ibug68", detector=SquareDetector()))
    clip = square_clip(tmp_path / "clip.avi", 1)
    run_on_video(tmp_path, clip, tmp_path / "out.mp4", min_score=min_score)
    header, _ = read_video_landmarks(tmp_path / "out.jsonl")
    assert header["min_score"] == recorded


def test_evaluate_video_align_refuses_bad_values_and_a_clashing_name_in_one_line(tmp_path, capsys):
    from facelandmarks.cli import evaluate

    clip = tmp_path / "clip_face0_aligned.mp4"
    clip.write_bytes(b"not read: the checks come first")
    for flags, line in ((["--out", str(tmp_path / "o.mp4"), "--align", "8"], "--align must be between 16 and 1024 px, got 8"),
                        (["--out", str(tmp_path / "o.mp4"), "--align", "64", "--align-padding", "-1"], "0 or more, got -1"),
                        (["--out", str(tmp_path / "clip.mp4"), "--align", "64"],
                         f"{clip}: named as an aligned-face video of {tmp_path / 'clip.mp4'} would be; give another --out")):
        assert evaluate.main(["--video", str(clip), *flags]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and line in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == [clip.name]


def test_a_video_file_cut_short_says_how_many_of_its_frames_were_read_and_keeps_them(tmp_path, monkeypatch, capsys):
    """An AVI cut in half gave '10 frames, ...' and exit status 0, as if the clip had ended there; its header lists
    20 frames. Now one line says so, status 2, and the overlay and points of the frames read stay."""
    from facelandmarks.cli import evaluate

    monkeypatch.setattr(video.Predictor, "load", lambda *a, **k: Predictor(SquareModel(), "ibug68", detector=SquareDetector()))
    clip = square_clip(tmp_path / "squares.avi", 20)
    whole = clip.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(whole[:len(whole) // 2])
    read = len(read_frames(cut))
    assert 2 <= read <= 16, read
    out = tmp_path / "out" / "cut.mp4"
    assert evaluate.main(["--video", str(cut), "--out", str(out)]) == 2
    said = capsys.readouterr()
    assert said.err == (f"evaluate.py: {cut}: {read} of the 20 frames its header lists could be read (the file is cut "
                        "short or damaged); the overlay and points hold those\n")
    assert said.out.startswith(f"{read} frames, ")
    assert len(read_frames(out)) == read and len(read_video_landmarks(out.with_suffix(".jsonl"))[1]) == read
    for argv in (["--video", str(clip)], ["--video", str(cut), "--max-frames", str(read)]):  # whole, or stopped early
        assert evaluate.main([*argv, "--out", str(tmp_path / "other.mp4")]) == 0
        assert capsys.readouterr().err == ""


def test_a_folder_as_the_videos_out_gets_the_default_names_inside_it(tmp_path, monkeypatch, capsys):
    """--video clip.avi --out out/ (as --image takes a folder) said 'out: the overlay needs a video file name ending
    in .mp4, ...'; a folder, existing or written with a trailing slash, now holds clip_landmarks.mp4 and .jsonl."""
    from pathlib import Path

    from facelandmarks.cli import evaluate

    monkeypatch.setattr(video.Predictor, "load", lambda *a, **k: Predictor(SquareModel(), "ibug68", detector=SquareDetector()))
    clip = square_clip(tmp_path / "clip.avi", 3)
    (tmp_path / "there").mkdir()
    for out in (tmp_path / "there", f"{tmp_path / 'new'}/"):
        assert evaluate.main(["--video", str(clip), "--out", str(out)]) == 0
        folder = Path(out)
        assert sorted(p.name for p in folder.iterdir()) == ["clip_landmarks.jsonl", "clip_landmarks.mp4"]
        assert len(read_frames(folder / "clip_landmarks.mp4")) == 3
        assert f"-> {folder / 'clip_landmarks.mp4'}, points in {folder / 'clip_landmarks.jsonl'}" in capsys.readouterr().out


def ebml(element_id: int, data) -> bytes:
    """One Matroska (EBML) element: its id, its size as a variable-length integer, its data."""
    if isinstance(data, int):
        data = data.to_bytes(max(1, (data.bit_length() + 7) // 8), "big")
    data = struct.pack(">d", data) if isinstance(data, float) else data.encode() if isinstance(data, str) else data
    length = next(n for n in range(1, 9) if len(data) < (1 << 7 * n) - 1)
    return element_id.to_bytes((element_id.bit_length() + 7) // 8, "big") + (len(data) | 1 << 7 * length).to_bytes(length, "big") + data


def write_mkv(path, frames, times_ms, duration_ms: float, audio_until_ms: int = 0, codec="V_MJPEG", size=(200, 120)):
    """A Matroska file of MJPEG frames, in their order, shown at the given times (and silence, 8 kHz PCM, until ``audio_until_ms``), as
    ffmpeg, OBS or a browser write one: it lists no frame count (OpenCV estimates one from its duration x frame rate).
    Frames given as bytes are stored as they are, pictures of ``codec`` of ``size`` (width, height)."""
    width, height = size if isinstance(frames[0], bytes) else frames[0].shape[1::-1]
    video = ebml(0xAE, ebml(0xD7, 1) + ebml(0x73C5, 1) + ebml(0x83, 1) + ebml(0x86, codec)
                 + ebml(0xE0, ebml(0xB0, width) + ebml(0xBA, height)))
    audio = ebml(0xAE, ebml(0xD7, 2) + ebml(0x73C5, 2) + ebml(0x83, 2) + ebml(0x86, "A_PCM/INT/LIT")
                 + ebml(0xE1, ebml(0xB5, 8000.0) + ebml(0x9F, 1) + ebml(0x6264, 16)))
    coded = [f if isinstance(f, bytes) else cv2.imencode(".jpg", f)[1].tobytes() for f in frames]
    blocks = heapq.merge([(t, 1, data) for data, t in zip(coded, times_ms)],  # in their order
                         [(t, 2, bytes(1600)) for t in range(0, audio_until_ms, 100)], key=lambda b: b[0])  # 100 ms of silence a block
    blocks = b"".join(ebml(0xA3, bytes([0x80 | track]) + struct.pack(">h", t) + b"\x80" + data) for t, track, data in blocks)
    info = ebml(0x2AD7B1, 1_000_000) + ebml(0x4489, float(duration_ms))  # milliseconds
    tracks = ebml(0x1654AE6B, video + (audio if audio_until_ms else b""))
    segment = ebml(0x1549A966, info) + tracks + ebml(0x1F43B675, ebml(0xE7, 0) + blocks)
    header = ebml(0x1A45DFA3, ebml(0x4286, 1) + ebml(0x42F7, 1) + ebml(0x42F2, 4) + ebml(0x42F3, 8)
                  + ebml(0x4282, "matroska") + ebml(0x4287, 4) + ebml(0x4285, 2))
    Path(path).write_bytes(header + ebml(0x18538067, segment))


def test_a_whole_video_whose_count_opencv_estimates_is_not_taken_for_a_cut_one(tmp_path, monkeypatch, capsys):
    """A Matroska/WebM file lists no frame count: OpenCV gives duration x frame rate, the duration the longest track's.
    Where the rate varies (a phone slowing down in low light, a recorder dropping frames) or the sound runs on after
    the last frame, that is more frames than the file holds, and such whole clips were refused as cut short (status
    2). They are done (status 0); a file whose frames end well before its duration gets a note, not an error."""
    from facelandmarks.cli import evaluate

    monkeypatch.setattr(video.Predictor, "load", lambda *a, **k: Predictor(SquareModel(), "ibug68", detector=SquareDetector()))
    squares = [frame((20 + 2 * t, 30)) for t in range(60)]
    times = [round(i * 1000 / 30) for i in range(30)] + [1000 + 100 * i for i in range(30)]  # 30 frames/s, then 10
    varied, sound = tmp_path / "varied.mkv", tmp_path / "sound.mkv"
    write_mkv(varied, squares, times, 4000)
    write_mkv(sound, squares, [round(i * 1000 / 30) for i in range(60)], 2500, audio_until_ms=2500)  # 2 s of frames
    for clip, listed in ((varied, 120), (sound, 75)):
        capture = cv2.VideoCapture(str(clip))
        assert (capture.get(cv2.CAP_PROP_FRAME_COUNT), len(read_frames(clip))) == (listed, 60)
        assert evaluate.main(["--video", str(clip), "--out", str(tmp_path / f"{clip.stem}_out.mp4")]) == 0
        said = capsys.readouterr()
        assert said.out.startswith("60 frames, ") and said.err == ("" if clip == varied else
               f"evaluate.py: note: {sound}: 60 frames read, where its duration x frame rate makes 75 (a sound track "
               "running on past the last frame, or a file cut short)\n"), said


def test_an_mp4_with_its_index_first_cut_short_is_refused_as_an_avi_is(tmp_path, monkeypatch, capsys):
    """An MP4 written for the web (its moov, the sample tables, before the frames: ffmpeg -movflags +faststart) opens
    when cut short, and its header counts its frames: 10 of 20 read is an error, as for an AVI."""
    from facelandmarks.cli import evaluate

    monkeypatch.setattr(video.Predictor, "load", lambda *a, **k: Predictor(SquareModel(), "ibug68", detector=SquareDetector()))
    clip = tmp_path / "squares.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 20, (200, 120))
    for t in range(20):
        writer.write(frame((20 + 3 * t, 30)))
    writer.release()
    data, boxes, at = clip.read_bytes(), {}, 0
    while at < len(data):  # OpenCV writes ftyp, free, mdat, moov
        boxes[data[at + 4:at + 8]], at = (at, int.from_bytes(data[at:at + 4], "big")), at + int.from_bytes(data[at:at + 4], "big")
    (moov_at, moov_size), mdat_at = boxes[b"moov"], boxes[b"mdat"][0]
    moov = bytearray(data[moov_at:moov_at + moov_size])
    table = moov.find(b"stco")  # the chunk offsets move by the moov's size
    for k in range(int.from_bytes(moov[table + 8:table + 12], "big")):
        at = table + 12 + 4 * k
        moov[at:at + 4] = (int.from_bytes(moov[at:at + 4], "big") + moov_size).to_bytes(4, "big")
    web = data[:mdat_at] + bytes(moov) + data[mdat_at:moov_at]
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(web[:len(web) * 3 // 4])
    read = len(read_frames(cut))
    assert 2 <= read <= 16, read
    assert evaluate.main(["--video", str(cut), "--out", str(tmp_path / "out.mp4")]) == 2
    assert capsys.readouterr().err.startswith(f"evaluate.py: {cut}: {read} of the 20 frames its header lists could be read")
    (tmp_path / "web.mp4").write_bytes(web)  # whole
    assert evaluate.main(["--video", str(tmp_path / "web.mp4"), "--out", str(tmp_path / "out.mp4")]) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(("line", "number"), [('{"frame": 1, "time": 0.04}', 3), ("[1, 2]", 3), ('{"faces": [{}]}', 3)])
def test_a_points_file_line_that_is_json_but_no_frame_is_refused_naming_the_file_and_line(tmp_path, line, number):
    """read_video_landmarks promises a ValueError naming the file and the line for any bad line: a JSON line that is
    not a frame (no "faces", a list, a face without points) was a KeyError or TypeError traceback."""
    path = tmp_path / "points.jsonl"
    path.write_text('{"scheme": "ibug68", "fps": 25.0, "fps_assumed": true, "file_fps": null}\n'
                    '{"frame": 0, "time": 0.0, "time_estimated": true, "detected": true, "faces": []}\n' + line + "\n")
    with pytest.raises(ValueError, match=rf"^{path}: line {number} is not a frame of run_on_video's"):
        read_video_landmarks(path)
