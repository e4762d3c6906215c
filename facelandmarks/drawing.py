"""Drawing landmarks on faces: TensorBoard previews, galleries and photo overlays."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from facelandmarks.files import written_whole

GROUND_TRUTH = (40, 220, 40)  # green
PREDICTION = (255, 40, 40)  # red (RGB)
DETECTION = (255, 255, 0)  # yellow (RGB)

# Marker radius and box line width as fractions of a face's size (``face_side``).  On 555 annotated
# 300-W faces (afw + every 4th helen) neighbouring jaw points lie 0.125 x the side apart (median; 5 %:
# 0.112) and a point's nearest neighbour 0.061 x (median): discs of radius 0.015 x the side leave gaps of
# about 0.095 x the side between jaw points and of about a disc's width between most neighbours.
# (0.02 looked heavy on the 400 px face in breakingbad.jpg; 1 px is the least, on faces under 67 px.)
MARKER_FRACTION = 0.015
LINE_FRACTION = 0.008


def face_side(points_px: np.ndarray) -> float:
    """The larger side of the bounding box of a face's finite points (0 when none is finite)."""
    points_px = np.asarray(points_px, np.float64).reshape(-1, 2)
    points_px = points_px[np.isfinite(points_px).all(1)]
    return float((points_px.max(0) - points_px.min(0)).max()) if len(points_px) else 0.0


def marker_radius(points_px: np.ndarray) -> float:
    """Disc radius (px, at least 1) for one face's points, in proportion to the face."""
    return max(1.0, MARKER_FRACTION * face_side(points_px))


def line_width(box) -> int:
    """Line width (px, at least 1) for a face's ``[x0, y0, x1, y1]`` box, in proportion to it."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return max(1, round(LINE_FRACTION * max(x1 - x0, y1 - y0)))


def draw_points(image: np.ndarray, points_px: np.ndarray, color, visible=None, radius: float | None = None) -> np.ndarray:
    """A copy of an RGB uint8 image with filled discs at pixel coordinates ``points_px`` (K, 2).

    ``radius`` in pixels (drawn to 1/16 px; None: 1/160 of the image's smaller side).
    """
    out = np.ascontiguousarray(image, dtype=np.uint8).copy()
    if out.ndim == 2 or out.shape[-1] == 1:
        out = cv2.cvtColor(out.reshape(out.shape[:2]), cv2.COLOR_GRAY2RGB)
    if radius is None:
        radius = max(1, round(min(out.shape[:2]) / 160))
    points_px = np.asarray(points_px, np.float64)
    keep = np.ones(len(points_px), bool) if visible is None else np.asarray(visible, bool)
    for (x, y), ok in zip(points_px, keep):
        if ok and np.isfinite(x) and np.isfinite(y):
            # sub-pixel accurate centre (cv2 shift=4 -> 1/16 px)
            cv2.circle(out, (int(round(x * 16)), int(round(y * 16))), int(round(radius * 16)), color, -1, cv2.LINE_AA, shift=4)
    return out


def draw_crop(image: np.ndarray, pred_uv=None, gt_uv=None, visible=None, scale: int = 1) -> np.ndarray:
    """A face crop (uint8 S x S) with ground truth (green) and prediction (red) in crop coordinates."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    if scale != 1:
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    size = image.shape[0]
    out = image
    if gt_uv is not None:
        out = draw_points(out, np.asarray(gt_uv) * size - 0.5, GROUND_TRUTH, visible)
    if pred_uv is not None:
        out = draw_points(out, np.asarray(pred_uv) * size - 0.5, PREDICTION)
    if out.ndim == 2 or out.shape[-1] == 1:
        out = cv2.cvtColor(out.reshape(out.shape[:2]), cv2.COLOR_GRAY2RGB)
    return out


def grid(tiles: list[np.ndarray], columns: int) -> np.ndarray:
    """Tile equally sized RGB images into one image, row by row (blank-padded)."""
    if not tiles:
        raise ValueError("no tiles to arrange")
    h, w = tiles[0].shape[:2]
    rows = -(-len(tiles) // columns)
    out = np.full((rows * h, columns * w, 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        out[r * h:(r + 1) * h, c * w:(c + 1) * w] = tile
    return out


def save_png(path, image_rgb: np.ndarray, stale=None) -> None:
    """Write an RGB image as PNG, whole or not at all (raises with the path if OpenCV cannot write it).  ``stale``, a
    file that would not match the new image (its record), is removed once the image is written, before it replaces
    the earlier one: a failed write leaves both as they were."""
    with written_whole(path) as partial:
        if not cv2.imwrite(str(partial), cv2.cvtColor(np.ascontiguousarray(image_rgb), cv2.COLOR_RGB2BGR)):
            raise OSError(f"{path}: could not write PNG")
        if stale is not None:
            Path(stale).unlink(missing_ok=True)
