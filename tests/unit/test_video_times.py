"""The times a video's points file gives its frames, and the smoothing clock: a file's frames are shown at the times
its container gives them (a phone's variable-rate MP4 or MKV slows down in low light), not at frame number / fps.
The clips are real files OpenCV reads with FFmpeg: MJPG AVIs it writes, Matroska files of MJPEG frames at chosen
times (``write_mkv``), and MPEG-2 with B-frames, stored out of display order as a phone's H.264 stores them."""

import re
import struct
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from facelandmarks.inference import video
from facelandmarks.inference.predictor import Predictor
from facelandmarks.inference.video import FaceTracker, run_on_video
from facelandmarks.inference.video_files import TimedFrames, open_capture, read_video_landmarks
from tests.unit.test_video import SquareDetector, SquareModel, frame, read_frames, square_clip, write_mkv

VARIED_MS = [0, 40, 120, 130, 300, 340, 600, 640]  # 25 frames/s, then 8, 100, 6, 25, 4, 25


@pytest.fixture
def squares(monkeypatch):
    """The square "model" in place of the shipped one, for ``run_on_video``."""
    monkeypatch.setattr(video.Predictor, "load", lambda *a, **k: Predictor(SquareModel(), "ibug68", detector=SquareDetector()))


def varied_clip(path, times_ms=VARIED_MS):
    """A Matroska file of the square moving 4 px a frame, shown at ``times_ms``."""
    write_mkv(path, [frame((20 + 4 * i, 30)) for i in range(len(times_ms))], times_ms, times_ms[-1] + 40)
    return path


def container_times(path) -> list[float]:
    """CAP_PROP_POS_MSEC right after each read(), in ms."""
    capture, times = cv2.VideoCapture(str(path)), []
    while capture.read()[0]:
        times.append(capture.get(cv2.CAP_PROP_POS_MSEC))
    capture.release()
    return times


def test_opencv_gives_the_time_of_the_frame_just_read_for_avi_mp4_and_mkv(tmp_path):
    """What run_on_video relies on: right after read(), POS_MSEC is the frame just read's time (0 for the first), not
    the next frame's, on the FFmpeg backend, for a constant-rate AVI and MP4 and a variable-rate Matroska file."""
    avi = square_clip(tmp_path / "clip.avi", 4)  # 20 frames/s
    mp4 = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(mp4), cv2.VideoWriter_fourcc(*"mp4v"), 20, (200, 120))
    for image in read_frames(avi):
        writer.write(image)
    writer.release()
    for clip in (avi, mp4):
        assert cv2.VideoCapture(str(clip)).getBackendName() == "FFMPEG"
        assert container_times(clip) == pytest.approx([0, 50, 100, 150])
    assert container_times(varied_clip(tmp_path / "varied.mkv")) == pytest.approx(VARIED_MS)


def test_a_variable_rate_files_points_carry_its_frames_times_and_the_smoother_gets_them(tmp_path, squares):
    """run_on_video wrote frame / fps (the header's 23.25 frames/s, FFmpeg's guess) as each frame's time; the points file now
    holds the container's times, says so in its header, and the points are smoothed over those intervals."""
    clip = varied_clip(tmp_path / "varied.mkv")
    run_on_video(tmp_path, clip, tmp_path / "out.mp4", redetect_every=3)
    header, lines = read_video_landmarks(tmp_path / "out.jsonl")
    assert [line["time"] for line in lines] == pytest.approx(np.array(VARIED_MS) / 1e3, abs=1e-3)
    assert header["clock"] == "container"
    written = np.array([line["faces"][0]["points"] for line in lines])
    for clock, times in (("container", np.array(VARIED_MS) / 1e3), ("frames/fps", np.arange(len(lines)) / header["fps"])):
        tracker = FaceTracker(Predictor(SquareModel(), "ibug68", detector=SquareDetector()), 3)
        smoothed = np.array([tracker.update(image[..., ::-1], t)[0].points for image, t in zip(read_frames(clip), times)])
        off = np.abs(written - smoothed).max()  # the file's points are rounded to 0.01 px
        assert off < 0.006 if clock == "container" else off > 0.1, (clock, off)
    assert len(read_frames(tmp_path / "out.mp4")) == len(VARIED_MS)  # the overlay: every frame, at a constant rate


