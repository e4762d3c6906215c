"""Crop each face record around its dlib detection, in a process pool.

A face is only written when its landmarks lie on its image (``landmark_problem``): points that
are NaN, all in one spot, spread far wider than the image, or mostly off it belong to another
image, another scale or another orientation, and would give a crop of border pixels with every
point "visible".  Such faces are skipped with the reason in the report.
"""

from __future__ import annotations

import multiprocessing
import signal
from dataclasses import dataclass

import cv2
import numpy as np

from facelandmarks.data import faces
from facelandmarks.data.records import FaceRecord, ImageReadError, read_image_views

# A labelled point counts as off the image when it lies more than OFF_IMAGE_PX, or OFF_IMAGE_SHARE
# of the image's longer side, past an edge (annotators click a little past the border of faces
# cut by the frame).  More than MAX_OFF_IMAGE of the points off the image: not this image's
# landmarks.  No face of the 300-W, YouTube68 or MUCT copies in ../shared/data has a single point
# 2 px off its image, so the rule only catches landmarks that belong elsewhere.
OFF_IMAGE_PX = 3.0
OFF_IMAGE_SHARE = 0.01
MAX_OFF_IMAGE = 0.2
# Landmarks spanning less than this (in x or y) are degenerate: all equal, or on one line.
MIN_SPAN_PX = 2.0
# Landmarks spanning more than this many times the image's width or height: an image far smaller
# than its points (a thumbnail, the wrong file).
MAX_SPAN_TO_IMAGE = 1.5
# At least this share of the labelled points must fall inside the crop box.
MIN_IN_CROP = 0.5
# A markup of its own may span less of the face than iBUG 68's points do (no jaw, no brows: 5 points span about half
# as much): dlib's box around its faces is measured on up to CALIBRATION_FACES of them, spread through the set, where
# dlib finds a box 1/2 to CALIBRATION_MAX_RATIO x the points' span that holds them; fewer than CALIBRATION_MIN_FACES
# such faces keep iBUG 68's relation.
CALIBRATION_FACES = 30
CALIBRATION_MIN_FACES = 5
CALIBRATION_MAX_RATIO = 4.0


@dataclass(frozen=True)
class CropSettings:
    """Per-face processing settings, shared by every worker."""

    size: int
    gray: bool = False
    fallback: bool = True
    upsample: int = 0
    landmark_box: tuple[float, float, float] | None = None  # faces.detection_like_box's relation (None: iBUG 68's)


@dataclass
class CroppedFace:
    """One face ready for the output arrays (before mirroring)."""

    image: np.ndarray  # uint8 (S, S, C)
    landmarks: np.ndarray  # float32 (K, 2), normalised crop coordinates
    visible: np.ndarray  # bool (K,)
    labelled: np.ndarray  # bool (K,)
    box: np.ndarray  # float32 (4,)
    detection: str  # 'dlib', 'landmarks' or 'given'
    notes: list[str]


_WORKER: dict = {}


def _init_worker(settings: CropSettings, pooled: bool = True) -> None:
    if pooled:
        cv2.setNumThreads(1)  # the pool already uses every core
        # Ctrl-C reaches the whole process group: the main process alone stops the pool. A worker interrupted
        # halfway through sending a result once left the pool's result thread waiting for ever (and printed
        # a traceback per worker).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        # The pool stops its workers with SIGTERM: one inherited ignored (a launcher that ignores it) left
        # them running and the pool waiting for them for ever after Ctrl-C.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _WORKER["settings"] = settings
    _WORKER["detector"] = faces.FaceDetector(upsample=settings.upsample)


@dataclass
class FaceSkipped:
    """Why a face was not written; ``image_read`` tells whether its image was usable."""

    reason: str
    image_read: bool


def landmark_problem(points: np.ndarray, labelled: np.ndarray, image_shape) -> str | None:
    """Why these labelled landmarks cannot belong to an image of ``image_shape``, or None when they can."""
    p = np.asarray(points, np.float64)[np.asarray(labelled, bool)]
    h, w = image_shape[:2]
    broken = ~np.isfinite(p).all(axis=1)
    if broken.any():
        return f"non-finite landmarks: {int(broken.sum())} of {len(p)} labelled points NaN or infinite"
    span = p.max(axis=0) - p.min(axis=0)
    if span.min() < MIN_SPAN_PX:
        return f"degenerate landmarks: the {len(p)} labelled points span only {span[0]:.1f} x {span[1]:.1f} px"
    if span[0] > MAX_SPAN_TO_IMAGE * w or span[1] > MAX_SPAN_TO_IMAGE * h:
        return f"image far smaller than its landmarks: points span {span[0]:.0f} x {span[1]:.0f} px on a {w} x {h} px image"
    off, margin = off_image(p, image_shape)
    if off.mean() > MAX_OFF_IMAGE:
        return f"landmarks off the image: {int(off.sum())} of {len(p)} labelled points more than {margin:.0f} px outside the {w} x {h} px image"
    return None


