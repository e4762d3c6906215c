"""Looking for faces in a shrunk copy of a large photo (``Predictor.load(detect_max_side=...)``, ``evaluate.py
--detect-max-side``): the boxes come back in the photo's pixels, and ``Predictor`` cuts the crops and places the
points in the photo itself.

dlib's HOG detector costs about the same per pixel searched, and its window is 80 px. The copy is searched as any
photo of its size is (``FaceDetector.detect_all``): doubled too where it has at most 2.5 Mpx, so a copy shrunk by
``s`` misses faces under ``40 / s`` px of the photo, and one of more than 2.5 Mpx those under ``80 / s``. A copy
searched at two scales also finds faces a photo searched at one misses (dlib's image pyramid does not line up with
every face): on 300-W AFW photos enlarged to 12 Mpx, copies of 1024 px found more faces than the photos themselves,
in 36 % of the time, and lost 4 of theirs (``benchmarks/detect_max_side.py``, ``benchmarks/photo_speed.py``;
docs/inference.md#large-photos).
"""

from __future__ import annotations

import cv2
import numpy as np

# The smallest max side: dlib's search window. A copy that small holds one face at most, filling it.
MIN_DETECT_SIDE = 80


def checked_max_side(value, name: str = "max_side") -> int | None:
    """A longest side for ``detect_in_copy``: a whole number from ``MIN_DETECT_SIDE`` up, or None for None and 0
    (the photo itself); anything else a ``ValueError`` naming ``name``."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))
                              or value != 0 and value < MIN_DETECT_SIDE):
        raise ValueError(f"{name} must be 0 (the photo itself) or a whole number of pixels from {MIN_DETECT_SIDE} "
                         f"(dlib's search window) up, got {value!r}")
    return int(value) if value else None


def reduced(image: np.ndarray, max_side: int | None) -> tuple[np.ndarray, np.ndarray]:
    """``image`` shrunk by area averaging so that its longer side is ``max_side`` (unless it is no longer, or
    ``max_side`` is None), and the factors ``[fx, fy, fx, fy]`` that take a box on it back to ``image``'s pixels."""
    h, w = image.shape[:2]
    if max_side is None or max(h, w) <= max_side:
        return image, np.ones(4, np.float32)
    nw, nh = max(1, round(w * max_side / max(h, w))), max(1, round(h * max_side / max(h, w)))
    back = np.array([w / nw, h / nh, w / nw, h / nh], np.float32)
    return cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA), back


def detect_in_copy(detector, image: np.ndarray, max_side: int | None) -> tuple[np.ndarray, np.ndarray]:
    """``detector.detect_all`` (``faces.FaceDetector``) on ``image`` ``reduced`` to ``max_side``: ``(boxes,
    scores)``, the boxes in ``image``'s pixels."""
    small, back = reduced(image, max_side)
    boxes, scores = detector.detect_all(small)
    return boxes * back, scores
