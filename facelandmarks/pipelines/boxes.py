"""Region boxes and patches, in normalised face-crop coordinates."""

from __future__ import annotations

import numpy as np

from facelandmarks.landmarks import REFINED_REGIONS, Scheme
from facelandmarks.pipelines.config import MIN_SIDE, PipelineConfig


def region_boxes(points: np.ndarray, visible: np.ndarray, scheme: Scheme, regions, margin: float) -> np.ndarray:
    """(N, R, 4) square boxes around each region's visible points, enlarged by ``margin`` per side.

    A region without a visible point gets a NaN box.
    """
    n = len(points)
    out = np.full((n, len(regions), 4), np.nan, np.float32)
    for r, region in enumerate(regions):
        idx = list(scheme.regions[region])
        pts, vis = points[:, idx], visible[:, idx]
        big = np.where(vis[..., None], pts, np.nan)
        with np.errstate(invalid="ignore"), _quiet_nan():
            lo, hi = np.nanmin(big, axis=1), np.nanmax(big, axis=1)
        centre = (lo + hi) / 2
        side = np.maximum((hi - lo).max(axis=1) * (1 + 2 * margin), MIN_SIDE)
        out[:, r] = np.concatenate([centre - side[:, None] / 2, centre + side[:, None] / 2], axis=1)
    return out


class _quiet_nan:
    def __enter__(self):
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        self._w.__exit__(*exc)


def boxes_to_centres_sides(boxes: np.ndarray):
    return (boxes[..., :2] + boxes[..., 2:]) / 2, boxes[..., 2] - boxes[..., 0]


def boxes_from_centres(centres: np.ndarray, sides: np.ndarray) -> np.ndarray:
    half = np.asarray(sides)[..., None] / 2
    return np.concatenate([centres - half, centres + half], axis=-1).astype(np.float32)


def box_corners(boxes: np.ndarray) -> np.ndarray:
    """(N, R, 4) boxes -> (N, 4R, 2) corners in ``box_scheme`` order."""
    x0, y0, x1, y1 = (boxes[..., i] for i in range(4))
    corners = np.stack([np.stack([x0, y0], -1), np.stack([x1, y0], -1), np.stack([x0, y1], -1), np.stack([x1, y1], -1)], axis=2)
    return corners.reshape(len(boxes), -1, 2).astype(np.float32)


def boxes_from_corners(corners: np.ndarray) -> np.ndarray:
    """(N, 4R, 2) predicted corners -> (N, R, 4) square boxes (the corners' bounds, squared)."""
    c = corners.reshape(len(corners), -1, 4, 2)
    lo, hi = c.min(axis=2), c.max(axis=2)
    centre, side = (lo + hi) / 2, np.maximum((hi - lo).max(axis=-1), MIN_SIDE)
    return boxes_from_centres(centre, side)


def inference_boxes(config: PipelineConfig, points: np.ndarray, scheme: Scheme, corners=None) -> np.ndarray:
    """(N, R, 4) boxes the refiners see: from predicted points, or from box-net corners."""
    regions = list(config.regions)
    if corners is not None:  # the box network predicts every REFINED_REGIONS box, in that order
        return boxes_from_corners(corners)[:, [REFINED_REGIONS.index(r) for r in regions]]
    boxes = region_boxes(points, np.ones(points.shape[:2], bool), scheme, regions, config.margin)
    if config.kind == "cascade":
        centres, _ = boxes_to_centres_sides(boxes)
        boxes = boxes_from_centres(centres, np.array([config.fixed_sides[r] for r in regions], np.float32))
    return boxes
