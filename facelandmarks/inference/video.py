"""Landmarks on every frame of a video file or camera, written as an overlay video."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facelandmarks.inference.predictor import Predictor


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
