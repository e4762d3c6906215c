"""Landmarks on photos and videos: overlays and JSON per face."""

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


def run_on_images(run_dir, target, out_dir, flip_test=False) -> int:
    """Overlay PNG + JSON per photo; returns the number of photos without a face or unreadable."""
    import cv2

    from facelandmarks.drawing import PREDICTION, draw_points, save_png

    predictor = Predictor.load(run_dir, flip_test=flip_test)
    target, out_dir = Path(target), Path(out_dir)
    if not target.exists():
        raise FileNotFoundError(f"{target}: no such photo or folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    files = image_files(target)
    if not files:
        raise FileNotFoundError(f"{target}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    failures = 0
    for path in files:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            print(f"{path}: cannot read image (corrupt or not an image)", file=sys.stderr)
            failures += 1
            continue
        image = bgr[..., ::-1].copy()
        found = predictor.detect_and_predict(image)
        if not found:
            print(f"{path}: no face found", file=sys.stderr)
            failures += 1
            continue
        overlay = image
        for face in found:
            overlay = draw_points(overlay, face.points, PREDICTION)
            x0, y0, x1, y1 = (int(round(v)) for v in face.detection)
            cv2.rectangle(overlay, (x0, y0), (x1, y1), (255, 255, 0), max(1, round(min(image.shape[:2]) / 400)))
        save_png(out_dir / f"{path.stem}_landmarks.png", overlay)
        record = {"image": str(path), "scheme": predictor.scheme.name, "width": image.shape[1], "height": image.shape[0],
                  "faces": [f.to_json() for f in found]}
        (out_dir / f"{path.stem}_landmarks.json").write_text(json.dumps(record, indent=1))
        print(f"{path}: {len(found)} face(s) -> {out_dir / (path.stem + '_landmarks.png')}")
    return failures


def run_on_video(run_dir, source, out_path, max_frames=None, flip_test=False) -> dict:
    """Landmarks on every frame of a video file or camera; writes an overlay video."""
    import time

    import cv2

    from facelandmarks.drawing import PREDICTION, draw_points

    predictor = Predictor.load(run_dir, flip_test=flip_test)
    capture_source = int(source) if str(source).isdigit() else str(source)
    if isinstance(capture_source, str) and not Path(capture_source).is_file():
        raise FileNotFoundError(f"{source}: no such video file")
    capture = cv2.VideoCapture(capture_source)
    if not capture.isOpened():
        raise OSError(f"{source}: cannot open video")
    fps_in = capture.get(cv2.CAP_PROP_FPS) or 25.0
    writer, frames, faces_seen, start = None, 0, 0, time.perf_counter()
    try:
        while max_frames is None or frames < max_frames:
            ok, bgr = capture.read()
            if not ok:
                break
            image = bgr[..., ::-1].copy()
            found = predictor.detect_and_predict(image)
            faces_seen += len(found)
            for face in found:
                image = draw_points(image, face.points, PREDICTION)
            if writer is None:
                Path(out_path).parent.mkdir(parents=True, exist_ok=True)
                writer = cv2.VideoWriter(str(out_path), cv2.VideoWriter_fourcc(*"mp4v"), fps_in, (image.shape[1], image.shape[0]))
            writer.write(np.ascontiguousarray(image[..., ::-1]))
            frames += 1
    finally:
        capture.release()
        if writer is not None:
            writer.release()
    seconds = time.perf_counter() - start
    result = {"frames": frames, "faces": faces_seen, "seconds": round(seconds, 2),
              "fps": round(frames / seconds, 2) if seconds > 0 else 0.0, "output": str(out_path)}
    if frames == 0:
        raise OSError(f"{source}: no frames could be read")
    return result
