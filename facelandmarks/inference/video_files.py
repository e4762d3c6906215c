"""The files around ``video.run_on_video``: the video it reads (checks, opening, each frame's time, what the container's
header says of its length), the overlay and points files it writes, and reading the points file back.

Frame times (``TimedFrames``): a file's frames carry presentation times, and a variable-rate file (a phone's video
slowing down in low light, a recorder dropping frames; MP4, Matroska and WebM all carry a time per frame) shows them
at uneven intervals, so frame number / fps is the wrong time there, and the wrong clock for the smoothing. OpenCV
gives the container's time as ``CAP_PROP_POS_MSEC``; right after ``read()`` it is the time of the frame just read
(0 for the first, measured with OpenCV 4.14's FFmpeg backend on AVI, MP4 and Matroska files:
``tests/unit/test_video_times.py``; also where frames are stored out of display order, as a phone's H.264 stores its
B-frames: OpenCV returns them in display order, each with its own time, checked on MPEG-2 with B-frames in MP4, MOV
and Matroska, this OpenCV having no H.264 encoder), from the stream's start. An AVI stores no display times: for MJPG,
MPEG-4 and XviD AVIs OpenCV's are frame number / rate, but for MPEG-1 or MPEG-2 in an AVI (a decoder that returns
each frame a packet late) each frame gets the next one's time (MPEG-2: 40, 80, ... ms at 25 frames/s; MPEG-1: 0, 80,
120, ...) and the last frame 0 (measured 7 Dec 2026). So an AVI's times are taken only where its first two frames are
0 and one frame (1 / rate) apart; otherwise it is timed at frame number / rate, which is what an AVI's times count.
A file's times are taken when its first frames have usable ones (finite, from 0, increasing within the
first ``READ_AHEAD`` frames: some muxers, with an edit list, give the first two one time, 0, 0, 40 ms): a file without
times (OpenCV then gives 0 for every frame) keeps frame number / fps. A camera's frames are timed by the wall clock.

The frame rate (``CAP_PROP_FPS``) is the header's where the file has one, else FFmpeg's guess, which can be absurd: 1000
for a Matroska file of one or two frames or without times (its time scale), 0 where it has none, or what a broken
AVI header says (its times are then frame number / that rate too). A rate outside ``FPS_RANGE`` is taken as unknown
and ``ASSUMED_FPS`` used instead, for the frames / fps clock, the overlay's rate (mp4v's writer does not open at 90000
or 0.001 frames/s; at infinity it had not returned after 10 minutes) and a repeated time's step.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from pathlib import Path

import cv2
import numpy as np

from facelandmarks.runtime import filtered_fds

OVERLAY_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v")  # containers OpenCV writes the overlay's mp4v frames into
CLOCKS = ("container", "frames/fps", "wall")  # where TimedFrames takes a frame's time from (the points file's "clock")
FPS_RANGE = (1.0, 240.0)  # frames/s a video's header may be taken at (240: phones' slow motion); others are unknown
ASSUMED_FPS = 25.0  # the rate of a video whose rate is unknown
READ_AHEAD = 4  # the frames a file's clock is decided on at most (the first increase of its times is looked for)


def partial_path(path) -> Path:
    """Where a video is written until it is finished (mp4 writes its index last): ``clip.mp4`` -> ``clip.partial.mp4``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.partial{path.suffix}")


def video_outputs(source, out_path, points_path=None) -> tuple[Path, Path]:
    """(overlay video, points file) for ``run_on_video``, checked before any work: ValueError naming
    the path when the video is not a video file name, is a folder, is the source, or is the points file."""
    out_path = Path(out_path)
    points_path = out_path.with_suffix(".jsonl") if points_path is None else Path(points_path)
    if out_path.suffix.lower() not in OVERLAY_SUFFIXES or out_path.is_dir():
        raise ValueError(f"{out_path}: the overlay needs a video file name ending in {', '.join(OVERLAY_SUFFIXES)}")
    if not str(source).isdigit() and Path(source).exists() and out_path.resolve() == Path(source).resolve():
        raise ValueError(f"{out_path}: that is the video being read; give another --out")
    if points_path.resolve() == out_path.resolve():
        raise ValueError(f"{out_path}: the overlay video and the points file would be one file")
    return out_path, points_path


