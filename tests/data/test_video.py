"""FaceTracker and run_on_video on real faces: fewer detections, re-detection every N frames and
after the face jumps, points close to those of detecting on every frame, smoothed or not, the points file,
the aligned-face videos, and a camera (a stand-in for OpenCV's capture, giving real frames)."""

import csv
import os
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from facelandmarks.inference.align import align_face, template
from facelandmarks.inference.aligned_video import aligned_path
from facelandmarks.inference.predictor import Predictor
from facelandmarks.inference.video import FaceTracker, read_video_landmarks, run_on_video

pytestmark = pytest.mark.data

PHOTOS = ("300w/helen/trainset/103236168_2.jpg", "300w/helen/trainset/1004467229_1.jpg")
FRAME = (320, 240)


def read_pts(path):
    body = open(path).read().split("{")[1].split("}")[0].split()
    return np.array(body, np.float64).reshape(-1, 2)


def pan_frames(data_dir, photo, count, centre=(160, 120), step=1.5):
    """``count`` RGB frames of ``photo`` moving ``step`` px per frame to the right (face 30 % of
    the width, around ``centre``), and the true points of each."""
    image = cv2.imread(str(data_dir / photo))[..., ::-1]
    points = read_pts((data_dir / photo).with_suffix(".pts"))
    scale = 0.3 * FRAME[0] / np.ptp(points[:, 0])
    frames, truth = [], []
    for t in range(count):
        shift = np.array(centre) + [step * (t - count / 2), 0]
        matrix = np.hstack([scale * np.eye(2), (shift - scale * points.mean(0))[:, None]])
        frames.append(cv2.warpAffine(image, matrix, FRAME, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE))
        truth.append(points @ matrix[:, :2].T + matrix[:, 2])
    return frames, np.array(truth)


