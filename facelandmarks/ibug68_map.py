"""A markup's points in iBUG 68: a scheme's ``ibug68`` key, and 68 points turned into the markup's.

A scheme file may say where each of its points lies in iBUG 68 (300-W's markup, which dlib's predictor and the
shipped model give)::

    "ibug68": [36, 45, 30, 48, 54]                       # face5: five iBUG 68 points
    "ibug68": [[36, 37, 38, 39, 40, 41], ..., null]      # a point that is the mean of some; one iBUG 68 lacks

With it, ``evaluate.py --baseline dlib`` and 68-point runs are scored on the markup's data (its mapped points,
normalised as the markup normalises).  ``datagen.py select-points`` writes it into the definition it stores when
it picks the points from iBUG 68 data.
"""

from __future__ import annotations

import numpy as np

IBUG68_POINTS = 68

# kaggle15's points (``landmarks.KAGGLE15_NAMES``' order; "left" is the subject's left, on the right of a frontal
# photo: iBUG 68's 42-47 and 22-26) as iBUG 68 indices, a tuple the mean of those points: the built-in scheme's
# ``ibug68`` (dlib and the shipped model scored on Kaggle's points), and how its crop box relation was measured on
# iBUG 68 annotations (``scheme_files.kaggle15_from_ibug68``; the benchmark, and the tests on real faces)
KAGGLE15_FROM_IBUG68 = (
    (42, 43, 44, 45, 46, 47), (36, 37, 38, 39, 40, 41),  # left_eye_center, right_eye_center
    (42,), (45,), (39,), (36,),  # left eye inner, outer; right eye inner, outer corner
    (22,), (26,), (21,), (17,),  # left brow inner, outer end; right brow inner, outer end
    (30,),  # nose tip
    (54,), (48,), (51,), (57,),  # mouth left, right corner; top lip centre, bottom lip centre
)


def ibug68_of(value, points):
    """A scheme file's ``ibug68`` (``points``: the point names, or the count): per point a tuple of iBUG 68 indices
    (one, or those whose mean it is) or None; None where the file has no such key.  A bad one is a ValueError."""
    if value is None:
        return None
    k = len(points) if isinstance(points, tuple) else points
    entry_is = f"an iBUG 68 index 0-{IBUG68_POINTS - 1}, a list of them (their mean) or null"
    if not isinstance(value, list) or len(value) != k:
        got = f"{len(value)} entries" if isinstance(value, list) else repr(value)
        raise ValueError(f"'ibug68' must list one entry per point ({k}), each {entry_is}; got {got}")
    out = []
    for i, entry in enumerate(value):
        group = entry if isinstance(entry, list) else None if entry is None else [entry]
        if group is not None and (not group or not all(isinstance(v, int) and not isinstance(v, bool)
                                                       and 0 <= v < IBUG68_POINTS for v in group)):
            label = points[i] if isinstance(points, tuple) else i
            raise ValueError(f"'ibug68' entry {i} ({label}) is {entry!r}, not {entry_is}")
        out.append(None if group is None else tuple(group))
    if not any(out):
        raise ValueError("'ibug68' places no point in iBUG 68 (every entry null): leave it out")
    return tuple(out)


def ibug68_entries(mapping) -> list:
    """``mapping`` as a scheme file writes it (``ibug68_of`` reads it back): an index, a list of them, or None."""
    return [None if group is None else group[0] if len(group) == 1 else list(group) for group in mapping]


def from_ibug68(points, mapping) -> np.ndarray:
    """The markup's points from iBUG 68's (``(..., 68, 2)`` -> ``(..., K, 2)``, float64): each the mean of its
    iBUG 68 points, NaN where ``mapping`` has None."""
    points = np.asarray(points, np.float64)
    nan = np.full(points.shape[:-2] + (2,), np.nan)
    return np.stack([nan if group is None else points[..., list(group), :].mean(-2) for group in mapping], -2)


def mapped_points(mapping) -> list[int]:
    """The indices of the markup's points that ``mapping`` places in iBUG 68."""
    return [i for i, group in enumerate(mapping) if group is not None]
