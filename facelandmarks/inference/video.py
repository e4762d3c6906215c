"""Landmarks on every frame of a video file or camera, written as an overlay video.

dlib's HOG detector costs more than the landmark model on a frame (and grows with the frame's
size), so ``FaceTracker`` runs it only every ``redetect_every`` frames and whenever a tracked face
is lost.  In between, each face's crop box comes from its landmarks in the previous frame:
``faces.crop_box_from_landmarks`` is the box dlib would have drawn around those landmarks (for a
markup of your own as its data measured it, for kaggle15 its built-in one: ``Predictor.landmark_box``),
made into a crop the way training crops were.  Against ``crop_box_from_detection`` of dlib's own box
it matches on average (shipped model, 198 YouTube68 test faces: centre offset +0.4 % / -0.5 % of
the side in x / y, side ratio 1.004 mean, 0.88-1.13 from the 5th to the 95th percentile).  Per
face it differs, which costs a little: on 298 still test frames NME 4.96 % from dlib's box,
5.15 % from the box of the frame's own landmarks, and 5.19 % after five such passes (no drift).
When a face moved, its box lags one frame; a box that then moves by more than ``REFINE_CHANGE``
is used for a second prediction (384 pairs of YouTube68 frames of one video, seconds apart:
NME 6.25 % with one pass, 5.62 % with this rule, 4.91 % detecting afresh).

A tracked face is *lost* (the frame is then detected afresh) when its crop changed abruptly or
the landmarks found in it do not fit the box they were found in:

* appearance: the box's content, as a 32 x 32 gray patch, correlates below
  ``MIN_PATCH_CORRELATION`` with the same box in the previous frame, or is flat (a blank frame);
* geometry: the landmarks' crop box is more than ``MAX_SCALE_CHANGE`` times larger or smaller
  than the box, or its centre moved more than ``MAX_CENTRE_DRIFT`` of the side.

Measured with the shipped model on 592 YouTube68 faces, each tracked into its next frame:
geometry alone cannot be the test -- on a blank frame the model still draws a plausible face
(scale 0.99-1.01, drift 0.02: no blank flagged), and with another person in the box or the box
moved off the face it flags 45 % / 65 %.  The two together flag 100 % of blank frames, 99.3 % of
other persons and 99.0 % of moved boxes.  Between frames of one video (sparse samples seconds
apart, far more change than between two video frames) they flag 21 %: a false "lost" costs one
detection, a missed one shows wrong points until the next detection.

At every detection a detection takes over the track whose expected crop box it overlaps most (``MATCH_IOU``), keeping
its ``track_id``, and faces no track expected start tracks. A track no detection continues is followed as between
detections and kept unless it is lost: dlib's detector misses faces it found a frame before (Einstein's, tilted by 18
degrees, in 21 of 60 frames of a pan), and ending their tracks would leave them without points until it finds them
again. A face entering the picture is found at the next detection (at most ``redetect_every`` frames later); while
nothing is tracked every frame is detected. ``redetect_every=1`` is per-frame detection: a face is only where the
detector finds it.

The points a tracker returns are smoothed over time (``smoothing.LandmarkSmoother``, one per track): on a still face
they tremble 2.6-3.6 times less, and a moving one's NME rises by at most 0.03 points (``benchmarks/video_tracking.py``,
docs/inference.md#video). The crop boxes and the "lost" checks use the raw points, so smoothing never changes which
faces are followed. A track's smoother starts afresh when the face was lost, and when a detection continues a track
whose box now holds something else (the appearance and geometry checks above, as at a cut in the video).
``smooth=False`` returns the raw points.

``run_on_video`` marks a whole video file or camera; the files around it (opening the source, each frame's time, the
output names, reading the points file back) are in ``video_files``.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, replace

import cv2
import numpy as np

from facelandmarks import stops
from facelandmarks.data import faces
from facelandmarks.inference.aligned_video import AlignedVideos, check_aligned_outputs
from facelandmarks.inference.predictor import FaceLandmarks, Predictor
from facelandmarks.inference.shipped import default_model_dir
from facelandmarks.inference.smoothing import LandmarkSmoother
from facelandmarks.inference.video_files import (  # noqa: F401  (read_video_landmarks: imported from here too)
    FPS_RANGE,
    OVERLAY_SUFFIXES,
    TimedFrames,
    check_source,
    is_avi,
    open_capture,
    partial_path,
    read_video_landmarks,
    video_outputs,
)

REDETECT_EVERY = 10  # frames between detections while tracking (0.4 s at 25 frames/s)
MATCH_IOU = 0.3  # a detection continues a track when their crop boxes overlap this much (IoU)
PATCH_SIZE = 32  # side of the gray patch the appearance check compares
MIN_PATCH_STD = 2.0  # gray levels: a flatter patch holds no face
MIN_PATCH_CORRELATION = 0.5
MAX_SCALE_CHANGE = 1.25
MAX_CENTRE_DRIFT = 0.25
REFINE_CHANGE = 0.05  # a tracked face whose box moved more than this (of its side) is predicted again


@dataclass
class TrackedFace(FaceLandmarks):
    """A face in one video frame, with the track it belongs to.

    ``tracked`` is True when the crop box came from the previous frame's landmarks (then
    ``detection`` is the box dlib would have drawn, ``detection_from_crop_box``, and ``score`` the
    score of the track's last detection), False when the detector found it in this frame.
    """

    track_id: int = -1
    tracked: bool = False

    def to_json(self) -> dict:
        return {**super().to_json(), "track_id": self.track_id, "tracked": self.tracked}


def appearance_patch(image: np.ndarray, box) -> np.ndarray | None:
    """The part of ``box`` inside ``image`` as a PATCH_SIZE gray patch, zero mean and unit variance;
    None when it is flat or empty."""
    if not np.isfinite(box).all():
        return None
    h, w = image.shape[:2]
    x0, y0 = max(0, int(np.floor(box[0]))), max(0, int(np.floor(box[1])))
    x1, y1 = min(w, int(np.ceil(box[2]))), min(h, int(np.ceil(box[3])))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    patch = cv2.resize(image[y0:y1, x0:x1], (PATCH_SIZE, PATCH_SIZE), interpolation=cv2.INTER_AREA).astype(np.float32)
    if patch.ndim == 3:
        patch = patch.mean(axis=2)
    std = float(patch.std())
    return None if std < MIN_PATCH_STD else (patch - patch.mean()) / std


def patch_correlation(a: np.ndarray | None, b: np.ndarray | None) -> float:
    """Normalised cross-correlation of two ``appearance_patch`` results (0 when either is None)."""
    return 0.0 if a is None or b is None else float((a * b).mean())


def box_change(box, new_box) -> tuple[float, float]:
    """(side ratio, centre shift in sides) of ``new_box`` against square crop box ``box``."""
    side = float(box[2] - box[0])
    scale = float(new_box[2] - new_box[0]) / side
    shift = float(np.linalg.norm((new_box[:2] + new_box[2:]) / 2 - (box[:2] + box[2:]) / 2)) / side
    return scale, shift


def is_lost(reference, patch, box, new_box) -> bool:
    """Whether a face tracked into crop ``box`` is lost (see the module docstring).

    ``reference`` and ``patch`` are ``appearance_patch`` of the box in the previous and this frame,
    ``new_box`` the crop box of the landmarks found in it.
    """
    if not np.isfinite(new_box).all() or patch_correlation(reference, patch) < MIN_PATCH_CORRELATION:
        return True
    scale, shift = box_change(box, new_box)
    return not 1 / MAX_SCALE_CHANGE <= scale <= MAX_SCALE_CHANGE or shift > MAX_CENTRE_DRIFT


def moved_much(box, new_box) -> bool:
    """Whether the landmarks' crop box moved or resized by more than ``REFINE_CHANGE`` of ``box``'s side."""
    scale, shift = box_change(box, new_box)
    return shift > REFINE_CHANGE or abs(np.log(scale)) > np.log1p(REFINE_CHANGE)


def match_by_overlap(old_boxes, new_boxes, min_iou: float = MATCH_IOU) -> dict[int, int]:
    """``{new index: old index}``: pairs of boxes overlapping by at least ``min_iou``, greedily by IoU."""
    pairs = sorted(((faces.box_iou(a, b), i, j) for j, a in enumerate(old_boxes) for i, b in enumerate(new_boxes)),
                   reverse=True)
    matched: dict[int, int] = {}
    for iou, i, j in pairs:
        if iou >= min_iou and i not in matched and j not in matched.values():
            matched[i] = j
    return matched


@dataclass
class _Track:
    face: TrackedFace  # as found in the last frame
    box: np.ndarray  # crop box for the next frame, from the face's landmarks
    reference: np.ndarray | None  # appearance_patch of ``box`` in the last frame


class FaceTracker:
    """Landmarks of every face in consecutive video frames, detecting only now and then.

    Args:
        predictor: a loaded ``Predictor`` (its detector finds faces, its model places points).
        redetect_every: run the detector on every this-many-th frame (1: on every frame, and a
            face is only where the detector finds it); also on any frame where a tracked face is
            lost, and while no face is tracked.
        smooth: smooth each track's points over time (module docstring); False: the raw points.
        fps: frames per second, the smoothing's clock when ``update`` is given no time.

    ``update(frame, t=None)`` takes RGB (or gray) uint8 frames in order, with their time in seconds
    (None: the frame's number / ``fps``; a time not after the last one counts as one frame after
    it), and returns ``TrackedFace``s; ``frames``, ``detections`` and ``tracked`` count the frames
    seen, the frames the detector ran on and the frames served by tracking alone; ``refined`` the
    tracked faces predicted twice; ``kept`` the tracked faces the detector missed but tracking kept.
    """

    def __init__(self, predictor: Predictor, redetect_every: int = REDETECT_EVERY, smooth: bool = True,
                 fps: float = 25.0):
        if int(redetect_every) < 1:
            raise ValueError(f"redetect_every must be at least 1, got {redetect_every}")
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.predictor = predictor
        self.redetect_every = int(redetect_every)
        self.smooth, self.fps = bool(smooth), float(fps)
        self.frames = self.detections = self.tracked = self.refined = self.kept = 0
        self._tracks: list[_Track] = []
        self._smoothers: dict[int, LandmarkSmoother] = {}
        self._changed: set[int] = set()  # tracks whose face changed abruptly in this frame (their smoothing restarts)
        self._since_detection = 0
        self._next_id = 0
        self._time = None

    def update(self, image: np.ndarray, t: float | None = None) -> list[TrackedFace]:
        """Each face in the next frame (an image as ``predict`` takes it), in frame pixels, smoothed unless ``smooth`` is off."""
        image, found, followed, self._changed = faces.as_photo(image), None, None, set()  # RGBA failed once tracked
        if self._tracks and self._since_detection < self.redetect_every:
            followed = self._follow(image, self._tracks)
            if all(face is not None for face in followed):
                found = followed
            else:  # one face lost: the detector runs; the lost faces' points start afresh
                self._changed = {track.face.track_id for track, face in zip(self._tracks, followed) if face is None}
        if found is None:
            found = self._detect(image, followed)
            self.detections += 1
            self._since_detection = 0
        else:
            self.tracked += 1
        t = self.frames / self.fps if t is None else float(t)
        if self._time is not None and not t > self._time:
            t = self._time + 1 / self.fps
        self._time = t
        self.frames += 1
        self._since_detection += 1
        self._remember(image, found)
        return self._smoothed(found, t) if self.smooth else found

    def _smoothed(self, found: list[TrackedFace], t: float) -> list[TrackedFace]:
        """``found`` with each track's points through its smoother (afresh where the face was lost or changed)."""
        old = self._smoothers
        self._smoothers = {f.track_id: (None if f.track_id in self._changed else old.get(f.track_id)) or LandmarkSmoother()
                           for f in found}
        return [replace(f, points=self._smoothers[f.track_id](f.points, t, float(f.crop_box[2] - f.crop_box[0])))
                for f in found]

    def _follow(self, image: np.ndarray, tracks: list[_Track]) -> list[TrackedFace | None]:
        """Each of ``tracks`` predicted in the crop box its last landmarks give (again in the box of
        the new landmarks when that moved by more than ``REFINE_CHANGE``); None for a lost one."""
        boxes = [t.box for t in tracks]
        points = self.predictor.predict_boxes(image, boxes) if tracks else []
        new_boxes = [faces.crop_box_from_landmarks(p, None, getattr(self.predictor, "landmark_box", None)) for p in points]
        lost = [is_lost(t.reference, appearance_patch(image, box), box, new_box)
                for t, box, new_box in zip(tracks, boxes, new_boxes)]
        moved = [i for i, (box, new_box) in enumerate(zip(boxes, new_boxes)) if not lost[i] and moved_much(box, new_box)]
        for i, again in zip(moved, self.predictor.predict_boxes(image, [new_boxes[i] for i in moved]) if moved else []):
            points[i], boxes[i] = again, new_boxes[i]
        self.refined += len(moved)
        return [None if gone else TrackedFace(faces.detection_from_crop_box(box), t.face.score, box, p, t.face.track_id,
                                              tracked=True)
                for t, box, p, gone in zip(tracks, boxes, points, lost)]

    def _detect(self, image: np.ndarray, followed: list[TrackedFace | None] | None) -> list[TrackedFace]:
        """Every face the detector finds, each continuing the track it overlaps or starting one (a track
        whose box now holds something else, as across a cut in the video, is marked changed); then,
        when tracking, the tracks no detection continues, followed as between detections (``followed``:
        this frame's results, if any) and kept unless lost: dlib misses faces it found a moment ago."""
        detected = self.predictor.detect_and_predict(image)
        matched = match_by_overlap([t.box for t in self._tracks], [f.crop_box for f in detected])
        found = []
        for i, face in enumerate(detected):
            if i in matched:
                track = self._tracks[matched[i]]
                track_id = track.face.track_id
                if self.smooth and is_lost(track.reference, appearance_patch(image, track.box), track.box, face.crop_box):
                    self._changed.add(track_id)
            else:
                track_id, self._next_id = self._next_id, self._next_id + 1
            found.append(TrackedFace(face.detection, face.score, face.crop_box, face.points, track_id))
        if self.redetect_every > 1:
            missed = [j for j in range(len(self._tracks)) if j not in matched.values()]
            if followed is None:
                kept = self._follow(image, [self._tracks[j] for j in missed])
            else:
                kept = [followed[j] for j in missed]
            found += [face for face in kept if face is not None]
            self.kept += sum(face is not None for face in kept)
        return found

    def _remember(self, image: np.ndarray, found: list[TrackedFace]) -> None:
        """Crop boxes for the next frame, and what they hold now (faces with unusable points are dropped)."""
        self._tracks = []
        for face in found:
            box = faces.crop_box_from_landmarks(face.points, None, getattr(self.predictor, "landmark_box", None))
            if np.isfinite(box).all():
                reference = appearance_patch(image, box) if self.redetect_every > 1 or self.smooth else None
                self._tracks.append(_Track(face, box, reference))


