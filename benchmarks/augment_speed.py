"""Images per second of the Augmenter on the current Keras backend.

Batches of real face crops (300-W AFW, cropped with faces.py) go through
``Augmenter.__call__`` -- host-side parameter sampling, the compiled keras.ops
work and the copy back to numpy -- as a data loader would call it.  Prints one
table row per configuration.

    KERAS_BACKEND=jax nice python benchmarks/augment_speed.py
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from facelandmarks.cli.common import OneLineParser
from facelandmarks.machine import cpu_description
from facelandmarks.runtime import startup

ROOT = Path(__file__).resolve().parents[1]

CONFIGS = {
    "default": "default",
    "geometric only": "default,brightness=0,contrast=0,noise=0,occlusion=0",
    "photometric only": "default,rotation=0,scale=0,translate=0,shear=0,flip=0",
    "everything, p=1": "rotation=15@1,scale=0.1@1,translate=0.05@1,shear=5@1,flip=1,"
    "brightness=0.2@1,contrast=0.2@1,noise=5@1,occlusion=1",
}


def load_faces(paths: list[Path], size: int) -> tuple[np.ndarray, np.ndarray]:
    """The real 300-W AFW face crops of ``paths`` (their .pts files) and their normalised landmarks."""
    import cv2

    from facelandmarks.data import faces

    images, landmarks = [], []
    for pts in paths:
        points = np.array(open(pts).read().split("{")[1].split("}")[0].split(), np.float64).reshape(-1, 2)
        image = cv2.imread(str(pts.with_suffix(".jpg")), cv2.IMREAD_COLOR)[..., ::-1]
        box = faces.crop_box_from_landmarks(points)
        images.append(faces.crop_face(image, box, size))
        landmarks.append(faces.points_to_crop(points, box))
    return np.stack(images), np.stack(landmarks)


def time_config(augmenter, images, landmarks, visible, batches: int, warmup: int) -> list[float]:
    for _ in range(warmup):  # the first call compiles
        augmenter(images, landmarks, visible)
    seconds = []
    for _ in range(batches):
        start = time.perf_counter()
        augmenter(images, landmarks, visible)
        seconds.append(time.perf_counter() - start)
    return seconds


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32, help="images per batch (default 32)")
    parser.add_argument("--size", type=int, default=128, help="crop side in pixels (default 128)")
    parser.add_argument("--batches", type=int, default=30, help="timed batches per configuration (default 30)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed batches first (default 3)")
    parser.add_argument("--eager", action="store_true", help="also time the uncompiled keras.ops path")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("FACE_DATA_DIR", ROOT.parent / "shared" / "data")),
        help="folder holding 300w/ (default $FACE_DATA_DIR or ../shared/data)",
    )
    return parser


def main(argv=None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("batch", "size", "batches"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")

    if not (args.data_dir / "300w" / "afw").is_dir():  # it said so after Keras had loaded, naming no option
        parser.error(f"{args.data_dir / '300w' / 'afw'}: no such folder (--data-dir: the face data, with 300-W's afw/)")
    paths = sorted((args.data_dir / "300w" / "afw").glob("*.pts"))[:args.batch]
    if len(paths) < args.batch:  # it said so after Keras had loaded, exit status 1, without the script's name
        parser.error(f"{args.data_dir / '300w' / 'afw'}: {len(paths)} face(s) (.pts files), fewer than --batch {args.batch}")
    startup()  # Keras and its backend without their start-up INFO lines, after --help has answered
    import keras
    from tqdm import tqdm

    from facelandmarks.data.augment.augmenter import Augmenter
    from facelandmarks.data.augment.config import AugmentConfig

    images, landmarks = load_faces(paths, args.size)
    visible = np.ones(landmarks.shape[:2], bool)
    runs = [(name, compiled) for name in CONFIGS for compiled in ((True, False) if args.eager else (True,))]
    rows = []
    for name, compiled in tqdm(runs, desc="configurations", leave=False):
        augmenter = Augmenter(AugmentConfig.parse(CONFIGS[name]), "ibug68", seed=0, compile=compiled)
        seconds = np.array(time_config(augmenter, images, landmarks, visible, args.batches, args.warmup))
        rows.append((name, "yes" if compiled else "no", np.median(seconds) * 1000, np.min(seconds) * 1000))

    print(
        f"\nAugmenter, backend {keras.backend.backend()}, batches of {args.batch} x {args.size} px RGB, "
        f"{cpu_description()}; median of {args.batches} batches"
    )
    print(f"| {'configuration':18s} | compiled | ms/batch (median) | ms/batch (min) | images/s |")
    print(f"|{'-' * 20}|----------|-------------------|----------------|----------|")
    for name, compiled, median, best in rows:
        print(f"| {name:18s} | {compiled:8s} | {median:17.1f} | {best:14.1f} | {args.batch / median * 1000:8.0f} |")


if __name__ == "__main__":
    main()
