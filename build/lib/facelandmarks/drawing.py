"""Drawing landmarks on faces: TensorBoard previews, galleries and photo overlays."""

from __future__ import annotations

import cv2
import numpy as np

GROUND_TRUTH = (40, 220, 40)  # green
PREDICTION = (255, 40, 40)  # red (RGB)


def draw_points(image: np.ndarray, points_px: np.ndarray, color, visible=None, radius: int | None = None) -> np.ndarray:
    """A copy of an RGB uint8 image with filled discs at pixel coordinates ``points_px`` (K, 2)."""
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
            cv2.circle(out, (int(round(x * 16)), int(round(y * 16))), radius * 16, color, -1, cv2.LINE_AA, shift=4)
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


def save_png(path, image_rgb: np.ndarray) -> None:
    """Write an RGB image as PNG (raises with the path if OpenCV cannot write it)."""
    if not cv2.imwrite(str(path), cv2.cvtColor(np.ascontiguousarray(image_rgb), cv2.COLOR_RGB2BGR)):
        raise OSError(f"{path}: could not write PNG")
