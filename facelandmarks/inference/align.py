"""Aligned face images ("face chips"): each face turned upright, scaled and centred by its landmarks.

Face recognition, expression analysis and face averaging want every face in the same place of a small
square image. ``align_face`` fits a similarity transform (rotation, one scale, shift: no shear, so the
face keeps its proportions) from a few anchor points of the landmarks to fixed positions in the chip,
by least squares, and warps the photo with it.

The anchor positions are those of the five-point template used to align faces for ArcFace-style face
recognition at 112 x 112 px (eye centres, nose tip, mouth corners; insightface's ``arcface_dst``), so a
chip of ``size=112, padding=0`` is placed as such a recognition model expects. ``padding`` widens the view
around the same face (0.25: a quarter of the chip's side more on each side), and ``size`` scales it.

Anchors per markup: iBUG 68 and WFLW 98 use all five (an eye's centre is the mean of its contour, or the
pupil where the markup has one). Any other markup, a scheme file's too, uses three, from its regions: the
eyes (the pupil in each of ``right_eye`` and ``left_eye`` where the markup has one, else the region's centre)
and the centre of ``mouth``, placed where the template has the eye centres and the midpoint of the mouth
corners. Sides are the subject's, as in every markup here: ``right_eye`` is on the image's left.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from facelandmarks.data import faces
from facelandmarks.landmarks import Scheme, get_scheme

TEMPLATE_SIZE = 112
# (x, y) pixel positions in the 112-px template: the subject's right eye (on the image's left), left eye,
# nose tip, right and left mouth corner.
TEMPLATE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                         [41.5493, 92.3655], [70.7299, 92.2041]])
# The points of each markup averaged into the template's five anchors, in its order.
FIVE_ANCHORS = {
    "ibug68": (tuple(range(36, 42)), tuple(range(42, 48)), (30,), (48,), (54,)),
    "wflw98": ((96,), (97,), (54,), (76,), (82,)),
}
MIN_SIZE = 16
# the largest chip evaluate.py --align writes: a chip is cut from the photo at the face's own scale, so one wider
# than the faces it is cut from (few span 1024 px) is only their pixels enlarged, at its size squared in memory
MAX_SIZE = 1024


@dataclass
class AlignedFace:
    """One face chip and how it maps to its photo."""

    image: np.ndarray  # (size, size, C) uint8, the aligned face
    matrix: np.ndarray  # (2, 3): a photo pixel (x, y, 1) -> the chip pixel
    points: np.ndarray  # (K, 2) all the face's landmarks in chip pixels

    def to_photo(self, points: np.ndarray) -> np.ndarray:
        """Chip pixel coordinates (..., 2) back to the photo's."""
        inverse = cv2.invertAffineTransform(self.matrix)
        return np.asarray(points, np.float64) @ inverse[:, :2].T + inverse[:, 2]

    def to_json(self) -> dict:
        """The chip's side, the matrix and the points in chip pixels, for a photo's JSON."""
        return {"size": int(self.image.shape[0]), "matrix": [[round(float(v), 6) for v in row] for row in self.matrix],
                "points": [[round(float(x), 2), round(float(y), 2)] for x, y in self.points]}


def anchors(scheme: Scheme | str) -> tuple[list[tuple[int, ...]], np.ndarray]:
    """The index groups of ``scheme`` averaged into anchor points, and the anchors' (x, y) in the 112-px
    template. Raises ``ValueError`` naming what a markup lacks."""
    scheme = get_scheme(scheme) if isinstance(scheme, str) else scheme
    if scheme.name in FIVE_ANCHORS:  # a scheme file cannot take a built-in's name
        return list(FIVE_ANCHORS[scheme.name]), TEMPLATE_112
    regions = scheme.regions
    if "right_eye" not in regions or "left_eye" not in regions or "mouth" not in regions:
        raise ValueError(f"scheme {scheme.name!r}: aligning a face needs its eyes and mouth: regions 'right_eye', "
                         "'left_eye' and 'mouth' in the scheme file")
    # the pupils where each lies in its eye's region (their order is the markup's: kaggle15 names the left first)
    right = [p for p in scheme.pupils or () if p in regions["right_eye"]]
    left = [p for p in scheme.pupils or () if p in regions["left_eye"]]
    eyes = [tuple(right), tuple(left)] if len(right) == len(left) == 1 else [regions["right_eye"], regions["left_eye"]]
    mouth = TEMPLATE_112[3:].mean(axis=0, keepdims=True)
    return [*eyes, regions["mouth"]], np.concatenate([TEMPLATE_112[:2], mouth])


