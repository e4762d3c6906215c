"""Where the face data lives, and the rule that splits the suite.

``tests/unit/`` needs nothing but the package: synthetic arrays, hand-computed values.
``tests/data/`` reads the licensed face data in ``../shared/data`` (or ``FACE_DATA_DIR``);
every module there carries ``pytestmark = pytest.mark.data``.

``pytest -m "not data"`` therefore runs on any machine.  When tests marked ``data`` are
selected and the data folder is missing, the session stops with one line naming the folder
(never a silent skip); a test that asks for ``data_dir`` without the marker stops it too.
"""

import gc
import os
import signal
from pathlib import Path

import pytest

from facelandmarks import runtime

ROOT = Path(__file__).resolve().parents[1]

DATA_DIR = Path(os.environ.get("FACE_DATA_DIR", ROOT.parent / "shared" / "data")).resolve()

# The tests compile many small XLA programs (every JAX step, TensorFlow's jit-compiled augmentation) and
# run each for a step or two, so LLVM's optimisation of the generated CPU code costs more than it saves:
# the JAX half of `make test` took 1.37x as long with it (docs/results.md#test-suite-timings). It changes
# how fast the code runs, not what it computes (beyond rounding in the last bits: every test passes
# either way); XLA's graph passes all still run. Set before any backend loads (here, in every
# pytest-xdist process, and inherited by the scripts tests start); training, evaluation and the
# benchmarks keep XLA's defaults. An XLA_FLAGS of your own replaces it.
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true")

# glibc in each test process, set before any backend computes, so that a script's main or a Predictor that a test
# starts after another test computed finds it decided (under JAX, tuning then came too late for JAX's threads, and its
# note fell into that test's stderr). On TensorFlow tuned, as the scripts tune it. Under JAX left as glibc comes
# (runtime.leave_allocator): one arena for every thread made the in-process tests 1.17-1.22x slower, which is worth it
# for a training's big steps, not for a suite of tiny ones; the scripts the tests start are tuned as a user's are.
if runtime.keras_backend() == "jax":
    runtime.leave_allocator()
else:
    runtime.tune_allocator()

# Python's cyclic collector, less often: a test process holds TensorFlow's or JAX's millions of objects, which every
# full collection walks again (0.3-0.4 s each), and the tests' thousands of small models made 18-24 of them and 3,900-4,600
# young ones in 110 s of tests: 8-10 s a process. At these thresholds they took 3 s (docs/results.md#test-suite-timings).
# Garbage is still collected, in fewer and larger passes.
gc.set_threshold(50_000, 20, 100)


# A shell starts a background job (`make test &` in a script, `nohup ... &`) with Ctrl-C ignored, and every process
# keeps that for the ones it starts: the tests that stop a run with SIGINT, as a user's Ctrl-C does, never saw it stop
# (and failed, one after waiting its 60 s). The suite tests Ctrl-C, so it restores it for itself and its scripts.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.hookimpl(trylast=True)  # after -m / -k deselection: only the tests that will run count
def pytest_collection_modifyitems(config, items):
    unmarked = [item.nodeid for item in items if "data_dir" in item.fixturenames and not item.get_closest_marker("data")]
    if unmarked:
        raise pytest.UsageError(
            f"{len(unmarked)} test(s) use the face data (data_dir fixture) without the 'data' marker: {', '.join(unmarked[:3])}"
        )
    if config.option.collectonly or (DATA_DIR / "300w").is_dir():
        return
    if any(item.get_closest_marker("data") for item in items):
        raise pytest.UsageError(
            f"real face data not found at {DATA_DIR}; set FACE_DATA_DIR to the folder holding 300w/, muct/, youtube68/ ... "
            '(or run only the tests that need no data: pytest -m "not data")'
        )


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA_DIR