def check_source(source) -> bool:
    """Whether ``source`` is a camera index; a missing video file or a folder is an error naming it."""
    camera = str(source).isdigit()
    if not camera and Path(source).is_dir():
        raise IsADirectoryError(f"{source}: a folder, not a video file")
    if not camera and not Path(source).is_file():
        raise FileNotFoundError(f"{source}: no such video file")
    return camera


def open_capture(source) -> tuple[cv2.VideoCapture, bool]:
    """(an open capture of a video file or camera index, whether it is a camera); FileNotFoundError or OSError in
    one line, with what FFmpeg said of a file (its lines and OpenCV's camera warnings are kept off stderr)."""
    camera = check_source(source)
    level, said = cv2.utils.logging.getLogLevel(), []
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        with filtered_fds((2,), keep=said.append):  # each line kept in ``said``, none passed on
            capture = cv2.VideoCapture(int(source) if camera else str(source))
    finally:
        cv2.utils.logging.setLogLevel(level)
    if not capture.isOpened():
        reasons = [r for r in (re.sub(r"^\[[^]]*\]", "", line).strip() for line in said) if r]  # "[mov @ 0x..] why"
        why = f" (FFmpeg: {reasons[-1]})" if reasons and not camera else ""
        raise OSError(f"{source}: cannot open {'camera' if camera else 'video'}{why}")
    return capture, camera


class TimedFrames:
    """The frames of an open capture, in order, each with its time in seconds (the module docstring).

    ``fps`` is the rate the capture gives (``CAP_PROP_FPS``), kept as ``file_fps``; outside ``FPS_RANGE`` (or not a
    number) it is unknown: ``fps_assumed`` is True and ``fps`` is ``ASSUMED_FPS``. ``read()`` returns (BGR frame,
    time) or None at the end. ``clock`` is where the times come from (``CLOCKS``): "wall" for a camera (seconds since
    this object was made), for a file "container" or "frames/fps", known once the first frame is read (frames are
    read ahead to decide, ``_decide``; times 1 / an unknown rate apart only count frames at it, as an AVI's do, and are
    not taken).
    A time not after the last one (a container's repeated or missing time) is the last plus 1 / ``fps``, as
    ``FaceTracker.update`` would take it; ``estimated`` says whether the frame just returned got such a time.
    ``frames`` counts the frames returned; ``end_ms`` is where the last of them ends by the container's times, its
    time plus the interval before it (twice its time for one frame), whichever clock the times came from.
    ``avi``: the file is an AVI (``is_avi``), whose times are taken only if its first two are 0 and 1 / rate.
    """

    def __init__(self, capture: cv2.VideoCapture, camera: bool, fps: float, avi: bool = False):
        self.capture, self.camera, self.file_fps, self.avi = capture, camera, float(fps), avi
        self.fps_assumed = not FPS_RANGE[0] <= self.file_fps <= FPS_RANGE[1]  # also NaN
        self.fps = ASSUMED_FPS if self.fps_assumed else self.file_fps
        self.clock = "wall" if camera else None
        self.estimated = False
        self.frames = 0
        self._ahead: list = []  # the frames read ahead, in order, (bgr, ms) or None for the end
        self._shown = (0.0, 0.0)  # the container's times of the last two frames returned (ms)
        self._last: float | None = None
        self._start = time.perf_counter()

    def _next(self) -> tuple[np.ndarray, float] | None:
        """The next frame from the capture and its container time (ms: the frame just read's), or None."""
        ok, bgr = self.capture.read()
        return (bgr, self.capture.get(cv2.CAP_PROP_POS_MSEC)) if ok else None

    def _decide(self, ms: float) -> str:
        """The clock of a file whose first frame's time is ``ms``: frames are read ahead (into ``_ahead``) until one's
        time differs from it, ``READ_AHEAD`` frames in all at most (a muxer's edit list can repeat the first time)."""
        times = [ms]
        while len(times) < READ_AHEAD and times[-1] == ms and (not self._ahead or self._ahead[-1] is not None):
            self._ahead.append(self._next())
            times += [self._ahead[-1][1]] if self._ahead[-1] else []
        usable = all(math.isfinite(t) and t >= 0 for t in times) and (len(times) == 1 or times[-1] > ms)
        step = 1e3 / self.file_fps if self.file_fps else math.inf  # ms from frame to frame at the capture's rate
        counted = self.fps_assumed and len(times) == 2 and math.isclose(times[1] - times[0], step, rel_tol=0.01)
        late = self.avi and not (times[0] == 0 and (len(times) == 1 or math.isclose(times[1], step, rel_tol=0.01)))
        return "container" if usable and not counted and not late else "frames/fps"

    def read(self) -> tuple[np.ndarray, float] | None:
        """The next frame (BGR, as read) and its time in seconds; None at the end."""
        got = self._ahead.pop(0) if self._ahead else self._next()
        if got is None:
            return None
        bgr, ms = got
        if self.clock is None:
            self.clock = self._decide(ms)
        if self.clock == "wall":
            t = time.perf_counter() - self._start
        else:
            t = ms / 1e3 if self.clock == "container" else self.frames / self.fps
        self.estimated = self._last is not None and not t > self._last  # also NaN
        if self.estimated:
            t = self._last + 1 / self.fps
        self._last, self._shown = t, (self._shown[1], ms)
        self.frames += 1
        return bgr, t

    @property
    def end_ms(self) -> float:
        """Where the last frame returned ends (ms), by the container's times (the cut-short check's)."""
        return 2 * self._shown[1] - self._shown[0]


