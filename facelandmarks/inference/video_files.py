"""The files around ``video.run_on_video``: the video it reads (checks, opening, what the container's header says of
its length), the overlay and points files it writes, and reading the points file back.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import cv2
import numpy as np

from facelandmarks.runtime import filtered_fds

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v")  # containers OpenCV writes mp4v frames into


def partial_path(path) -> Path:
    """Where a video is written until it is finished (mp4 writes its index last): ``clip.mp4`` -> ``clip.partial.mp4``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.partial{path.suffix}")


def video_outputs(source, out_path, points_path=None) -> tuple[Path, Path]:
    """(overlay video, points file) for ``run_on_video``, checked before any work: ValueError naming
    the path when the video is not a video file name, is a folder, is the source, or is the points file."""
    out_path = Path(out_path)
    points_path = out_path.with_suffix(".jsonl") if points_path is None else Path(points_path)
    if out_path.suffix.lower() not in VIDEO_SUFFIXES or out_path.is_dir():
        raise ValueError(f"{out_path}: the overlay needs a video file name ending in {', '.join(VIDEO_SUFFIXES)}")
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


def counts_its_frames(path) -> bool:
    """Whether a video file's header counts its frames, the count OpenCV then gives: an AVI, an MP4 or MOV (not
    fragmented). Others (Matroska, WebM, a fragmented MP4, MPEG-TS) list none, and OpenCV's is their duration x
    frame rate, the duration the longest track's: a sound track running on, or a varying rate, makes it more."""
    with open(path, "rb") as file:
        head, boxes = file.read(12), set()
        if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
            return True
        file.seek(0)
        while len(box := file.read(8)) == 8 and (size := int.from_bytes(box[:4], "big")) != 0:  # 0: to the end
            size = int.from_bytes(file.read(8), "big") - 8 if size == 1 else size  # a 64-bit size follows
            if size < 8:
                return False  # not ISO-BMFF boxes
            boxes.add(box[4:])
            file.seek(size - 8, os.SEEK_CUR)
    return b"moov" in boxes and b"moof" not in boxes  # an MP4 or MOV's sample tables, not fragments


def read_video_landmarks(path) -> tuple[dict, list[dict]]:
    """(header, frames) of a ``run_on_video`` points file.

    Each frame is ``{"frame", "time", "detected", "faces"}``; each face as ``TrackedFace.to_json``
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
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            if number == len(lines) or not line:  # what follows the last newline: "" or a line a kill cut short
                continue
            raise ValueError(f"{path}: line {number} is not JSON ({err.msg})") from None
    if not records or "scheme" not in records[0]:
        raise ValueError(f"{path}: no header line: not a points file written by run_on_video")
    for record in records[1:]:
        for face in record["faces"]:
            for key in ("points", "detection", "crop_box"):
                face[key] = np.asarray(face[key], np.float64)
    return records[0], records[1:]