def assumed_rate_note(source, timed: TimedFrames) -> str:
    """The line for a video whose frame rate is unknown (``TimedFrames.fps_assumed``)."""
    what = (f"camera {source}: the frame rate it gives, {timed.file_fps:g} frames/s," if timed.camera else
            f"{source}: its frame rate as OpenCV reads it, {timed.file_fps:g} frames/s,")
    timing = {"frames/fps": "its frames are timed", "container": "its frames keep the file's times; the overlay is written",
              "wall": "its frames are timed by the clock; the overlay is written"}[timed.clock]
    return (f"note: {what} is not a plausible one ({FPS_RANGE[0]:g}-{FPS_RANGE[1]:g} frames/s), so taken as unknown: {timing} "
            f"at an assumed {timed.fps:g} frames/s (the points file's header: fps_assumed)")


def run_on_video(run_dir, source, out_path, max_frames=None, flip_test=False, track=True,
                 redetect_every=REDETECT_EVERY, min_score=None, runtime="auto", threads=None, recrop=False,
                 smooth=True, points_path=None, align: tuple[int, float] | None = None, detect_max_side=None,
                 note=None) -> dict:
    """Landmarks on every frame of a video file or camera; writes an overlay video, the points and, with
    ``align``, a video of each face upright.

    Args:
        run_dir: a run directory (None: the shipped model).
        source: a video file, or a camera index ("0").
        out_path: the overlay video (``OVERLAY_SUFFIXES``), written as ``NAME.partial.SUFFIX`` and renamed
            when the video ends or is interrupted (a killed run leaves an earlier overlay as it was); every frame
            of the source at the constant rate its header gives (OpenCV writes no variable rate), or an assumed
            one where that is absurd (``TimedFrames``: a one-line note on stderr, and ``fps_assumed`` in the points).
        points_path: the points as JSON lines (None: ``out_path`` with the suffix ``.jsonl``): a header
            line, then one line per frame, written as the frame is done (``read_video_landmarks``), with the
            frame's time as the source gives it (``TimedFrames``; the header's ``clock`` says which clock),
            the time the smoothing runs on; ``time_estimated: true`` on a frame whose own time was not after the last.
        max_frames: stop after this many frames (None: at the end of the video).
        track: follow faces between detections (``FaceTracker``); False detects on every frame.
        redetect_every: with ``track``, frames between detections (default ``REDETECT_EVERY``).
        smooth: smooth each face's points over time (``FaceTracker``'s ``smooth``).
        min_score: the detector's score threshold (None: the detector's default).
        detect_max_side: look for faces in a copy of each frame shrunk to this longer side (``Predictor``'s).
        runtime, threads: how the model runs (``Predictor.load``).
        flip_test, recrop: test-time passes per face (``Predictor``'s).
        note: called with each note for the user, one line (None: printed on stderr); a script names itself there.
        align: (size, padding): each face's chips, from the points the overlay draws, in a video of its own
            beside the overlay (``aligned_video``: ``out/clip_landmarks.mp4`` -> ``out/clip_landmarks_face0_aligned.mp4``).

    Returns:
        ``frames``, ``faces`` (found over all frames), ``seconds``, ``fps``, ``output``, ``points``, ``detections`` (frames
        the detector ran on), ``tracked`` (frames served by tracking), ``kept`` (faces the detector missed that tracking
        kept), ``listed`` (the frames a file's header lists; 0 for a camera), ``reached`` (frames read, or more: those their
        time spans at the listed rate, the rate varying) and ``aligned`` (the face videos, by track).
    """
    from facelandmarks.drawing import PREDICTION, draw_points, marker_radius

    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be at least 1, got {max_frames}")
    out_path, points_path = video_outputs(source, out_path, points_path)
    partial = partial_path(out_path)
    check_source(source)  # before the model loads
    if align:
        check_aligned_outputs(out_path, *align, keep=(source, points_path))
    predictor = Predictor.load(run_dir, flip_test=flip_test, recrop=recrop, runtime=runtime, threads=threads,
                               detect_max_side=detect_max_side)
    if min_score is not None:
        predictor.detector.min_score = min_score
    capture, camera = open_capture(source)
    listed = 0 if camera else max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0)
    timed = TimedFrames(capture, camera, capture.get(cv2.CAP_PROP_FPS), avi=not camera and is_avi(source))
    fps_in = timed.fps  # the header's, or ASSUMED_FPS where that is absurd
    tracker = FaceTracker(predictor, redetect_every if track else 1, smooth=smooth, fps=fps_in)
    writer = points_file = chips = None
    faces_seen, start = 0, time.perf_counter()
    try:
        chips = AlignedVideos(out_path, predictor.scheme, *align, fps=fps_in) if align else None
        while (max_frames is None or tracker.frames < max_frames) and (got := timed.read()) is not None:
            image, t = got[0][..., ::-1].copy(), got[1]
            detections = tracker.detections
            found = tracker.update(image, t)
            faces_seen += len(found)
            if writer is None:
                out_path.parent.mkdir(parents=True, exist_ok=True)
                points_path.parent.mkdir(parents=True, exist_ok=True)
                writer = cv2.VideoWriter(str(partial), cv2.VideoWriter_fourcc(*"mp4v"), fps_in, (image.shape[1], image.shape[0]))
                if not writer.isOpened():
                    raise OSError(f"{out_path}: OpenCV cannot write an mp4v video there")
                points_file = open(points_path, "w", buffering=1)  # a line at a time: a kill leaves whole frames
                header = {"source": str(source), "model": str(default_model_dir() if run_dir is None else run_dir),
                          "runtime": predictor.runtime, "scheme": predictor.scheme.name, "num_points": predictor.scheme.num_points,
                          "fps": round(float(fps_in), 3), "fps_assumed": timed.fps_assumed,
                          "file_fps": faces.json_number(round(timed.file_fps, 3)), "clock": timed.clock,
                          "width": image.shape[1], "height": image.shape[0],
                          "redetect_every": tracker.redetect_every, "smooth": tracker.smooth, "flip_test": flip_test,
                          "recrop": recrop, "min_score": faces.json_number(getattr(predictor.detector, "min_score", -np.inf)),
                          "detect_max_side": predictor.detect_max_side,
                          "align": {"size": align[0], "padding": align[1]} if align else None}
                points_file.write(json.dumps(header) + "\n")
                if timed.fps_assumed:
                    (note or (lambda text: print(text, file=sys.stderr)))(assumed_rate_note(source, timed))
            line = {"frame": tracker.frames - 1, "time": round(t, 4), **({"time_estimated": True} if timed.estimated else {}),
                    "detected": tracker.detections > detections, "faces": [f.to_json() for f in found]}
            with stops.held():  # the frame in every file or in none: a stop waits until it is in all
                points_file.write(json.dumps(line) + "\n")
                if chips is not None:
                    chips.write(image, found)  # before the points are drawn on it
                for face in found:
                    image = draw_points(image, face.points, PREDICTION, radius=marker_radius(face.points))
                writer.write(np.ascontiguousarray(image[..., ::-1]))
    finally:
        capture.release()
        try:
            aligned = {} if chips is None else chips.close()
        finally:
            if points_file is not None:
                points_file.close()
            if writer is not None:
                writer.release()
                if partial.is_file():
                    partial.replace(out_path)
    seconds, frames, end = time.perf_counter() - start, tracker.frames, timed.end_ms  # the last frame's end (ms)
    rate = timed.file_fps if np.isfinite(timed.file_fps) else 0.0  # the rate FFmpeg's count of a file's frames took
    if frames == 0:
        raise OSError(f"{source}: no frames could be read")
    return {"frames": frames, "faces": faces_seen, "seconds": round(seconds, 2),
            "fps": round(frames / seconds, 2) if seconds > 0 else 0.0, "output": str(out_path),
            "points": str(points_path), "detections": tracker.detections, "tracked": tracker.tracked,
            "kept": tracker.kept, "listed": listed, "reached": max(frames, round(end * rate / 1e3)),
            "aligned": {i: str(p) for i, p in aligned.items()}}
