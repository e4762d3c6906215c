"""Temporal smoothing of a face's landmarks in video, with One Euro filters (Casiez, Roussel and Vogel, CHI 2012).

A landmark model sees each frame on its own, so on a still face its points tremble between frames
(camera noise, compression, a crop box that follows the previous points).  A fixed low-pass filter
removes the trembling but makes moving points lag.  A One Euro filter low-passes a signal with a
cutoff frequency that rises with the signal's speed:

    cutoff = min_cutoff + beta * speed,    alpha = 1 / (1 + 1 / (2 pi cutoff dt))
    smoothed = previous smoothed + alpha * (raw - previous smoothed)

so a still signal is smoothed hard (``min_cutoff`` Hz) and a fast one hardly at all; the speed is
itself low-passed at ``derivative_cutoff`` Hz.  Speeds are in face sizes per second (the side of the
face's crop box), so the same settings suit a face near the camera and one far away.

``LandmarkSmoother`` splits a face's points into its *motion*, the similarity transform (shift,
scale, rotation) that best maps a reference shape onto them, and its *shape*, the points mapped back
through that transform, and filters each: the motion, fitted to all the points at once, is a clean
signal whose speed tells a moving head from a trembling one, so it is filtered lightly and follows
the head; the shape, which only changes with expression and pose, is filtered hard.  The split is
exact (the points are the motion applied to the shape), so nothing but the trembling is lost.

Settings chosen on, and measured with, ``benchmarks/video_tracking.py`` (docs/inference.md#video).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def smoothing_factor(cutoff, dt: float):
    """Weight of the new sample in an exponential low-pass of ``cutoff`` Hz sampled every ``dt`` s."""
    return 1.0 / (1.0 + 1.0 / (2.0 * np.pi * np.asarray(cutoff) * dt))


@dataclass(frozen=True)
class EuroSettings:
    """One One Euro filter's settings: ``min_cutoff`` (Hz; lower smooths a still signal more), ``beta``
    (Hz per face size per second; higher lags less when it moves), ``derivative_cutoff`` (Hz)."""

    min_cutoff: float
    beta: float
    derivative_cutoff: float = 1.0

    def __post_init__(self):
        if not (self.min_cutoff > 0 and self.derivative_cutoff > 0 and self.beta >= 0):
            raise ValueError(f"a One Euro filter needs min_cutoff > 0, derivative_cutoff > 0 and beta >= 0, got {self}")


MOTION = EuroSettings(min_cutoff=2.0, beta=100.0, derivative_cutoff=2.0)
SHAPE = EuroSettings(min_cutoff=0.5, beta=30.0, derivative_cutoff=1.0)


class OneEuroFilter:
    """A One Euro filter of an array.  ``filter(value, dt, speed)``: ``speed`` maps the filtered
    velocity (value units per second) to the speed (face sizes per second) that sets the cutoff,
    one number or one per element; the first call returns ``value`` unchanged."""

    def __init__(self, settings: EuroSettings):
        self.settings = settings
        self.value = self.velocity = None

    def filter(self, value: np.ndarray, dt: float, speed) -> np.ndarray:
        if self.value is None or self.value.shape != value.shape:
            self.value, self.velocity = value.copy(), np.zeros_like(value)
            return value
        s = self.settings
        self.velocity += smoothing_factor(s.derivative_cutoff, dt) * ((value - self.value) / dt - self.velocity)
        self.value = self.value + smoothing_factor(s.min_cutoff + s.beta * speed(self.velocity), dt) * (value - self.value)
        return self.value


def fit_similarity(reference: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``(a, b, tx, ty)`` of the similarity ``[[a, -b], [b, a]] @ r + (tx, ty)`` nearest ``points`` (least squares)."""
    x, y = reference[:, 0], reference[:, 1]
    one, zero = np.ones_like(x), np.zeros_like(x)
    design = np.concatenate([np.stack([x, -y, one, zero], 1), np.stack([y, x, zero, one], 1)])
    return np.linalg.lstsq(design, np.concatenate([points[:, 0], points[:, 1]]), rcond=None)[0]


def apply_similarity(params, shape: np.ndarray) -> np.ndarray:
    a, b, tx, ty = params
    return np.stack([a * shape[:, 0] - b * shape[:, 1] + tx, b * shape[:, 0] + a * shape[:, 1] + ty], 1)


def invert_similarity(params, points: np.ndarray) -> np.ndarray:
    a, b, tx, ty = params
    x, y, norm = points[:, 0] - tx, points[:, 1] - ty, a * a + b * b
    return np.stack([(a * x + b * y) / norm, (a * y - b * x) / norm], 1)


class LandmarkSmoother:
    """Smooths one face's (K, 2) points from frame to frame (see the module docstring).

    ``smoother(points, t, size)``: the raw points at time ``t`` (seconds, increasing) and the face's
    size (the side of its crop box, in the points' units) -> the smoothed points.  The first call,
    a call with points that are not finite, and a call with ``t`` not after the last one start afresh
    (and return the points as they are); so does ``reset()``.
    """

    def __init__(self, motion: EuroSettings = MOTION, shape: EuroSettings = SHAPE):
        self.motion_settings, self.shape_settings = motion, shape
        self.reset()

    def reset(self) -> None:
        self.reference = self.time = None
        self.motion, self.shape = OneEuroFilter(self.motion_settings), OneEuroFilter(self.shape_settings)

    def __call__(self, points, t: float, size: float) -> np.ndarray:
        points = np.asarray(points, np.float64)
        if not (np.isfinite(points).all() and np.isfinite(size) and size > 0 and len(points) >= 2):
            self.reset()
            return points
        if self.reference is None or self.reference.shape != points.shape or t <= self.time:
            self.reset()
            centred = points - points.mean(0)
            self.reference = centred / max(float(np.sqrt((centred ** 2).sum(1).mean())), 1e-9)
        dt = 1.0 if self.time is None else float(t) - self.time
        self.time = float(t)
        params = fit_similarity(self.reference, points)
        scale = float(np.hypot(params[0], params[1]))
        if not scale > 0:
            self.reset()
            return points
        shape = invert_similarity(params, points)
        # speeds in face sizes per second: the reference's points moved by the motion's velocity; each
        # shape point's velocity scaled into the photo
        params = self.motion.filter(params, dt, lambda v: np.linalg.norm(
            apply_similarity(v, self.reference), axis=1).mean() / size)
        shape = self.shape.filter(shape, dt, lambda v: np.linalg.norm(v, axis=1, keepdims=True) * scale / size)
        return apply_similarity(params, shape)
