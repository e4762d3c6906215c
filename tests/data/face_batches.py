"""Tiny batches of real faces for model and loss tests (read straight from ../shared/data: tests marked `data` only).

300-W (iBUG 68 points, all visible) and MUCT (76 points; cameras b and c
hide some points, marked 0,0 in the csv) are cropped with ``faces.py`` the
way the toolkit crops every face, at whatever small size a test asks for.
"""

from __future__ import annotations

import csv
import functools
from pathlib import Path

import cv2
import numpy as np

from facelandmarks.data import faces

# MUCT faces with hidden points (cameras b/c) and frontal ones (a), lighting q and r.
MUCT_NAMES = ("i000qa-fn", "i000qb-fn", "i000qc-fn", "i001qa-mn", "i001qc-mn", "i002rb-mn", "i003qc-fn", "i004qa-mn")


def _read_pts(path: Path) -> np.ndarray:
    body = path.read_text().split("{")[1].split("}")[0].split()
    return np.array(body, np.float64).reshape(-1, 2)


def _load_rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return image[..., ::-1].copy()


@functools.lru_cache(maxsize=2)
def read_muct_rows(data_dir) -> dict:
    """Every row of MUCT's complete landmark file: name -> (76, 2) pixel points (0,0 where hidden)."""
    with open(Path(data_dir) / "muct" / "muct-landmarks" / "muct76-opencv.csv", newline="") as handle:
        reader = csv.reader(handle)
        next(reader)
        return {row[0]: np.array(row[2:], np.float64).reshape(76, 2) for row in reader}


@functools.cache
def _raw_faces(data_dir: str, scheme: str, count: int):
    data_dir = Path(data_dir)
    out = []
    if scheme == "ibug68":
        for pts in sorted((data_dir / "300w" / "afw").glob("*.pts"))[:count]:
            out.append((_load_rgb(pts.with_suffix(".jpg")), _read_pts(pts), np.ones(68, bool)))
    elif scheme == "muct76":
        wanted = read_muct_rows(data_dir)
        for name in MUCT_NAMES[:count]:
            points = wanted[name]
            out.append((_load_rgb(data_dir / "muct" / "jpg" / f"{name}.jpg"), points, (points != 0).any(axis=1)))
    else:
        raise ValueError(f"no test faces for scheme {scheme!r}")
    return tuple(out)


def face_batch(data_dir, scheme: str = "ibug68", size: int = 48, count: int = 8, channels: int = 3):
    """(images uint8 (N, S, S, C), landmarks float32 (N, K, 2) in [0, 1], visible bool (N, K))."""
    images, landmarks, visible = [], [], []
    for image, points, seen in _raw_faces(str(data_dir), scheme, count):
        box = faces.crop_box_from_landmarks(points, seen)
        crop = faces.crop_face(image, box, size)
        if channels == 1:
            crop = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)[..., None]
        images.append(crop)
        landmarks.append(np.where(seen[:, None], faces.points_to_crop(points, box), 0.0))
        visible.append(seen)
    return np.stack(images), np.stack(landmarks).astype(np.float32), np.stack(visible)
