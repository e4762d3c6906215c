"""Aligned-face videos: each tracked face of a video upright in a chip, frame by frame, one video per face.

``evaluate.py --video clip.mp4 --align 112`` writes, beside the overlay ``out/clip_landmarks.mp4`` and its
points file, ``out/clip_landmarks_face<ID>_aligned.mp4`` for every track ID in the points file (``aligned_path``): the
face's chip (``align.align_face`` of the points the overlay draws, smoothed unless ``--no-smooth``) in every
frame that lists the track, in order and at the video's fps.  So frame k of a face's video is the k-th frame
whose line in the points file lists that track, and ``align_face`` of its points there gives the chip's matrix.

``FaceTracker`` never gives a track ID back once a frame lacks it, so a face's video is finished (released and
renamed) at the first frame without the face: only the faces of the current frame hold a writer open, however
long a camera runs.  ``close`` finishes the rest; ``run_on_video`` calls it on every exit (the video's end,
``max_frames``, Ctrl-C, an error).  Each video is written as ``NAME.partial.SUFFIX`` until finished, as the
overlay is: mp4 writes its index last, so a killed process leaves playable videos of the faces already
finished and unplayable partial files of those still open.  After a run that wrote frames, ``close`` removes
the aligned-face videos of this overlay that an earlier run left and this one did not write (the tracks of another
clip or setting), so the folder holds one run's faces.
"""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np

from facelandmarks.inference.align import align_face, anchors, check_alignment
from facelandmarks.inference.video_files import partial_path

FOURCC = "mp4v"  # as the overlay video


def aligned_path(out_path, track_id: int) -> Path:
    """The aligned-face video of track ``track_id`` beside overlay ``out_path``, named after the overlay's whole name as
    its points file is: ``out/clip_landmarks.mp4``, 3 -> ``out/clip_landmarks_face3_aligned.mp4`` (``--out
    out/talk.avi``: ``out/talk_face3_aligned.avi``).  So two overlays in one folder never share a face video (the
    name less a trailing ``_landmarks`` gave ``out/clip.mp4`` and ``out/clip_landmarks.mp4`` the same ones)."""
    out_path = Path(out_path)
    return out_path.with_name(f"{out_path.stem}_face{int(track_id)}_aligned{out_path.suffix}")


def _name_pattern(out_path) -> re.Pattern:
    """Names of the aligned-face videos beside ``out_path``, finished or partial; no other overlay's (``clip.mp4``'s
    never match ``clip_landmarks.mp4``'s ``clip_landmarks_face0_aligned.mp4``)."""
    out_path = Path(out_path)
    return re.compile(rf"{re.escape(out_path.stem)}_face\d+_aligned(\.partial)?{re.escape(out_path.suffix)}")


def check_aligned_outputs(out_path, size: int, padding: float, keep=()) -> None:
    """ValueError, before any work, for a chip ``size`` or ``padding`` ``align_face`` refuses, or a path of ``keep``
    (the video being read, the points file) that an aligned-face video of ``out_path`` could write or remove."""
    check_alignment(size, padding)
    pattern, folder = _name_pattern(out_path), Path(out_path).parent.resolve()
    for path in keep:
        path = Path(path)
        if pattern.fullmatch(path.name) and path.parent.resolve() == folder:
            raise ValueError(f"{path}: named as an aligned-face video of {out_path} would be; give another --out")


class AlignedVideos:
    """One video of aligned chips per tracked face, beside overlay ``out_path`` (module docstring).

    ``write(image, found)`` takes each frame (RGB or gray uint8, unmarked) with its faces (anything with
    ``track_id`` and ``points`` in ``scheme``'s order: ``FaceTracker.update``'s); ``close()`` finishes every
    video and returns ``{track_id: path}`` of those written.  Also a context manager.  ``frames`` counts each
    track's chips; ``blank`` the chips left black because a point the alignment needs was not finite.
    """

    def __init__(self, out_path, scheme, size: int = 112, padding: float = 0.0, fps: float = 25.0):
        check_alignment(size, padding)
        groups, _ = anchors(scheme)  # a markup without eyes and mouth fails here, not at the first face
        self._needed = sorted({i for group in groups for i in group})  # the points the fit averages
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.out_path, self.scheme = Path(out_path), scheme
        self.size, self.padding, self.fps = int(size), float(padding), float(fps)
        self.paths: dict[int, Path] = {}
        self.frames: dict[int, int] = {}
        self.blank = 0
        self._open: dict[int, cv2.VideoWriter] = {}
        self._seen = False  # whether a frame came: only then does this run replace an earlier one's videos

    def write(self, image: np.ndarray, found) -> None:
        """Each face of ``found`` as the next chip of its track's video; tracks missing from ``found`` are finished."""
        self._seen = True
        ids = {face.track_id for face in found}
        for track_id in [t for t in self._open if t not in ids]:
            self._finish(track_id)
        for face in found:
            writer = self._open.get(face.track_id) or self._start(face.track_id)
            if np.isfinite(np.asarray(face.points, np.float64)[self._needed]).all():
                chip = align_face(image, face.points, self.scheme, self.size, self.padding).image
            else:  # a point the fit needs is missing: the video stays in step with the points file, black
                chip = np.zeros((self.size, self.size, 3), np.uint8)
                self.blank += 1
            chip = chip.reshape(self.size, self.size, -1)  # a gray frame's chip has one channel: the video three
            chip = cv2.cvtColor(chip, cv2.COLOR_GRAY2BGR) if chip.shape[2] == 1 else chip[..., ::-1]
            writer.write(np.ascontiguousarray(chip))
            self.frames[face.track_id] += 1

    def close(self) -> dict[int, Path]:
        """Finish every open video (each, even when another fails), then remove earlier runs' videos of this name
        that this run did not write; ``{track_id: path}`` of this run's videos."""
        failed = None
        for track_id in list(self._open):
            try:
                self._finish(track_id)
            except OSError as err:  # its partial file could not be renamed: the others are still finished
                failed = failed or err
        if failed is not None:
            raise failed  # and the earlier run's videos stay
        if self._seen:
            pattern, ours = _name_pattern(self.out_path), set(self.paths.values())
            for path in self.out_path.parent.glob("*"):
                if pattern.fullmatch(path.name) and path not in ours and path.is_file():
                    path.unlink()
        return dict(self.paths)

    def __enter__(self) -> AlignedVideos:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _start(self, track_id: int) -> cv2.VideoWriter:
        """A writer for a track's chips, into its partial file."""
        path = aligned_path(self.out_path, track_id)
        if track_id in self.paths:
            raise ValueError(f"{path}: track {track_id} came back after its video was finished "
                             "(a track ID must not return once a frame lacks it)")
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = cv2.VideoWriter(str(partial_path(path)), cv2.VideoWriter_fourcc(*FOURCC), self.fps, (self.size, self.size))
        if not writer.isOpened():
            raise OSError(f"{path}: OpenCV cannot write an {FOURCC} video there")
        self.paths[track_id], self.frames[track_id], self._open[track_id] = path, 0, writer
        return writer

    def _finish(self, track_id: int) -> None:
        """Release a track's writer and give its partial file the final name."""
        self._open.pop(track_id).release()
        partial = partial_path(self.paths[track_id])
        if partial.is_file():
            partial.replace(self.paths[track_id])