def template(scheme: Scheme | str, size: int = TEMPLATE_SIZE, padding: float = 0.0) -> tuple[list, np.ndarray]:
    """``anchors`` with their positions in a chip of ``size`` px and ``padding``."""
    groups, where = anchors(scheme)
    unit = (where + 0.5) / TEMPLATE_SIZE  # continuous coordinates in the unit square
    unit = (unit + padding) / (1.0 + 2.0 * padding)
    return groups, unit * size - 0.5


def similarity(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The (2, 3) rotation + scale + shift taking ``source`` (N, 2) nearest to ``target`` (N, 2), least squares
    (Umeyama's closed form without reflection)."""
    source, target = np.asarray(source, np.float64), np.asarray(target, np.float64)
    ms, mt = source.mean(axis=0), target.mean(axis=0)
    s, t = source - ms, target - mt
    # As complex numbers a similarity is a product: t ~ z * s with z = sum(conj(s) t) / sum(|s|^2).
    sc, tc = s[:, 0] + 1j * s[:, 1], t[:, 0] + 1j * t[:, 1]
    power = float(np.sum(np.abs(sc) ** 2))
    if power <= 1e-12:
        raise ValueError("the anchor points coincide: no face to align")
    z = np.sum(np.conj(sc) * tc) / power
    a, b = z.real, z.imag
    rotate_scale = np.array([[a, -b], [b, a]])
    return np.concatenate([rotate_scale, (mt - rotate_scale @ ms)[:, None]], axis=1)


def check_alignment(size, padding) -> None:
    """``ValueError`` for a chip size or padding ``align_face`` cannot take, naming the parameter (``align_face``'s and
    ``Predictor.align``'s; evaluate.py checks its --align flags before)."""
    if int(size) != size or size < MIN_SIZE:
        raise ValueError(f"size must be a whole number of at least {MIN_SIZE} px (an aligned face's width), got {size}")
    if not np.isfinite(padding) or padding < 0:
        raise ValueError(f"padding must be 0 or more (a share of an aligned face's view on each side), got {padding}")


def align_face(image, points: np.ndarray, scheme: Scheme | str = "ibug68", size: int = TEMPLATE_SIZE,
               padding: float = 0.0) -> AlignedFace:
    """The face whose landmarks are ``points`` (K, 2 photo pixels, ``scheme``'s order) in ``image`` (an RGB or
    gray uint8 array, or an image file's path), upright in a ``size`` x ``size`` chip.

    ``padding``: how much more than the template's view to show on each side, as a share of it (0: a
    recognition chip's tight view; 0.25 shows the whole head's outline on most faces)."""
    check_alignment(size, padding)
    scheme = get_scheme(scheme) if isinstance(scheme, str) else scheme
    points = np.asarray(points, np.float64)
    if points.shape != (scheme.num_points, 2):
        raise ValueError(f"scheme {scheme.name!r} has {scheme.num_points} points; got an array of shape {points.shape}")
    groups, target = template(scheme, int(size), padding)
    source = np.stack([points[list(group)].mean(axis=0) for group in groups])
    if not np.isfinite(source).all():
        raise ValueError("a point the alignment needs is missing (not finite)")
    matrix = similarity(source, target)
    photo = faces.as_photo(image)
    chip = faces.warp_region(photo, matrix, int(size), cv2.BORDER_CONSTANT)  # outside the photo: black
    return AlignedFace(chip, matrix, points @ matrix[:, :2].T + matrix[:, 2])