def test_a_constant_rate_avi_keeps_frame_over_fps(tmp_path, squares):
    clip = square_clip(tmp_path / "clip.avi", 5)
    run_on_video(tmp_path, clip, tmp_path / "out.mp4")
    header, lines = read_video_landmarks(tmp_path / "out.jsonl")
    assert (header["clock"], header["fps"]) == ("container", 20.0)
    assert [line["time"] for line in lines] == pytest.approx(np.arange(5) / 20, abs=1e-3)


def test_a_file_without_usable_times_falls_back_to_frame_over_fps(tmp_path, squares):
    """A Matroska file whose frames all carry time 0 (OpenCV gives 0 for each): no usable clock, so frame / fps."""
    clip = varied_clip(tmp_path / "still.mkv", [0] * 5)
    assert container_times(clip) == [0] * 5
    run_on_video(tmp_path, clip, tmp_path / "out.mp4")
    header, lines = read_video_landmarks(tmp_path / "out.jsonl")
    assert header["clock"] == "frames/fps"
    assert (header["fps"], header["fps_assumed"], header["file_fps"]) == (25, True, 1000)  # times were 1 ms apart
    assert [line["time"] for line in lines] == pytest.approx(np.arange(5) / 25, abs=1e-3)


def test_a_later_time_not_after_the_last_counts_one_frame_later(tmp_path):
    """Times read ahead decide the clock at the first frame; a later repeat (a muxer's glitch) is the last time plus
    1 / fps, as FaceTracker.update takes it, and the frames' own container times stay for the cut-short check."""
    clip = varied_clip(tmp_path / "glitch.mkv", [0, 50, 100, 100, 200])
    capture, _ = open_capture(clip)
    frames = TimedFrames(capture, False, 20.0)
    times = []
    while (got := frames.read()) is not None:
        times.append(got[1])
        assert frames.clock == "container"
    assert times == pytest.approx([0, 0.05, 0.1, 0.15, 0.2])
    assert frames.end_ms == pytest.approx(300)  # the last frame's time plus the interval before it


@pytest.mark.parametrize("repeats", [1, 2])
def test_a_file_whose_first_time_repeats_keeps_its_times(tmp_path, squares, repeats):
    """Some muxers (an edit list) give the first frames one time: 0, 0, 200, 240, ... ms. The clock was decided on the
    first two frames, so such a file was timed at frame / fps throughout, its variable rate lost. Up to 4 frames are
    read ahead to find the first increase: the file's times stay, the repeated ones are estimated (as later repeats)."""
    tail = [200, 240, 250, 400, 440]
    times = [0] * (repeats + 1) + tail
    clip = varied_clip(tmp_path / "start.mkv", times)
    assert container_times(clip) == times
    run_on_video(tmp_path, clip, tmp_path / "out.mp4", redetect_every=3)
    header, lines = read_video_landmarks(tmp_path / "out.jsonl")
    assert header["clock"] == "container" and not header["fps_assumed"]
    expected = [k / header["fps"] for k in range(repeats + 1)] + [t / 1e3 for t in tail]  # a repeat: the last + 1 / fps
    assert [line["time"] for line in lines] == pytest.approx(expected, abs=1e-4)
    assert [line["frame"] for line in lines if "time_estimated" in line] == list(range(1, repeats + 1))
    result = run_on_video(tmp_path, clip, tmp_path / "out.mp4", max_frames=1)  # the frames read ahead are not written
    assert (result["frames"], [line["time"] for line in read_video_landmarks(tmp_path / "out.jsonl")[1]]) == (1, [0.0])


def test_the_clock_is_decided_on_at_most_4_frames(tmp_path):
    """Times that do not increase within the first 4 frames (a file without times gives 0 for all) are not taken."""
    for times, clock in (([0, 0, 0, 40, 80], "container"), ([0, 0, 0, 0, 40], "frames/fps"), ([0, 0], "frames/fps")):
        frames = TimedFrames(open_capture(varied_clip(tmp_path / "start.mkv", times))[0], False, 25.0)
        got = [frames.read()[1] for _ in times]
        assert (frames.clock, frames.read(), frames.frames) == (clock, None, len(times)), times
        assert got == pytest.approx([0.04 * k for k in range(len(times))])


