"""Landmark error metrics in NumPy: NME, cumulative error curves, AUC, failure rate.

The conventions are the field's (300-W, WFLW, HRNet-Facial, mmpose):

* NME of a face = mean Euclidean error over its *visible* points divided by
  the distance between the two normalising points of the ground truth
  (outer eye corners, or pupils where a scheme has them), or, for a scheme
  with ``normalize: box``, by sqrt(w * h) of the ground-truth points' box.  Points that are
  unavailable are left out of the mean, never counted as zero error.  A
  face whose normalising points are themselves unavailable has no NME
  (NaN) and is left out of every summary, which reports how many it scored.
  Which faces are scored depends on the ground truth only: a prediction
  that is not finite (NaN, inf) at an available point is an infinite
  error, so its face is scored and fails at every threshold (NME inf)
  instead of dropping out of the summary.
* Mean offset of a face = mean signed error (prediction - ground truth) in x
  and in y over its visible points, divided by the same distance: NME says
  how far points are, the offset whether they lean one way.  A pixel
  convention mixed up between datasets shows here (0.3 NME points once).
* CED: fraction of faces whose NME is at most x, for x in [0, threshold].
* AUC@t: area under the CED on [0, t] divided by t (1.0 = every face
  perfect).  FR@t: fraction of faces with NME > t.

All functions accept any units as long as prediction and ground truth share
them (normalised crop coordinates or pixels): NME is scale free.
"""

from __future__ import annotations

import numpy as np

from facelandmarks.landmarks import Scheme, get_scheme

THRESHOLDS = (0.08, 0.10)


def _scheme(scheme) -> Scheme:
    return get_scheme(scheme) if isinstance(scheme, str) else scheme


