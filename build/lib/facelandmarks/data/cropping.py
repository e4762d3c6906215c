"""Crop each face record around its dlib detection, in a process pool."""

from __future__ import annotations

import multiprocessing
from dataclasses import dataclass

import cv2
import numpy as np

from facelandmarks.data import faces
from facelandmarks.data.records import FaceRecord, ImageReadError, read_image


@dataclass(frozen=True)
class CropSettings:
    """Per-face processing settings, shared by every worker."""

    size: int
    gray: bool = False
    fallback: bool = True
    upsample: int = 0


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
    _WORKER["settings"] = settings
    _WORKER["detector"] = faces.FaceDetector(upsample=settings.upsample)


@dataclass
class FaceSkipped:
    """Why a face was not written; ``image_read`` tells whether its image was usable."""

    reason: str
    image_read: bool


def crop_record(record: FaceRecord, settings: CropSettings, detector: faces.FaceDetector) -> CroppedFace | FaceSkipped:
    """Detect, crop and move the landmarks of one face, or say why it is skipped."""
    try:
        if record.pixels is not None:
            image, notes = record.pixels, []
        else:
            image, notes = read_image(record.image_path)
    except ImageReadError as err:
        return FaceSkipped(str(err), image_read=False)
    if image.ndim == 2 and not settings.gray:
        image = np.repeat(image[..., None], 3, axis=2)
    labelled = record.labelled
    if labelled.sum() < 2:
        return FaceSkipped(f"only {int(labelled.sum())} labelled landmark(s)", image_read=True)
    if record.given_box is not None:
        detection = "given"
        box = record.given_box if record.given_kind == "crop" else faces.crop_box_from_detection(record.given_box)
    else:
        found = detector.find_face(image, record.points, labelled)
        if found is not None:
            detection, box = "dlib", faces.crop_box_from_detection(found)
        elif settings.fallback:
            detection, box = "landmarks", faces.crop_box_from_landmarks(record.points, labelled)
        else:
            return FaceSkipped("dlib found no face matching the landmarks (--no-fallback)", image_read=True)
    crop = faces.crop_face(image, box, settings.size)
    if settings.gray and crop.shape[2] == 3:
        crop = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)[..., None]
    uv = faces.points_to_crop(record.points, box)
    uv[~labelled] = 0.0
    inside = ((uv >= 0.0) & (uv <= 1.0)).all(axis=1)
    return CroppedFace(crop, uv, labelled & inside, labelled.copy(), np.asarray(box, np.float32), detection, notes)


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
    return context


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