def is_avi(path) -> bool:
    """Whether a file is an AVI (RIFF of form ``AVI ``), by its first bytes; False for a camera index or no file."""
    try:
        with open(path, "rb") as file:
            head = file.read(12)
    except OSError:
        return False
    return head[:4] == b"RIFF" and head[8:12] == b"AVI "


def counts_its_frames(path) -> bool:
    """Whether a video file's header counts its frames, the count OpenCV then gives: an AVI, an MP4 or MOV (not
    fragmented). Others (Matroska, WebM, a fragmented MP4, MPEG-TS) list none, and OpenCV's is their duration x
    frame rate, the duration the longest track's: a sound track running on, or a varying rate, makes it more."""
    if is_avi(path):
        return True
    with open(path, "rb") as file:
        boxes = set()
        while len(box := file.read(8)) == 8 and (size := int.from_bytes(box[:4], "big")) != 0:  # 0: to the end
            size = int.from_bytes(file.read(8), "big") - 8 if size == 1 else size  # a 64-bit size follows
            if size < 8:
                return False  # not ISO-BMFF boxes
            boxes.add(box[4:])
            file.seek(size - 8, os.SEEK_CUR)
    return b"moov" in boxes and b"moof" not in boxes  # an MP4 or MOV's sample tables, not fragments


def read_video_landmarks(path) -> tuple[dict, list[dict]]:
    """(header, frames) of a ``run_on_video`` points file.

    Each frame is ``{"frame", "time", "detected", "faces"}`` (and ``"time_estimated": True`` where the source's time
    was not after the last frame's, ``TimedFrames.estimated``); each face as ``TrackedFace.to_json``
    writes it, with ``points`` (K, 2), ``detection`` and ``crop_box`` as numpy arrays.  A last line
    cut short (the writer was killed mid-line) is left out; any other bad line, or a file that is
    not text, raises ValueError naming the file (and the line).
    """
    try:
        lines = Path(path).read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text file, so not a points file written by run_on_video") from None
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append((number, json.loads(line)))
        except json.JSONDecodeError as err:
            if number == len(lines) or not line:  # what follows the last newline: "" or a line a kill cut short
                continue
            raise ValueError(f"{path}: line {number} is not JSON ({err.msg})") from None
    if not records or not isinstance(records[0][1], dict) or "scheme" not in records[0][1]:
        raise ValueError(f"{path}: no header line: not a points file written by run_on_video")
    for number, record in records[1:]:
        try:
            for face in record["faces"]:
                for key in ("points", "detection", "crop_box"):
                    face[key] = np.asarray(face[key], np.float64)
        except (KeyError, TypeError, ValueError) as err:
            what = f"no {err.args[0]!r}" if isinstance(err, KeyError) else "not an object of faces with points"
            raise ValueError(f"{path}: line {number} is not a frame of run_on_video's ({what})") from None
    return records[0][1], [record for _, record in records[1:]]