def point_errors(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """(N, K) Euclidean distances; NaN where the ground-truth point is unavailable (hidden or not finite).

    A prediction that is not finite where the ground truth is available is an infinite error, not a
    missing one: left out of the mean, a model's NaN would improve its NME.
    """
    gt = np.asarray(gt, np.float64)
    pred = np.asarray(pred, np.float64).reshape(gt.shape)
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.linalg.norm(pred - gt, axis=-1)
    err = np.where(np.isfinite(pred).all(axis=-1), err, np.inf)
    available = np.asarray(visible, bool) & np.isfinite(gt).all(axis=-1)
    return np.where(available, err, np.nan)


def normalising_distance(gt: np.ndarray, visible: np.ndarray, scheme, by: str = "corners") -> np.ndarray:
    """(N,) distance between the normalising points; NaN where either is unavailable.

    Args:
        by: 'corners' (the scheme's normaliser: its ``norm_points``, or the
            ground-truth box for a scheme with ``normalize: box``) or 'pupils'.
    """
    scheme = _scheme(scheme)
    if by == "corners" and scheme.normalize == "box":
        return box_size(gt, visible)
    if by == "corners":
        if scheme.norm_points is None:
            raise ValueError(f"scheme {scheme.name} has no normalising points")
        a, b = scheme.norm_points
    elif by == "pupils":
        if scheme.pupils is None:
            raise ValueError(f"scheme {scheme.name} has no pupils")
        a, b = scheme.pupils
    else:
        raise ValueError(f"by must be 'corners' or 'pupils', got {by!r}")
    gt = np.asarray(gt, np.float64)
    visible = np.asarray(visible, bool)
    dist = np.linalg.norm(gt[:, a] - gt[:, b], axis=-1)
    ok = visible[:, a] & visible[:, b] & (dist > 0)
    return np.where(ok, dist, np.nan)


def box_size(gt: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """(N,) sqrt(w * h) of the bounding box of each face's visible ground-truth points; NaN when it is empty."""
    gt = np.asarray(gt, np.float64)
    visible = np.asarray(visible, bool)
    with np.errstate(invalid="ignore"):
        low = np.where(visible[..., None], gt, np.inf).min(axis=1)
        high = np.where(visible[..., None], gt, -np.inf).max(axis=1)
        extent = high - low
        size = np.sqrt(extent[:, 0] * extent[:, 1])
    ok = (visible.sum(axis=1) >= 2) & np.isfinite(size) & (size > 0)
    return np.where(ok, size, np.nan)


def nme_per_face(pred, gt, visible, scheme, by: str = "corners", points=None) -> np.ndarray:
    """(N,) normalised mean error of each face (a fraction, not %); NaN if unscorable.

    Args:
        points: optional indices to score (a region); default all points.
    """
    errors = point_errors(pred, gt, visible)
    if points is not None:
        errors = errors[:, list(points)]
    norm = normalising_distance(gt, visible, scheme, by)
    with np.errstate(invalid="ignore"):
        counts = np.sum(~np.isnan(errors), axis=1)
        mean = np.where(counts > 0, np.nansum(errors, axis=1) / np.maximum(counts, 1), np.nan)
    return mean / norm


def of_points(visible, points=None) -> np.ndarray:
    """``visible`` (N, K) kept only at the indices ``points`` (all where None): the points a row is scored on."""
    visible = np.asarray(visible, bool)
    return visible if points is None else visible & np.isin(np.arange(visible.shape[1]), list(points))


def mean_offset(pred, gt, visible, scheme, points=None) -> tuple[float, float]:
    """(x, y) mean signed error over the scored faces' visible points (of ``points``, default all), in % of each
    face's normalising distance."""
    gt = np.asarray(gt, np.float64)
    signed = np.asarray(pred, np.float64).reshape(gt.shape) - gt
    visible = np.asarray(visible, bool)
    norm = normalising_distance(gt, visible, scheme)
    visible = of_points(visible, points)
    counts = visible.sum(axis=1)
    scored = ~np.isnan(norm) & (counts > 0)
    if not scored.any():
        return float("nan"), float("nan")
    per_face = np.where(visible[..., None], signed, 0.0).sum(axis=1)[scored] / counts[scored, None]
    x, y = 100.0 * (per_face / norm[scored, None]).mean(axis=0)
    return float(x), float(y)


def ced(nme: np.ndarray, threshold: float = 0.10, steps: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative error distribution: x in [0, threshold], fraction of faces with NME <= x."""
    nme = np.asarray(nme, np.float64)
    nme = nme[~np.isnan(nme)]
    xs = np.linspace(0.0, threshold, steps + 1)
    if len(nme) == 0:
        return xs, np.full_like(xs, np.nan)
    ys = np.searchsorted(np.sort(nme), xs, side="right") / len(nme)
    return xs, ys


def auc(nme: np.ndarray, threshold: float) -> float:
    """Area under the CED on [0, threshold], divided by threshold.

    Exact for the step function: each face with error e <= t contributes
    (t - e) / t, so AUC = mean over faces of max(0, 1 - e / t).
    """
    nme = np.asarray(nme, np.float64)
    nme = nme[~np.isnan(nme)]
    if len(nme) == 0:
        return float("nan")
    return float(np.mean(np.clip(1.0 - nme / threshold, 0.0, None)))


def failure_rate(nme: np.ndarray, threshold: float) -> float:
    """Fraction of scored faces with NME above ``threshold``."""
    nme = np.asarray(nme, np.float64)
    nme = nme[~np.isnan(nme)]
    return float(np.mean(nme > threshold)) if len(nme) else float("nan")


def summarize(pred, gt, visible, scheme, thresholds=THRESHOLDS, points=None) -> dict:
    """All headline numbers for one model on one dataset (percentages where noted).

    ``points``: the indices scored (a model that gives some of the scheme's points: dlib's mapped to a markup of
    your own); default all.  Each face is normalised as the scheme normalises, from all its annotated points;
    a region without any of ``points`` has no value (NaN).

    Returns a dict with ``faces`` (scored), ``unscored``, ``nme`` (%),
    ``nme_pupils`` (% or absent), ``auc@t`` and ``fr@t`` (%) per threshold,
    ``offset_x`` / ``offset_y`` (%, ``mean_offset``) and ``nme_<region>`` (%) per scheme region.
    """
    scheme = _scheme(scheme)
    per_face = nme_per_face(pred, gt, visible, scheme, points=points)
    scored = ~np.isnan(per_face)
    out = {
        "faces": int(scored.sum()),
        "unscored": int((~scored).sum()),
        "nme": 100.0 * float(np.nanmean(per_face)) if scored.any() else float("nan"),
    }
    if scheme.pupils is not None:
        pupils = nme_per_face(pred, gt, visible, scheme, by="pupils", points=points)
        out["nme_pupils"] = 100.0 * float(np.nanmean(pupils)) if (~np.isnan(pupils)).any() else float("nan")
    for t in thresholds:
        out[f"auc@{t:g}"] = auc(per_face, t)
        out[f"fr@{t:g}"] = 100.0 * failure_rate(per_face, t)
    out["offset_x"], out["offset_y"] = mean_offset(pred, gt, visible, scheme, points)
    for region, members in scheme.regions.items():
        members = [i for i in members if points is None or i in points]
        region_nme = nme_per_face(pred, gt, visible, scheme, points=members)
        out[f"nme_{region}"] = 100.0 * float(np.nanmean(region_nme)) if (~np.isnan(region_nme)).any() else float("nan")
    return out


# Edges of the head-turn bins of the result tables (``head_turn``): frontal below 0.3, near profile from 0.7.
TURN_EDGES = (0.3, 0.5, 0.7)


def turn_points(scheme) -> tuple[int, int, int] | None:
    """The points a face's head turn is read from, in ``scheme``'s numbering: iBUG 68's points 2 and 14 on the
    outline of either cheek and 30, the nose tip; None where the scheme has none of them (its ``ibug68`` map gives
    a point for each of the three in a scheme of your own)."""
    scheme = _scheme(scheme)
    if scheme.name == "ibug68":
        return 2, 14, 30
    where = list(scheme.ibug68 or ())
    found = [where.index((i,)) if (i,) in where else None for i in (2, 14, 30)]
    return None if None in found else tuple(found)


def head_turn(gt, visible, scheme) -> np.ndarray:
    """(N,) how far each annotated face is turned to the side, 0 (frontal) to 1 (profile): the nose tip's distance
    from the middle of the two cheek points (``turn_points``) along the line through them, over half their
    distance, capped at 1 (a profile's nose lies beyond the near cheek). Along that line, so a tilted head reads as
    an upright one. NaN where one of the points is not annotated or the scheme has none of them."""
    gt = np.asarray(gt, np.float64)
    points = turn_points(scheme)
    if points is None:
        return np.full(len(gt), np.nan)
    right, left, nose = (gt[:, i] for i in points)
    across = left - right
    span = np.sum(across * across, axis=-1)  # the cheeks' distance, squared
    with np.errstate(invalid="ignore", divide="ignore"):
        turn = np.abs(2 * np.sum((nose - (right + left) / 2) * across, axis=-1) / span)
    turn = np.where(span > 0, np.minimum(turn, 1.0), 1.0)  # both cheeks on one spot: nothing but profile
    seen = np.asarray(visible, bool)[:, list(points)].all(axis=1) & np.isfinite(gt[:, list(points)]).all(axis=(1, 2))
    return np.where(seen, turn, np.nan)


def masked_mse(pred, gt, visible) -> float:
    """The seed's loss on [0, 1] coordinates, over visible coordinates only."""
    pred = np.asarray(pred, np.float64).reshape(np.shape(gt))
    sq = (pred - np.asarray(gt, np.float64)) ** 2
    mask = np.repeat(np.asarray(visible, bool)[..., None], 2, axis=-1)
    return float(sq[mask].mean()) if mask.any() else float("nan")