def test_max_frames_leaves_out_the_frame_read_ahead(tmp_path, squares):
    clip = varied_clip(tmp_path / "varied.mkv")
    result = run_on_video(tmp_path, clip, tmp_path / "out.mp4", max_frames=1)
    header, lines = read_video_landmarks(tmp_path / "out.jsonl")
    assert (result["frames"], [line["time"] for line in lines]) == (1, [0.0])
    run_on_video(tmp_path, clip, tmp_path / "out.mp4", max_frames=3)
    assert [line["time"] for line in read_video_landmarks(tmp_path / "out.jsonl")[1]] == pytest.approx([0, 0.04, 0.12])


def test_a_variable_rate_file_cut_short_gets_the_note_and_its_frames_times(tmp_path, squares, capsys):
    """A Matroska file lists no frame count, so one cut short is a note (status 0), as before; the frames read keep
    their container times."""
    from facelandmarks.cli import evaluate

    times = [round(i * 1000 / 30) for i in range(20)] + [667 + 100 * i for i in range(20)]  # 30 frames/s, then 10
    whole = tmp_path / "whole.mkv"
    write_mkv(whole, [frame((20 + 2 * (i % 40), 30)) for i in range(40)], times, 2700)
    data = whole.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[:len(data) * 3 // 5])
    read = len(read_frames(cut))
    assert 20 < read < 36, read
    assert evaluate.main(["--video", str(cut), "--out", str(tmp_path / "out.mp4")]) == 0
    err = capsys.readouterr().err
    assert err.startswith(f"evaluate.py: note: {cut}: {read} frames read, where its duration x frame rate makes "), err
    header, lines = read_video_landmarks(tmp_path / "out.jsonl")
    assert [line["time"] for line in lines] == pytest.approx(np.array(times[:read]) / 1e3, abs=1e-3)
    assert header["clock"] == "container"


def test_a_one_frame_file_is_one_frame_at_time_0(tmp_path, squares, capsys):
    """A Matroska file of one frame shown for 740 ms (OpenCV makes its rate 1000 frames/s, its count 740): the frame
    is at 0 s by the container, and the note counts '1 frame'; a note before it says the rate is taken as unknown,
    named as evaluate.py's other lines are (it had no "evaluate.py:")."""
    from facelandmarks.cli import evaluate

    one = tmp_path / "one.mkv"
    write_mkv(one, [frame((20, 30))], [0], 740)
    assert evaluate.main(["--video", str(one), "--out", str(tmp_path / "out.mp4")]) == 0
    rate, read = capsys.readouterr().err.splitlines()
    assert rate.startswith(f"evaluate.py: note: {one}: its frame rate as OpenCV reads it, 1000 frames/s, is not a plausible one"), rate
    assert read.startswith(f"evaluate.py: note: {one}: 1 frame read, where its duration x frame rate makes 740 "), read
    header, lines = read_video_landmarks(tmp_path / "out.jsonl")
    assert [line["time"] for line in lines] == [0.0] and header["clock"] == "container"
    assert (header["fps"], header["fps_assumed"], header["file_fps"]) == (25, True, 1000)  # the overlay's rate was 1000


def avi_at_rate(path, count: int, rate: float):
    """``square_clip``'s MJPG AVI with its header's rate patched (the stream's dwRate / dwScale, the file's
    dwMicroSecPerFrame): FFmpeg then gives that rate, and times the frames at frame number / rate."""
    data = bytearray(square_clip(path, count).read_bytes())
    stream, whole = data.find(b"strh"), data.find(b"avih")
    scale = 1 if rate >= 1 else round(1 / rate)
    struct.pack_into("<II", data, stream + 28, scale, round(rate * scale))
    struct.pack_into("<I", data, whole + 8, round(1e6 / rate))
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("rate", [90000, 1000, 0.001])
def test_a_file_whose_header_gives_an_absurd_rate_is_timed_at_an_assumed_one(tmp_path, squares, capsys, rate):
    """An AVI's header says 90000, 1000 or 0.001 frames/s (FFmpeg's guess for a Matroska file of one or two frames is
    1000 too): its times, frame number / rate, were 0.011 ms or 17 minutes apart, the smoothing ran on them,
    and at 90000 or 0.001 the overlay's writer did not open ('OpenCV cannot write an mp4v video there'). A rate outside
    1-240 frames/s is unknown: frames are timed at an assumed 25 frames/s, which the header and a note say."""
    clip = avi_at_rate(tmp_path / f"rate{rate}.avi", 5, rate)
    capture = cv2.VideoCapture(str(clip))
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(rate) and container_times(clip)[1] == pytest.approx(1e3 / rate)
    run_on_video(tmp_path, clip, tmp_path / "out.mp4")
    header, lines = read_video_landmarks(tmp_path / "out.jsonl")
    assert (header["clock"], header["fps"], header["fps_assumed"]) == ("frames/fps", 25.0, True)
    assert header["file_fps"] == pytest.approx(rate)
    assert [line["time"] for line in lines] == pytest.approx(np.arange(5) / 25)
    overlay = cv2.VideoCapture(str(tmp_path / "out.mp4"))
    assert overlay.get(cv2.CAP_PROP_FPS) == 25 and len(read_frames(tmp_path / "out.mp4")) == 5
    err = capsys.readouterr().err
    assert err == (f"note: {clip}: its frame rate as OpenCV reads it, {rate:g} frames/s, is not a plausible one (1-240 "
                   "frames/s), so taken as unknown: its frames are timed at an assumed 25 frames/s (the points file's "
                   "header: fps_assumed)\n"), err


def test_a_files_own_times_stay_when_its_rate_is_absurd(tmp_path, squares, capsys):
    """A Matroska file of two frames (or one) gets 1000 frames/s from FFmpeg (its time scale): the overlay was written
    at 1000 frames/s. Its frames keep the file's times, and the overlay is written at the assumed 25 frames/s."""
    times = [0, 40]
    clip = varied_clip(tmp_path / "fast.mkv", times)
    capture = cv2.VideoCapture(str(clip))
    assert capture.get(cv2.CAP_PROP_FPS) == 1000
    run_on_video(tmp_path, clip, tmp_path / "out.mp4")
    header, lines = read_video_landmarks(tmp_path / "out.jsonl")
    assert (header["clock"], header["fps"], header["fps_assumed"], header["file_fps"]) == ("container", 25.0, True, 1000)
    assert [line["time"] for line in lines] == pytest.approx(np.array(times) / 1e3)
    assert cv2.VideoCapture(str(tmp_path / "out.mp4")).get(cv2.CAP_PROP_FPS) == 25
    assert capsys.readouterr().err == (f"note: {clip}: its frame rate as OpenCV reads it, 1000 frames/s, is not a plausible "
                                        "one (1-240 frames/s), so taken as unknown: its frames keep the file's times; the overlay "
                                        "is written at an assumed 25 frames/s (the points file's header: fps_assumed)\n")


@pytest.mark.parametrize(("times", "marked"), [([0, 50, 100, 100, 200, 250], [3]), ([0, 50, 100, 80, 110, 250], [3, 4])])
def test_a_frame_whose_time_is_not_the_files_is_marked_and_smoothed_at_that_time(tmp_path, squares, times, marked):
    """A repeated or decreasing container time (in the file's order: FFmpeg gives them as stored) was replaced by the
    previous time + 1 / fps without a word in the points file: a user syncing it with sound or other sensors took it
    for the file's. Such a frame's line now has "time_estimated": true (no other line has the key); the smoother ran
    on the same times (FaceTracker.update, given the file's times, estimates them alike)."""
    clip = varied_clip(tmp_path / "glitch.mkv", times)
    assert container_times(clip) == times
    run_on_video(tmp_path, clip, tmp_path / "out.mp4", redetect_every=3)
    header, lines = read_video_landmarks(tmp_path / "out.jsonl")
    assert header["clock"] == "container" and not header["fps_assumed"]
    step = 1 / header["fps"]
    expected = [0, 0.05, 0.1, 0.1 + step, 0.2 if marked == [3] else 0.1 + 2 * step, 0.25]
    assert [line["time"] for line in lines] == pytest.approx(expected, abs=1e-4)
    assert [line["frame"] for line in lines if "time_estimated" in line] == marked
    assert all(lines[k]["time_estimated"] is True for k in marked)
    written = np.array([line["faces"][0]["points"] for line in lines])
    tracker = FaceTracker(Predictor(SquareModel(), "ibug68", detector=SquareDetector()), 3, fps=header["fps"])
    smoothed = np.array([tracker.update(image[..., ::-1], t / 1e3)[0].points for image, t in zip(read_frames(clip), times)])
    assert np.abs(written - smoothed).max() < 0.006  # the file's points are rounded to 0.01 px


def test_a_camera_is_timed_by_the_wall_clock(tmp_path):
    """A camera's frames are timed by the clock while it runs (its container times mean nothing): TimedFrames with
    camera=True over a file's capture gives each frame the seconds since it was made, measured around each read."""
    clip = square_clip(tmp_path / "clip.avi", 3)
    before = time.perf_counter()
    frames = TimedFrames(cv2.VideoCapture(str(clip)), True, 20.0)
    after = time.perf_counter()
    assert frames.clock == "wall"
    for _ in range(3):
        start = time.perf_counter()
        t = frames.read()[1]
        assert start - after <= t <= time.perf_counter() - before
    assert frames.read() is None


def stored_pictures(data: bytes) -> list[tuple[int, str, bytes]]:
    """The coded pictures of the MPEG-2 video in ``data`` (a raw stream or any container), in the order they are
    stored: (display index, picture type I / P / B, the picture with the sequence and GOP headers before it). A
    picture's display index is its GOP's first plus its temporal reference (the 10 bits after its start code)."""
    marks = [(m.start(), m.group()[3]) for m in re.finditer(b"\x00\x00\x01[\x00\xb3\xb8]", data)]  # picture, sequence, GOP
    starts = [at for k, (at, _) in enumerate(marks) if k == 0 or marks[k - 1][1] == 0]  # headers begin their picture
    pictures, gop = [], 0
    for begin, end in zip(starts, starts[1:] + [len(data)]):
        unit = data[begin:end]
        gop = len(pictures) if b"\x00\x00\x01\xb8" in unit else gop
        at = unit.index(b"\x00\x00\x01\x00") + 4
        pictures.append((gop + (unit[at] << 2 | unit[at + 1] >> 6), "?IPB"[unit[at + 1] >> 3 & 7], unit))
    return pictures


def media_data(data: bytes) -> bytes:
    """The payload of an MP4 or MOV file's mdat box (the coded frames; the sample tables after it hold other bytes)."""
    at = 0
    while at + 8 <= len(data):
        size, kind = int.from_bytes(data[at:at + 4], "big"), data[at + 4:at + 8]
        if kind == b"mdat":
            return data[at + 8:at + size]
        at += size
    raise AssertionError("no mdat box")


def mpeg2_clip(path, count: int, fps: float = 25, codec: str = "mpg2") -> Path:
    """``count`` frames of the square moving 4 px a frame, in MPEG-2 (OpenCV's FFmpeg writer puts two B-frames
    between its reference pictures; this OpenCV has no H.264 encoder), or MPEG-1 with ``codec="mpg1"``; the container
    is the suffix's (.m2v: none)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, (200, 120))
    assert writer.isOpened(), path
    for k in range(count):
        writer.write(frame((20 + 4 * k, 30)))
    writer.release()
    return Path(path)


def square_columns(path) -> list[int]:
    """The square's left edge in each frame OpenCV returns, in its order."""
    return [int(np.argmax(image[40:60].mean(axis=(0, 2)) > 100)) for image in read_frames(path)]


@pytest.mark.parametrize("suffix", [".mp4", ".mov", ".mkv"])
def test_frames_stored_out_of_display_order_come_in_display_order_at_their_times(tmp_path, squares, suffix):
    """What a phone's MP4 does (H.264 with B-frames): frames stored I0 P3 B1 B2 P6 ..., decoded in that order and shown
    in display order. OpenCV returns them in display order, and right after read() POS_MSEC is the frame just
    returned's time, so the points file gives each frame its time. Checked on MPEG-2 with B-frames in three
    containers, at a constant 25 frames/s as OpenCV writes them."""
    clip = mpeg2_clip(tmp_path / f"clip{suffix}", 24)
    stored = stored_pictures(media_data(clip.read_bytes()) if suffix != ".mkv" else clip.read_bytes())
    assert [shown for shown, _, _ in stored][:7] == [0, 3, 1, 2, 6, 4, 5]  # stored out of display order
    assert sorted(shown for shown, _, _ in stored) == list(range(24)) and {kind for _, kind, _ in stored} == set("IPB")
    assert square_columns(clip) == [20 + 4 * k for k in range(24)]  # returned in display order
    assert container_times(clip) == pytest.approx([40 * k for k in range(24)])
    run_on_video(tmp_path, clip, tmp_path / "out.mp4", redetect_every=5)
    header, lines = read_video_landmarks(tmp_path / "out.jsonl")
    assert header["clock"] == "container" and not any("time_estimated" in line for line in lines)
    assert [line["time"] for line in lines] == pytest.approx([0.04 * k for k in range(24)], abs=1e-4)


def test_a_variable_rate_file_with_b_frames_gives_each_frame_its_own_time(tmp_path, squares):
    """The same B-frames in a variable-rate Matroska file (each picture stored with its own display time, as a
    phone's video slowing down in low light): the frames come in display order, each at its own time, and the points
    are smoothed over those intervals."""
    times = [0, 40, 120, 130, 300, 340, 600, 640, 680, 720, 900, 940, 980, 1020, 1100, 1140]
    stored = stored_pictures(mpeg2_clip(tmp_path / "raw.m2v", len(times)).read_bytes())
    assert [shown for shown, _, _ in stored] != sorted(shown for shown, _, _ in stored)
    clip = tmp_path / "varied.mkv"
    write_mkv(clip, [unit for _, _, unit in stored], [times[shown] for shown, _, _ in stored], 1180, codec="V_MPEG2")
    assert square_columns(clip) == [20 + 4 * k for k in range(len(times))]
    assert container_times(clip) == pytest.approx(times)
    run_on_video(tmp_path, clip, tmp_path / "out.mp4", redetect_every=3)
    header, lines = read_video_landmarks(tmp_path / "out.jsonl")
    assert header["clock"] == "container" and not any("time_estimated" in line for line in lines)
    assert [line["time"] for line in lines] == pytest.approx(np.array(times) / 1e3, abs=1e-4)


@pytest.mark.parametrize("codec", ["mpg1", "mpg2"])
def test_an_avi_of_mpeg_video_is_timed_by_its_frame_numbers(tmp_path, squares, codec):
    """MPEG-1 or MPEG-2 in an AVI: OpenCV gives each frame the next one's time (its decoder returns a frame a packet
    late) and the last frame 0. The points file gave frame k the time of frame k + 1 and marked the last estimated;
    an AVI whose first two times are not 0 and one frame apart is now timed at frame number / rate, which is what an
    AVI's times count (an AVI of MJPG keeps the container's: ``test_a_constant_rate_avi_keeps_frame_over_fps``)."""
    clip = mpeg2_clip(tmp_path / "clip.avi", 10, codec=codec)
    assert square_columns(clip) == [20 + 4 * k for k in range(10)]  # the frames come in order
    shown = container_times(clip)
    assert shown[1:-1] == pytest.approx([40 * (k + 1) for k in range(1, 9)]) and shown[-1] == 0  # one frame ahead
    run_on_video(tmp_path, clip, tmp_path / "out.mp4", redetect_every=5)
    header, lines = read_video_landmarks(tmp_path / "out.jsonl")
    assert (header["clock"], header["fps"]) == ("frames/fps", 25.0)
    assert not any("time_estimated" in line for line in lines)
    assert [line["time"] for line in lines] == pytest.approx([0.04 * k for k in range(10)], abs=1e-4)