def write_clip(path, frames, fps=25):
    """RGB ``frames`` -> an mp4v file at ``path``."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, frames[0].shape[1::-1])
    for frame in frames:
        writer.write(np.ascontiguousarray(frame[..., ::-1]))
    writer.release()
    return path


def interocular(truth):
    return float(np.linalg.norm(truth[..., 36, :] - truth[..., 45, :], axis=-1).mean())


@pytest.fixture(scope="module")
def predictor():
    return Predictor.load()


def track(predictor, frames, redetect_every, smooth=False):
    """Per frame: the faces found and whether the detector ran on it (raw points unless ``smooth``)."""
    tracker = FaceTracker(predictor, redetect_every, smooth=smooth)
    found, detected = [], []
    for frame in frames:
        before = tracker.detections
        found.append(tracker.update(frame))
        detected.append(tracker.detections > before)
        if not detected[-1]:
            assert all(face.tracked for face in found[-1])
    assert tracker.frames == len(frames) and tracker.detections + tracker.tracked == len(frames)
    return found, detected, tracker


def test_tracking_detects_every_n_frames_and_keeps_per_frame_points(predictor, data_dir):
    frames, truth = pan_frames(data_dir, PHOTOS[0], 22)
    found, detected, tracker = track(predictor, frames, redetect_every=5)
    assert detected == [t % 5 == 0 for t in range(22)]
    assert tracker.detections == 5 and tracker.tracked == 17
    assert all(len(faces) == 1 and faces[0].track_id == 0 for faces in found)
    per_frame = [predictor.detect_and_predict(frame) for frame in frames]
    assert all(len(faces) == 1 for faces in per_frame)
    gap = np.array([np.linalg.norm(a[0].points - b[0].points, axis=1).mean() for a, b in zip(found, per_frame)])
    iod = interocular(truth)
    assert np.all(gap[::5] == 0)  # detection frames are per-frame detection
    assert gap.max() < 0.05 * iod, f"tracked points {gap.max():.2f} px from per-frame ones (inter-ocular {iod:.0f} px)"


def test_tracking_notices_a_blank_frame_and_a_jump_to_another_face(predictor, data_dir):
    first, _ = pan_frames(data_dir, PHOTOS[0], 4, centre=(110, 120))
    second, truth = pan_frames(data_dir, PHOTOS[1], 4, centre=(220, 110))
    frames = first + [np.zeros_like(first[0])] + first + second
    found, detected, tracker = track(predictor, frames, redetect_every=30)
    assert detected[:9] == [True, False, False, False, True, True, False, False, False]
    assert found[4] == [], "the blank frame is detected afresh and has no face"
    assert detected[9], "at the jump to another face the detector runs again"
    assert not any(detected[10:]), "the new face is tracked"
    assert found[9][0].track_id != found[3][0].track_id
    assert np.allclose(found[9][0].points, predictor.detect_and_predict(frames[9])[0].points)
    error = np.mean([np.linalg.norm(f[0].points - t, axis=1).mean() for f, t in zip(found[9:], truth)])
    assert error < 0.1 * interocular(truth)


def youtube_frames(data_dir, person="Warren_Buffett"):
    """One person's YouTube68 frames in file order (videos of three frames seconds apart), each
    centred on one black canvas (a clip of small moves and scene cuts), and the video of each."""
    folder = data_dir / "youtube68"
    with open(folder / "training_frames_keypoints.csv", newline="") as handle:
        names = sorted(row[0] for row in csv.reader(handle) if row[0].startswith(person + "_"))
    images = [cv2.imread(str(folder / "training" / name))[..., ::-1] for name in names]
    height, width = max(i.shape[0] for i in images), max(i.shape[1] for i in images)
    frames = []
    for image in images:
        canvas = np.zeros((height, width, 3), np.uint8)
        top, left = (height - image.shape[0]) // 2, (width - image.shape[1]) // 2
        canvas[top:top + image.shape[0], left:left + image.shape[1]] = image
        frames.append(canvas)
    return frames, [name.rsplit("_", 1)[1][0] for name in names]


def test_tracked_and_smoothed_points_stay_near_per_frame_ones_on_youtube_frames(predictor, data_dir):
    frames, videos = youtube_frames(data_dir)
    cuts = [t for t in range(len(frames)) if t == 0 or videos[t] != videos[t - 1]]
    assert len(cuts) >= 3
    found, detected, _ = track(predictor, frames, redetect_every=10, smooth=True)
    assert all(detected[t] for t in cuts), "every scene cut is noticed"
    assert not all(detected), "frames of one video are tracked"
    for faces, frame in zip(found, frames):
        side = faces[0].crop_box[2] - faces[0].crop_box[0]
        gap = min(np.linalg.norm(faces[0].points - f.points, axis=1).mean() for f in predictor.detect_and_predict(frame))
        assert gap < 0.05 * side, f"tracked points {gap:.2f} px from per-frame ones ({side:.0f} px crop)"


def test_run_on_video_counts_detections_and_tracked_frames(data_dir, tmp_path):
    clip = write_clip(tmp_path / "pan.mp4", pan_frames(data_dir, PHOTOS[0], 20)[0])
    tracked = run_on_video(None, clip, tmp_path / "tracked.mp4", redetect_every=10)
    assert tracked["frames"] == 20 and tracked["faces"] == 20
    assert tracked["detections"] == 2 and tracked["tracked"] == 18
    per_frame = run_on_video(None, clip, tmp_path / "per-frame.mp4", track=False, max_frames=8)
    assert per_frame["frames"] == 8 and per_frame["detections"] == 8 and per_frame["tracked"] == 0
    check = cv2.VideoCapture(str(tmp_path / "tracked.mp4"))
    assert int(check.get(cv2.CAP_PROP_FRAME_COUNT)) == 20
    check.release()
    strict = run_on_video(None, clip, tmp_path / "strict.mp4", max_frames=3, min_score=10.0)
    assert strict["faces"] == 0 and strict["detections"] == 3, "min_score reaches the detector"
    # detect_max_side reaches the detector: the ~96-px face is 48 px in a 160-px copy (searched doubled: found) and
    # 24 px in an 80-px one (missed); the points file's header records the side
    half = run_on_video(None, clip, tmp_path / "half.mp4", track=False, max_frames=3, detect_max_side=160)
    tiny = run_on_video(None, clip, tmp_path / "tiny.mp4", track=False, max_frames=3, detect_max_side=80)
    assert (half["faces"], tiny["faces"], tiny["detections"]) == (3, 0, 3)
    assert read_video_landmarks(half["points"])[0]["detect_max_side"] == 160
    assert read_video_landmarks(per_frame["points"])[0]["detect_max_side"] is None


def test_run_on_video_writes_every_frames_points_and_a_kill_leaves_whole_frames(data_dir, tmp_path):
    frames, truth = pan_frames(data_dir, PHOTOS[0], 12)
    clip = write_clip(tmp_path / "pan.mp4", frames)
    result = run_on_video(None, clip, tmp_path / "out" / "pan.mp4", redetect_every=5)
    assert result["points"] == str(tmp_path / "out" / "pan.jsonl")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["pan.jsonl", "pan.mp4"], "no .partial left"
    header, per_frame = read_video_landmarks(result["points"])
    assert header["scheme"] == "ibug68" and header["num_points"] == 68 and header["smooth"] is True
    assert (header["width"], header["height"], header["fps"], header["redetect_every"]) == (*FRAME, 25.0, 5)
    assert [f["frame"] for f in per_frame] == list(range(12))
    assert [f["time"] for f in per_frame] == pytest.approx(np.arange(12) / 25)
    assert [f["detected"] for f in per_frame] == [t % 5 == 0 for t in range(12)]
    points = np.array([f["faces"][0]["points"] for f in per_frame])
    assert points.shape == (12, 68, 2) and all(f["faces"][0]["track_id"] == 0 for f in per_frame)
    assert np.linalg.norm(points - truth, axis=2).mean() < 0.1 * interocular(truth), "the points are on the face"

    raw = run_on_video(None, clip, tmp_path / "raw.mp4", redetect_every=5, smooth=False)
    raw_header, raw_frames = read_video_landmarks(raw["points"])
    assert raw_header["smooth"] is False
    raw_points = np.array([f["faces"][0]["points"] for f in raw_frames])
    assert np.allclose(raw_points[0], points[0], atol=0.01) and not np.allclose(raw_points[5:], points[5:], atol=0.01)

    text = (tmp_path / "out" / "pan.jsonl").read_text()
    torn = tmp_path / "torn.jsonl"
    torn.write_text(text[:text.rindex("\n", 0, len(text) - 1) + 40])  # killed 40 characters into the last frame
    assert len(read_video_landmarks(torn)[1]) == 11
    unended = tmp_path / "unended.jsonl"
    unended.write_text(text.rstrip("\n"))  # whole, written by something that ends without a newline
    assert len(read_video_landmarks(unended)[1]) == 12
    broken = tmp_path / "broken.jsonl"
    broken.write_text(text.replace('"frame": 3', '"frame": 3,,', 1))
    with pytest.raises(ValueError, match="broken.jsonl: line 5 is not JSON"):
        read_video_landmarks(broken)
    headless = tmp_path / "headless.jsonl"
    headless.write_text("{}\n")
    for path, message in ((headless, "headless.jsonl: no header line"), (clip, "pan.mp4: not a text file")):
        with pytest.raises(ValueError, match=message):
            read_video_landmarks(path)


def test_run_on_video_refuses_outputs_it_cannot_or_must_not_write_before_any_work(data_dir, tmp_path):
    clip = write_clip(tmp_path / "pan.mp4", pan_frames(data_dir, PHOTOS[0], 3)[0])
    before = clip.read_bytes()
    (tmp_path / "folder.mp4").mkdir()
    for out, message in ((clip, "the video being read"), (tmp_path / "pan.jsonl", "video file name"),
                         (tmp_path / "noext", "video file name"), (tmp_path / "folder.mp4", "video file name")):
        with pytest.raises(ValueError, match=message):
            run_on_video(None, clip, out)
    with pytest.raises(ValueError, match="would be one file"):
        run_on_video(None, clip, tmp_path / "o.mp4", points_path=tmp_path / "o.mp4")
    with pytest.raises(ValueError, match="max_frames must be at least 1"):
        run_on_video(None, clip, tmp_path / "o.mp4", max_frames=0)
    assert clip.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["folder.mp4", "pan.mp4"]


def test_a_killed_run_keeps_the_earlier_overlay_and_every_finished_frame(data_dir, tmp_path):
    """SIGKILL while the 60-frame clip runs: the overlay of an earlier run stays as it was (the new one
    was going into a .partial file), and the points file holds whole frames from 0 on."""
    clip = write_clip(tmp_path / "long.mp4", pan_frames(data_dir, PHOTOS[0], 60)[0])
    out = tmp_path / "out" / "long.mp4"
    run_on_video(None, clip, out, max_frames=2)
    earlier = out.read_bytes()
    script = ("import sys; from facelandmarks.inference.video import run_on_video; "
              "run_on_video(None, sys.argv[1], sys.argv[2], redetect_every=1)")
    child = subprocess.Popen([sys.executable, "-c", script, str(clip), str(out)])
    points = out.with_suffix(".jsonl")
    deadline = time.time() + 120
    while time.time() < deadline and child.poll() is None and len(points.read_text().splitlines()) < 6:
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    assert child.wait() == -signal.SIGKILL, "the run ended before the kill"  # a crash is not a kill survived
    assert out.read_bytes() == earlier
    header, per_frame = read_video_landmarks(points)
    assert header["num_points"] == 68 and 5 <= len(per_frame) < 60
    assert [f["frame"] for f in per_frame] == list(range(len(per_frame)))


def test_evaluate_video_writes_the_points_file_and_no_smooth_reaches_it(data_dir, tmp_path, capsys):
    from facelandmarks.cli import evaluate

    clip = write_clip(tmp_path / "talk.mp4", pan_frames(data_dir, PHOTOS[1], 4)[0], fps=30)
    assert evaluate.main(["--video", str(clip), "--out", str(tmp_path / "out" / "talk.mp4"), "--no-smooth"]) == 0
    assert f"points in {tmp_path / 'out' / 'talk.jsonl'}" in capsys.readouterr().out
    header, per_frame = read_video_landmarks(tmp_path / "out" / "talk.jsonl")
    assert header["smooth"] is False and header["fps"] == 30.0 and len(per_frame) == 4
    assert all(len(f["faces"]) == 1 for f in per_frame)


def test_evaluate_video_counts_one_frame_and_one_face_in_the_singular(data_dir, tmp_path, capsys):
    """A one-frame clip (or a photo given to --video) said '1 frames, 1 faces, ... (detector on 1 frames, ...'."""
    from facelandmarks.cli import evaluate

    clip = write_clip(tmp_path / "still.mp4", pan_frames(data_dir, PHOTOS[1], 1)[0])
    assert evaluate.main(["--video", str(clip), "--out", str(tmp_path / "still_out.mp4")]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert line.startswith("1 frame, 1 face, ") and "(detector on 1 frame, tracking on 0, 0 faces the " in line, line


def test_the_tracker_takes_every_frame_as_predict_takes_a_photo(predictor, data_dir):
    """RGBA frames (a PNG sequence) were detected on the first frame and then failed on the first tracked one with
    'cannot feed 4-channel images to a 3-channel model'; a float frame after uint8 ones was taken in silence while
    tracked (refused only when it reached the detector)."""
    frames, _ = pan_frames(data_dir, PHOTOS[1], 4)
    rgba = [np.dstack([f, np.full(f.shape[:2], 255, np.uint8)]) for f in frames]
    tracker, plain = FaceTracker(predictor, 10, smooth=False), FaceTracker(predictor, 10, smooth=False)
    for with_alpha, rgb in zip(rgba, frames):
        got, want = tracker.update(with_alpha), plain.update(rgb)
        assert len(got) == len(want) == 1 and np.allclose(got[0].points, want[0].points)
    assert tracker.tracked == 3
    with pytest.raises(ValueError, match="^expected a uint8 image, got float32"):
        tracker.update(frames[0].astype(np.float32))
    assert tracker.frames == 4


def read_rgb_frames(path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while (frame := capture.read()[1]) is not None:
        frames.append(np.ascontiguousarray(frame[..., ::-1]))
    capture.release()
    return frames


def test_evaluate_video_align_writes_each_faces_upright_chips(predictor, data_dir, tmp_path, capsys):
    """--video --align on Warren Buffett's 12 YouTube68 frames (four videos, so cuts and new tracks): one video
    per track in the points file, SIZE x SIZE, a chip for each frame that lists the track; each chip is the
    clip's frame aligned by the (smoothed) points the overlay drew (mp4v leaves 2.5-3.5 grey levels between
    them; points 1 px off, or the overlay's dots in the chip, give 7-8), and the model, run on the chip
    itself, finds the eyes where the template puts them (measured 5 Dec: at most 3.2 px, 12 % of the template's
    eye distance, 1.3 px on average)."""
    from facelandmarks.cli import evaluate

    clip = write_clip(tmp_path / "buffett.mp4", youtube_frames(data_dir)[0])
    out, size, padding = tmp_path / "out" / "buffett_landmarks.mp4", 128, 0.25
    assert evaluate.main(["--video", str(clip), "--out", str(out), "--align", str(size), "--align-padding",
                          str(padding)]) == 0
    header, lines = read_video_landmarks(out.with_suffix(".jsonl"))
    assert header["align"] == {"size": size, "padding": padding} and len(lines) == 12
    tracks = sorted({face["track_id"] for line in lines for face in line["faces"]})
    assert len(tracks) >= 3, "the cuts between the four videos start new tracks"
    assert f"aligned faces in {', '.join(str(aligned_path(out, t)) for t in tracks)}" in capsys.readouterr().out
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(
        [out.name, out.with_suffix(".jsonl").name] + [aligned_path(out, t).name for t in tracks])
    source = read_rgb_frames(clip)
    eyes_at = template("ibug68", size, padding)[1][:2]
    eye_distance = float(np.linalg.norm(eyes_at[1] - eyes_at[0]))
    errors = []
    for track in tracks:
        chips = read_rgb_frames(aligned_path(out, track))
        listed = [(t, face) for t, line in enumerate(lines) for face in line["faces"] if face["track_id"] == track]
        assert len(chips) == len(listed) and all(chip.shape == (size, size, 3) for chip in chips)
        for chip, (t, face) in zip(chips, listed):
            expected = align_face(source[t], face["points"], "ibug68", size, padding).image
            assert np.abs(chip.astype(float) - expected).mean() < 5, f"track {track}, frame {t}: not the aligned frame"
            found = predictor.detect_and_predict(chip)
            assert len(found) == 1, f"track {track}, frame {t}: {len(found)} faces in the chip"
            eyes = np.stack([found[0].points[36:42].mean(axis=0), found[0].points[42:48].mean(axis=0)])
            errors.append(np.linalg.norm(eyes - eyes_at, axis=1) / eye_distance)
    assert np.max(errors) < 0.2 and np.mean(errors) < 0.1, f"eyes off the template by {np.round(errors, 3).tolist()}"


def test_evaluate_video_align_without_a_face_says_no_aligned_faces(predictor, tmp_path, capsys):
    """A clip without a face under --align: the summary said 'aligned faces in none (no face found)'."""
    from facelandmarks.cli import evaluate

    clip = write_clip(tmp_path / "grey.mp4", [np.full((96, 128, 3), 120, np.uint8)] * 3)
    out = tmp_path / "out" / "grey_landmarks.mp4"
    assert evaluate.main(["--video", str(clip), "--out", str(out), "--align", "64"]) == 0
    said = capsys.readouterr().out
    assert "0 faces" in said and ", no aligned faces (no face found)" in said and "aligned faces in" not in said


class FakeCamera:
    """What OpenCV's capture of a camera gives, from frames in memory: a frame per read at the camera's pace, no frame
    count and no container times, the rate its driver reports (0 where it reports none). After the frames the camera
    is unplugged (read fails) or, with ``ctrl_c``, the user presses Ctrl-C during the next read, as one stops a camera."""

    def __init__(self, frames, fps, interval=0.02, ctrl_c=False):
        self.frames, self.fps, self.interval, self.ctrl_c, self.given = frames, fps, interval, ctrl_c, 0

    def isOpened(self):  # noqa: N802 (OpenCV's name)
        return True

    def get(self, prop):
        return {cv2.CAP_PROP_FPS: self.fps, cv2.CAP_PROP_FRAME_COUNT: -1.0}.get(prop, 0.0)

    def read(self):
        time.sleep(self.interval)
        if self.given == len(self.frames):
            if self.ctrl_c:
                raise KeyboardInterrupt  # where Python's SIGINT handler raises it
            return False, None
        self.given += 1
        return True, np.ascontiguousarray(self.frames[self.given - 1][..., ::-1])

    def release(self):
        pass


def test_a_camera_is_marked_frame_by_frame_timed_by_the_clock_until_unplugged_or_stopped(data_dir, tmp_path, capsys,
                                                                                        monkeypatch):
    """``--video 0`` reads a camera: frames timed by the wall clock (a camera gives no times), no frame count to check
    against, the default outputs named after it; a camera reporting no frame rate gets the assumed one, said in one
    line; Ctrl-C, the way a camera run ends, leaves a playable overlay of every frame the points list."""
    from facelandmarks.cli import evaluate
    from facelandmarks.inference.video_files import ASSUMED_FPS

    frames, opened, real = pan_frames(data_dir, PHOTOS[0], 6)[0], [], cv2.VideoCapture
    cameras = {1: FakeCamera(frames, fps=0.0), 2: FakeCamera(frames[:3], fps=30.0, ctrl_c=True)}

    def capture(source, *args):
        if isinstance(source, int):
            opened.append(source)
            return cameras.get(source) or type("Closed", (), {"isOpened": lambda self: False})()
        return real(source, *args)

    monkeypatch.setattr(cv2, "VideoCapture", capture)
    monkeypatch.chdir(tmp_path)
    assert evaluate.main(["--video", "1"]) == 0
    said = capsys.readouterr()
    assert said.out.startswith("6 frames, 6 faces, ") and "-> out/camera1_landmarks.mp4, points in out/camera1_landmarks.jsonl" \
        in said.out, said.out
    assert said.err.strip() == (f"evaluate.py: note: camera 1: the frame rate it gives, 0 frames/s, is not a plausible one "
                                f"(1-240 frames/s), so taken as unknown: its frames are timed by the clock; the overlay is "
                                f"written at an assumed {ASSUMED_FPS:g} frames/s (the points file's header: fps_assumed)")
    header, per_frame = read_video_landmarks(tmp_path / "out" / "camera1_landmarks.jsonl")
    assert (header["source"], header["clock"], header["fps_assumed"], header["fps"]) == ("1", "wall", True, ASSUMED_FPS)
    times = [frame["time"] for frame in per_frame]
    # each frame read 0.02 s after the one before at least: its own time, not frame number / rate (0.04 s apart)
    assert times[0] >= 0.0199 and all(later - earlier >= 0.0199 for earlier, later in zip(times, times[1:])), times
    assert not any(frame.get("time_estimated") for frame in per_frame)
    assert [len(frame["faces"]) for frame in per_frame] == [1] * 6
    assert len(read_rgb_frames(tmp_path / "out" / "camera1_landmarks.mp4")) == 6
    # stopped with Ctrl-C after 3 frames: its line and status, an overlay of the 3 frames, nothing partial left
    assert evaluate.main(["--video", "2", "--out", str(tmp_path / "stopped.mp4")]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == "evaluate.py: interrupted"
    header, per_frame = read_video_landmarks(tmp_path / "stopped.jsonl")
    assert header["fps_assumed"] is False and header["fps"] == 30.0 and len(per_frame) == 3
    assert len(read_rgb_frames(tmp_path / "stopped.mp4")) == 3 and not list(tmp_path.glob("*.partial*"))
    # a camera that does not open: one line naming it, status 2
    assert evaluate.main(["--video", "3"]) == 2
    assert capsys.readouterr().err.strip() == "evaluate.py: 3: cannot open camera"
    assert opened == [1, 2, 3]


def test_a_stop_while_a_frame_is_written_leaves_it_in_every_file_or_in_none(data_dir, tmp_path, monkeypatch):
    """SIGTERM between a frame's line in the points file and the frame in the overlay left the points file a frame
    longer than the overlay (11 frames listed, 10 in the video: the clean-clone CI at 8e252d5). A real Ctrl-C now,
    while the third frame's points are drawn: the stop waits until the frame is in every file, then ends the run."""
    from facelandmarks import drawing

    clip = write_clip(tmp_path / "pan.mp4", pan_frames(data_dir, PHOTOS[0], 6)[0])
    draw, drawn = drawing.draw_points, []

    def drawn_with_a_stop(*args, **kwargs):
        drawn.append(1)
        if len(drawn) == 3:
            os.kill(os.getpid(), signal.SIGINT)  # Python runs its handler at once, here in the main thread
        return draw(*args, **kwargs)

    monkeypatch.setattr(drawing, "draw_points", drawn_with_a_stop)
    out = tmp_path / "out" / "pan_landmarks.mp4"
    with pytest.raises(KeyboardInterrupt):
        run_on_video(None, clip, out, align=(64, 0.25))
    assert len(drawn) == 3
    _, per_frame = read_video_landmarks(out.with_suffix(".jsonl"))
    overlay, chips = read_rgb_frames(out), read_rgb_frames(aligned_path(out, 0))
    assert len(per_frame) == len(overlay) == len(chips) == 3 and not list(out.parent.glob("*.partial*"))
