"""Landmarks on photos: overlays and JSON per face."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from facelandmarks.inference.predictor import Predictor

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp"}


def image_files(target: Path) -> list[Path]:
    if target.is_dir():
        return sorted(p for p in target.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    return [target]


def output_name(photo: Path, kind: str) -> str:
    """``x.jpg`` -> ``x.jpg_landmarks.png`` (``kind`` 'png') or ``.json``: the whole file name, suffix and
    all, so ``x.jpg`` and ``x.png`` in one folder never write over each other's results."""
    return f"{photo.name}_landmarks.{kind}"


def run_on_images(run_dir, target, out_dir, flip_test=False) -> dict:
    """Overlay PNG + JSON per photo (``output_name``); returns the counts of photos ``done`` (with a face),
    ``no_face`` and ``unreadable``.

    An unreadable photo in a folder is skipped with one line and the rest are processed; a missing
    target, a folder without photos, a single unreadable photo or a folder of them only raise, naming
    the file or folder, before or instead of any work.
    """
    target, out_dir = Path(target), Path(out_dir)
    if not target.exists():
        raise FileNotFoundError(f"{target}: no such photo or folder")
    files = image_files(target)
    if not files:
        raise ValueError(f"{target}: no images in this folder (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    if not target.is_dir() and read_photo(target) is None:  # before the model loads
        raise ValueError(f"{target}: cannot read image (corrupt or not an image)")
    predictor = Predictor.load(run_dir, flip_test=flip_test)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {"done": 0, "no_face": 0, "unreadable": 0}
    for path in files:
        image = read_photo(path)
        if image is None:
            print(f"{path}: cannot read image (corrupt or not an image); skipped", file=sys.stderr)
            counts["unreadable"] += 1
            continue
        found = predictor.detect_and_predict(image)
        if not found:
            print(f"{path}: no face found", file=sys.stderr)
            counts["no_face"] += 1
            continue
        written = write_results(path, image, found, predictor.scheme.name, out_dir)
        print(f"{path}: {len(found)} face(s) -> {written}")
        counts["done"] += 1
    if counts["unreadable"] == len(files):
        raise ValueError(f"{target}: none of its {len(files)} image(s) could be read")
    return counts


def read_photo(path: Path) -> np.ndarray | None:
    """The photo as RGB uint8, or None when it cannot be read (corrupt, not an image, no permission)."""
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return None if bgr is None else bgr[..., ::-1].copy()


def write_results(path: Path, image: np.ndarray, found: list, scheme: str, out_dir: Path) -> Path:
    """The overlay PNG (points, and the detector's boxes) and the JSON of one photo; returns the PNG's path."""
    import cv2

    from facelandmarks.drawing import PREDICTION, draw_points, save_png

    overlay = image
    for face in found:
        overlay = draw_points(overlay, face.points, PREDICTION)
        x0, y0, x1, y1 = (int(round(v)) for v in face.detection)
        cv2.rectangle(overlay, (x0, y0), (x1, y1), (255, 255, 0), max(1, round(min(image.shape[:2]) / 400)))
    png = out_dir / output_name(path, "png")
    save_png(png, overlay)
    record = {"image": str(path), "scheme": scheme, "width": image.shape[1], "height": image.shape[0],
              "faces": [f.to_json() for f in found]}
    (out_dir / output_name(path, "json")).write_text(json.dumps(record, indent=1))
    return png
