"""What ``inference_speed.py`` and its parts share: the runtimes and their names, the thread counts they are timed
on, and a fresh process's wall time, peak RSS and output (``spawn``).

Not a benchmark (no ``--help``).  Its parts (``_inference_*.py``) import it as ``_inference_common`` when the script
runs as ``python benchmarks/inference_speed.py`` (its folder leads ``sys.path``), and as
``benchmarks._inference_common`` where it is imported from the repository root (a test's import)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FACE_DATA_DIR", ROOT.parent / "shared" / "data"))
RUNTIMES = ("keras", "onnx", "litert", "dlib")
LABELS = {"keras": "Keras", "onnx": "ONNX Runtime", "litert": "LiteRT", "dlib": "dlib ERT (68 pts)"}
BACKENDS = {"tensorflow": "TensorFlow", "jax": "JAX", "torch": "PyTorch"}
CORES = os.cpu_count() or 1
T0_ENV = "INFERENCE_SPEED_T0"  # the parent's time.time() at spawn: a worker's load time starts there


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