def off_image(points: np.ndarray, image_shape) -> tuple[np.ndarray, float]:
    """Which of ``points`` (N, 2 pixels) lie past an edge of the image by more than the margin, and the margin."""
    h, w = image_shape[:2]
    margin = max(OFF_IMAGE_PX, OFF_IMAGE_SHARE * max(h, w))
    p = np.asarray(points, np.float64)
    off = (p[:, 0] < -0.5 - margin) | (p[:, 0] > w - 0.5 + margin) | (p[:, 1] < -0.5 - margin) | (p[:, 1] > h - 0.5 + margin)
    return off, margin


def choose_view(views, record: FaceRecord, detector: faces.FaceDetector, use_dlib: bool, relation=None):
    """The view of the image (EXIF-turned or stored) the landmarks belong to.

    Returns:
        ``(label, image, dlib detection or None)``, or a ``FaceSkipped``.
        Only when the points fit both views does dlib decide (the view
        where it finds the face); the detection is returned for reuse.
    """
    problems = [landmark_problem(record.points, record.labelled, image.shape) for _, image in views]
    fitting = [view for view, problem in zip(views, problems) if problem is None]
    if not fitting:
        also = f"; also on the {views[1][0]}" if len(views) > 1 else ""
        return FaceSkipped(problems[0] + also, image_read=True)
    if len(fitting) == 1:
        return (*fitting[0], None)
    for label, image in fitting if use_dlib else ():
        found = detector.find_face(image, record.points, record.labelled, relation)
        if found is not None:
            return label, image, found
    return FaceSkipped(f"landmarks fit both the {views[0][0]} and the {views[1][0]}, "
                       "and dlib finds the face in neither: orientation unknown", image_read=True)


def crop_record(record: FaceRecord, settings: CropSettings, detector: faces.FaceDetector) -> CroppedFace | FaceSkipped:
    """Detect, crop and move the landmarks of one face, or say why it is skipped."""
    try:
        views, notes = ([("as given", record.pixels)], []) if record.pixels is not None else read_image_views(record.image_path)
    except ImageReadError as err:
        return FaceSkipped(str(err), image_read=False)
    labelled = record.labelled
    if labelled.sum() < 2:
        return FaceSkipped(f"only {int(labelled.sum())} labelled landmark(s)", image_read=True)
    chosen = choose_view(views, record, detector, use_dlib=record.given_box is None, relation=settings.landmark_box)
    if isinstance(chosen, FaceSkipped):
        return chosen
    label, image, found = chosen
    if len(views) > 1:
        notes = notes + [f"landmarks fit the {label}"]
    if off_image(record.points[labelled], image.shape)[0].any():  # a few: kept (more stop in landmark_problem)
        notes = notes + ["kept with labelled points past the image's edge: check them if the face is inside it"]
    if image.ndim == 2 and not settings.gray:
        image = np.repeat(image[..., None], 3, axis=2)
    boxed = _crop_box(record, image, settings, detector, found)
    if isinstance(boxed, FaceSkipped):
        return boxed
    detection, box = boxed
    uv = faces.points_to_crop(record.points, box)
    uv[~labelled] = 0.0
    inside = ((uv >= 0.0) & (uv <= 1.0)).all(axis=1)
    if (inside & labelled).sum() < MIN_IN_CROP * labelled.sum():
        return FaceSkipped(f"only {int((inside & labelled).sum())} of {int(labelled.sum())} labelled points inside "
                           f"the {detection} crop box (the box does not hold this face)", image_read=True)
    crop = faces.crop_face(image, box, settings.size, whole_photo=True)  # the pixels of every set prepared before
    if settings.gray and crop.shape[2] == 3:
        crop = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)[..., None]
    return CroppedFace(crop, uv, labelled & inside, labelled.copy(), np.asarray(box, np.float32), detection, notes)


def _crop_box(record: FaceRecord, image, settings: CropSettings, detector, found):
    """``(detection kind, crop box)`` from the dataset's box, dlib or the landmarks; or a ``FaceSkipped``."""
    if record.given_box is not None:
        given = np.asarray(record.given_box, np.float64)
        if not np.isfinite(given).all() or given[2] <= given[0] or given[3] <= given[1]:
            return FaceSkipped(f"the dataset's face box {given.tolist()} is empty or not finite", image_read=True)
        box = given if record.given_kind == "crop" else faces.crop_box_from_detection(given)
        return "given", box
    if found is None:
        found = detector.find_face(image, record.points, record.labelled, settings.landmark_box)
    if found is not None:
        return "dlib", faces.crop_box_from_detection(found)
    if settings.fallback:
        return "landmarks", faces.crop_box_from_landmarks(record.points, record.labelled, settings.landmark_box)
    return FaceSkipped("dlib found no face matching the landmarks (--no-fallback)", image_read=True)


