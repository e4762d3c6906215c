"""Batched prediction (evaluation's hot loop) at several batch sizes: faces/s, kernel share, page faults (not a test).

    python benchmarks/predict_batches.py --data dataset/ibug128_test.npz
    python benchmarks/predict_batches.py --data dataset/ibug128_test.npz --allocator both --runtime keras

``Predictor.predict_crops`` on the first ``--faces`` crops of a prepared npz, once per batch size (the
predictor's own default, ``Predictor.batch_size``, marked), after one untimed pass.  Each row gives
faces per second, the kernel's share of the process's CPU time and minor page faults per face over the
timed passes.  ``--allocator both`` runs the whole table twice in fresh processes, glibc's allocator as
it comes (``FACELANDMARKS_MALLOC=0``) and tuned (``runtime.tune_allocator``), as
``train_throughput.py`` does for training.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

from facelandmarks import machine, runtime
from facelandmarks.cli.common import OneLineParser
from facelandmarks.data import npz
from facelandmarks.inference.predictor import Predictor

try:
    import _common  # python benchmarks/predict_batches.py: this folder leads sys.path
    import _per_allocator
except ModuleNotFoundError:  # run or imported from the repository root
    from benchmarks import _common, _per_allocator


def measure(predictor: Predictor, crops: np.ndarray, batch: int, repeats: int) -> dict:
    predictor.predict_crops(crops[: batch * 2], batch_size=batch)  # warm-up: tracing, first buffers
    start, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(repeats):
        predictor.predict_crops(crops, batch_size=batch)
    seconds, end = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
    share, faults = machine.kernel_share_and_faults(start, end)
    return {"batch": batch, "faces_per_second": len(crops) * repeats / seconds, "kernel_share": share,
            "faults_per_face": faults / (len(crops) * repeats)}


def table(rows: list, default: int, label: str = "") -> None:
    for row in rows:
        mark = " (default)" if row["batch"] == default else ""
        print(f"| {label}{row['batch']}{mark} | {row['faces_per_second']:.1f} | {row['kernel_share']:.1%} | "
              f"{row['faults_per_face']:,.0f} |")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="prepared npz whose crops are predicted")
    parser.add_argument("--model", default=None, help="run directory or export (default: the shipped model)")
    parser.add_argument("--runtime", default="keras", choices=["auto", "keras", "onnx", "litert"],
                        help="how the model runs (Predictor.load; default: keras)")
    parser.add_argument("--faces", type=int, default=512, help="the first N crops of --data (default 512)")
    parser.add_argument("--batches", type=_common.comma_numbers(int, 1, "batch sizes", ", such as 8,16,32"),
                        default="8,16,32,64",
                        help="comma-separated batch sizes, beside the default (default 8,16,32,64)")
    parser.add_argument("--repeats", type=int, default=2, help="timed passes over the faces per batch size (default 2)")
    parser.add_argument("--flip-test", action="store_true", help="predict each face and its mirror image (evaluate.py --flip-test)")
    parser.add_argument("--allocator", choices=["tuned", "both"], default="tuned",
                        help="both: glibc as it comes and tuned, in two fresh processes")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    if min(args.faces, args.repeats) < 1:  # a division by zero after the timing
        parser.error(f"--faces and --repeats must be >= 1, got {args.faces} and {args.repeats}")
    from facelandmarks.cli.common import USER_ERRORS, error_line
    from facelandmarks.inference.runtimes import is_export

    if args.model and is_export(args.model) and args.runtime == "keras":  # Predictor.load's traceback, after Keras loaded
        parser.error(f"{args.model} is an export: give --runtime onnx, litert or auto (the default, keras, needs the run directory)")
    if not Path(args.data).is_file():
        parser.error(f"{args.data}: no such npz (prepare one with datagen.py, README's Workflow)")
    if args.allocator == "both":
        results = _per_allocator.measure_per_allocator(__file__, [a for a in argv if a not in ("--allocator", "both")])
        if results is None:
            return 2  # measure_per_allocator said which run failed, in one line
        print(results[0][1]["title"])
        print(machine.cpu_description())
        print("| allocator, batch | faces/s | kernel share of CPU time | minor faults per face |")
        print("|---|---|---|---|")
        for label, result in results:
            table(result["rows"], result["default"], f"{label}, ")
        return 0

    runtime.startup()  # Keras and its backend without their start-up INFO lines, after --help has answered
    try:  # not an npz; no such run; no export, or one of other weights, for --runtime onnx / litert: were tracebacks
        crops = npz.load_npz(args.data)["images"][: args.faces]
        predictor = Predictor.load(args.model, runtime=args.runtime, flip_test=args.flip_test)
    except USER_ERRORS as err:
        parser.error(error_line(err, (args.data,)))
    default = predictor.batch_size
    batches = sorted({default, *args.batches})
    from tqdm import tqdm

    rows = [measure(predictor, crops, batch, args.repeats) for batch in tqdm(batches, desc="batch sizes", leave=False)]
    title = (f"{predictor.name} ({predictor.runtime}), {len(crops)} faces of {args.data}, flip test {args.flip_test}, "
             f"{args.repeats} timed passes per batch size, allocator {machine.preloaded_allocator()}")
    if args.json:
        print(json.dumps({"title": title, "default": default, "rows": rows}))
        return 0
    print(title)
    print(machine.cpu_description())
    print("| batch | faces/s | kernel share of CPU time | minor faults per face |")
    print("|---|---|---|---|")
    table(rows, default)
    return 0


if __name__ == "__main__":
    sys.exit(main())