def calibrate_landmark_box(records, upsample: int = 0, limit: int = CALIBRATION_FACES):
    """Where dlib's box lies around these records' points: ``((scale, dx, dy), faces, name)`` for
    ``faces.detection_like_box``, the medians over the ``faces`` measured (``CALIBRATION_FACES`` at most, spread
    through ``records``; ``name`` the first one's), or None when fewer than ``CALIBRATION_MIN_FACES`` could be."""
    detector = faces.FaceDetector(upsample=upsample)
    usable = [r for r in records if r.given_box is None and r.labelled.sum() >= 2]
    measured, names = [], []
    for index in np.random.default_rng(0).permutation(len(usable))[:3 * limit]:  # spread through the set, the same each time
        record = usable[index]
        try:
            views = [("as given", record.pixels)] if record.pixels is not None else read_image_views(record.image_path)[0]
        except ImageReadError:
            continue
        fitting = [image for _, image in views if landmark_problem(record.points, record.labelled, image.shape) is None]
        if len(fitting) == 1:
            det = nearest_detection(detector.detect(fitting[0])[0], record.points, record.labelled)
            if det is not None:
                measured.append(faces.box_relation(det, record.points, record.labelled))
                names.append(record.name)
        if len(measured) == limit:
            break
    if len(measured) < CALIBRATION_MIN_FACES:
        return None
    return tuple(float(v) for v in np.median(measured, axis=0)), len(measured), names[0]


def nearest_detection(detections, points, labelled):
    """Of dlib's ``detections`` around one face's points, the one ``calibrate_landmark_box`` measures: whose box is
    1/2 to ``CALIBRATION_MAX_RATIO`` x the points' span, whose crop holds them, and whose centre lies nearest theirs
    (in units of their span); None when none does."""
    best, best_distance = None, np.inf
    for det in detections:
        relation = faces.box_relation(det, points, labelled)
        if not 0.5 <= relation[0] <= CALIBRATION_MAX_RATIO:
            continue
        if faces.coverage(faces.crop_box_from_detection(det), points, labelled) < faces.MIN_COVERAGE:
            continue
        distance = float(np.hypot(*relation[1:]))
        if distance < best_distance:
            best, best_distance = det, distance
    return best


def _crop_task(item: tuple[int, FaceRecord]):
    index, record = item
    return index, crop_record(record, _WORKER["settings"], _WORKER["detector"])


def worker_context():
    """Processes started from a clean server, never forked from this one.

    Forking a process whose OpenCV, TensorFlow or JAX thread pools are running
    (a test session, a notebook, train.py preparing data) can leave a lock
    held forever in the child; the forkserver forks from a fresh process
    that has only imported this module.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["facelandmarks.data.cropping"])
    _start_forkserver_deaf_to_ctrl_c()
    return context


def _start_forkserver_deaf_to_ctrl_c() -> None:
    """Start the forkserver with SIGINT ignored and SIGTERM at its default; its workers inherit both from birth.

    Ctrl-C reaches the whole process group, and the server ignores it only once its preload (OpenCV, dlib: about a
    second) is done: a Ctrl-C before then ended it with a traceback of its own under the main process's one line.
    A process started with SIGTERM ignored (some launchers, ``make test &``) passed that on to the server and so to
    every worker until its initializer ran: a pool stopped while a loaded machine was still starting its workers
    sent them SIGTERM in vain and waited for them for ever.
    """
    import threading
    from multiprocessing import forkserver

    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        forkserver.ensure_running()
        return
    previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)  # inherited by the server's process
    # a handler, unlike SIG_IGN, is back to the default in an exec'd process, and this one still ignores it here
    term_ignored = signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    if term_ignored:
        signal.signal(signal.SIGTERM, _ignore)
    try:
        forkserver.ensure_running()
    finally:
        signal.signal(signal.SIGINT, signal.SIG_DFL if previous_int is None else previous_int)  # None: a C handler
        if term_ignored:  # only what was changed is put back
            signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _ignore(signum, frame) -> None:
    """A signal handler that does nothing."""


def _iterate_crops(records, settings: CropSettings, workers: int):
    """Yield ``(index, CroppedFace | FaceSkipped)`` in record order, streaming from a process pool."""
    items = list(enumerate(records))
    if workers <= 1 or len(records) < 4:
        _init_worker(settings, pooled=False)
        yield from map(_crop_task, items)
        return
    chunk = max(1, min(16, len(items) // (workers * 8)))
    with worker_context().Pool(workers, initializer=_init_worker, initargs=(settings,)) as pool:
        yield from pool.imap(_crop_task, items, chunksize=chunk)
