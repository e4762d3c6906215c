"""Memory kept in the process between steps (issue 19): glibc's tuning, and forward passes sized to its arenas."""

import importlib.util
import os
import platform
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

from facelandmarks import runtime
from facelandmarks.inference.model_input import MAX_BATCH, PASS_BYTES, activation_bytes, forward_batch
from facelandmarks.inference.predictor import Predictor

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# A step's big buffer, allocated, written and freed again and again in one of TensorFlow's threads, after
# tf.data has set glibc's trim threshold to 128 KB (which also freezes the mmap threshold at 128 KB); prints
# whether the tuning took and the minor page faults per step.
STEPS = textwrap.dedent("""
    import ctypes, resource, threading
    from facelandmarks import runtime
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes, libc.memset.argtypes = [ctypes.c_void_p], [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
    libc.mallopt(-1, 128 * 1024)  # M_TRIM_THRESHOLD, as tf.data sets it
    tuned = runtime.tune_allocator()
    size, faults = 16 << 20, []

    def steps():
        for step in range(11):
            if step == 1:  # after a first step
                before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
            block = libc.malloc(size)
            libc.memset(block, 1, size)
            libc.free(block)
        faults.append((resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before) / 10)

    steps()  # the main thread
    worker = threading.Thread(target=steps)
    worker.start()
    worker.join()
    print(tuned, *faults)
""")


def faults_per_step(malloc: str) -> list:
    env = {**os.environ, runtime.MALLOC_ENV: malloc}
    env.pop("LD_PRELOAD", None)
    done = subprocess.run([sys.executable, "-c", STEPS], env=env, capture_output=True, text=True, check=True)
    return done.stdout.split()


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's; other C libraries are left as they are")
def test_tuned_glibc_keeps_a_steps_buffers_instead_of_faulting_them_in_again():
    tuned_flag, *as_it_comes = faults_per_step("0")
    assert tuned_flag == "False"
    assert [float(f) > 1000 for f in as_it_comes] == [True, True]  # 16 MB fresh from the kernel: 4,096 pages of 4 KB
    tuned_flag, *tuned = faults_per_step("1")
    assert tuned_flag == "True"
    assert [float(f) < 50 for f in tuned] == [True, True]  # main thread, and a thread with its own arena
    # the words FACELANDMARKS_VERBOSE takes for off turn it off too: 'off' and 'false' tuned it quietly
    assert [faults_per_step(word)[0] for word in ("off", "False", " no ")] == ["False"] * 3


# A JAX step whose temporaries (two of 128 MB) XLA allocates in a thread of its own pool, set up as the scripts set
# up (runtime.startup); prints the C library's arenas after the steps, then, over the steps after the first two, the
# minor page faults that did not grow the resident set (pages faulted in again).
XLA_STEPS = textwrap.dedent("""
    import ctypes, os, resource, tempfile
    from facelandmarks import runtime
    runtime.startup()
    import jax, jax.numpy as jnp

    @jax.jit
    def step(x):
        doubled = jax.lax.optimization_barrier(x * 2.0)  # kept whole in XLA's temporary block
        shifted = jax.lax.optimization_barrier(jnp.sin(doubled) + 1.0)
        return jnp.sum(shifted) + jnp.max(doubled)

    def faults_and_resident_pages():
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt, int(open("/proc/self/statm").read().split()[1])

    x = jnp.ones(32 << 20, jnp.float32)
    for number in range(8):
        if number == 2:
            faults, resident = faults_and_resident_pages()
        step(x).block_until_ready()
    faults_after, resident_after = faults_and_resident_pages()
    libc = ctypes.CDLL(None)
    libc.fdopen.restype, libc.fdopen.argtypes = ctypes.c_void_p, [ctypes.c_int, ctypes.c_char_p]
    libc.malloc_info.argtypes, libc.fclose.argtypes = [ctypes.c_int, ctypes.c_void_p], [ctypes.c_void_p]
    with tempfile.TemporaryFile() as info:
        stream = libc.fdopen(os.dup(info.fileno()), b"w")
        libc.malloc_info(0, stream)
        libc.fclose(stream)
        info.seek(0)
        arenas = info.read().count(b"<heap nr=")
    print(arenas, (faults_after - faults) - (resident_after - resident))
""")


@pytest.mark.skipif(not GLIBC or importlib.util.find_spec("jax") is None, reason="glibc's arenas, XLA's threads")
@pytest.mark.parametrize("malloc, backend", [("1", "jax"), ("0", "jax"), ("1", "tensorflow")])
def test_tuned_glibc_keeps_xla_step_blocks_over_an_arena_heap_in_the_process(malloc, backend):
    """XLA's step temporaries over 64 MB were mapped afresh on every step whatever the thresholds (each thread's
    arena maps such blocks itself): 692,000 faults a step for MobileNetV2 at batch 64. Tuned under JAX, every thread
    allocates from the main arena, which keeps them; left as it comes, each step faults its 256 MB in again. (Tuned,
    the heap may still grow by a block in a step, a block XLA asks for aligned not fitting the hole the last left: its
    faults are new memory, counted apart.) Keras on TensorFlow keeps its threads' arenas."""
    env = {**os.environ, runtime.MALLOC_ENV: malloc, "KERAS_BACKEND": backend}
    env.pop("LD_PRELOAD", None)
    done = subprocess.run([sys.executable, "-c", XLA_STEPS], env=env, capture_output=True, text=True, check=True)
    arenas, faulted_again = (int(word) for word in done.stdout.split())
    if malloc == "0" or backend == "tensorflow":  # as glibc comes: each of 6 steps maps its 65,536 pages of 4 KB again
        # (393,000 alone; 352,773 once in the suite beside another test process: at least half of them, then)
        assert arenas > 1 and faulted_again > 3 * 65_536
    else:
        assert (arenas, faulted_again < 2_000) == (1, True), faulted_again


# tune_allocator before JAX first computes (as the scripts' startup does) and again after, or first after it
JAX_ORDER = textwrap.dedent("""
    import sys
    import jax.numpy as jnp
    from facelandmarks import runtime
    first = runtime.tune_allocator() if sys.argv[1] == "before" else None
    jnp.ones(4).block_until_ready()  # JAX computes: its threads allocate, in arenas of their own unless tuned before
    print(first, runtime.tune_allocator(), runtime.tune_allocator())
""")


@pytest.mark.skipif(not GLIBC or importlib.util.find_spec("jax") is None, reason="glibc's arenas, XLA's threads")
def test_tuning_after_jax_has_computed_says_it_comes_too_late_once():
    """Under JAX, only threads that have not allocated yet join the main arena: tune_allocator called first after JAX
    had computed returned True, its threads keeping the arenas that map a step's big blocks afresh. It returns False
    and one note says what to do; called before, it returns True then and after (the training loop calls it again)."""
    env = {**os.environ, runtime.MALLOC_ENV: "1", "KERAS_BACKEND": "jax"}
    env.pop("LD_PRELOAD", None)
    runs = {when: subprocess.run([sys.executable, "-c", JAX_ORDER, when], env=env, capture_output=True, text=True,
                                 check=True) for when in ("before", "after")}
    assert runs["before"].stdout.split() == ["True", "True", "True"]
    assert "note:" not in runs["before"].stderr, runs["before"].stderr
    assert runs["after"].stdout.split() == ["None", "False", "False"]
    notes = [line for line in runs["after"].stderr.splitlines() if "note:" in line]
    assert len(notes) == 1 and notes[0].startswith("note: runtime.tune_allocator: JAX has computed already"), notes
    assert "FACELANDMARKS_MALLOC=0" in notes[0] and "before JAX first computes" in notes[0], notes


LEFT = textwrap.dedent("""
    import os, subprocess, sys
    import jax.numpy as jnp
    from facelandmarks import runtime
    runtime.leave_allocator()
    jnp.ones(4).block_until_ready()
    child = "from facelandmarks import runtime; print(runtime.tune_allocator())"
    print(runtime.tune_allocator(), runtime.tune_allocator(), os.environ.get(runtime.MALLOC_ENV, "unset"),
          subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, check=True).stdout.strip())
""")


@pytest.mark.skipif(not GLIBC or importlib.util.find_spec("jax") is None, reason="glibc's arenas, XLA's threads")
def test_a_process_that_leaves_its_allocator_is_not_tuned_later_and_its_children_still_are():
    """leave_allocator (the test suite under JAX): every later tune_allocator returns False with no note, even after
    JAX computed, and the processes it starts (the scripts a test runs) are tuned as a user's are."""
    env = {**os.environ, runtime.MALLOC_ENV: "1", "KERAS_BACKEND": "jax"}
    env.pop("LD_PRELOAD", None)
    run = subprocess.run([sys.executable, "-c", LEFT], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == ["False", "False", "1", "True"], run.stdout
    assert "note:" not in run.stderr, run.stderr


def test_forward_batch_keeps_the_largest_activation_under_the_mmap_threshold():
    assert forward_batch(None) == MAX_BATCH  # an export: its runtime manages its own memory
    assert forward_batch(65 * 65 * 96 * 4) == 16  # MobileNetV2 at 128 px: 1.6 MB in block_1_pad per face
    assert forward_batch(65 * 65 * 96 * 4, flip_test=True) == 8  # the mirrored rows ride along
    assert forward_batch(97 * 97 * 96 * 4) == 8  # at 192 px
    assert forward_batch(1) == MAX_BATCH
    assert forward_batch(PASS_BYTES * 2) == 1
    for activation in (1, 10_000, 500_000, 1_000_000, 3_000_000, 33_000_000):
        for flip in (False, True):
            rows = forward_batch(activation, flip)
            assert rows & (rows - 1) == 0 and 1 <= rows <= MAX_BATCH
            assert rows == 1 or rows * activation * (2 if flip else 1) <= PASS_BYTES


def nested_model():
    """A backbone model inside a model: its 16x16x24 convolution is the largest layer output."""
    inner_in = keras.Input((16, 16, 4))
    wide = keras.layers.Conv2D(24, 3, padding="same")(inner_in)
    inner = keras.Model(inner_in, keras.layers.Conv2D(2, 1)(wide), name="backbone")
    pixels = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 1)(pixels)
    x = keras.layers.GlobalAveragePooling2D()(inner(x))
    return keras.Model(pixels, keras.layers.Dense(136)(x))


@pytest.mark.backend
def test_activation_bytes_walks_into_nested_models_and_sizes_predict_crops():
    model = nested_model()
    assert activation_bytes(model) == 16 * 16 * 24 * 4
    predictor = Predictor(model, "ibug68")
    assert predictor.batch_size == MAX_BATCH  # 24 KB per face
    crops = np.random.default_rng(0).integers(0, 256, (70, 16, 16, 3), dtype=np.uint8)
    by_default = predictor.predict_crops(crops)
    # rows are the same faces in the same order; the last bit may differ by batch (oneDNN, XLA)
    np.testing.assert_allclose(by_default, predictor.predict_crops(crops, batch_size=7), rtol=1e-5, atol=1e-4)
    assert by_default.shape == (70, 68, 2)


def test_predict_batches_benchmark_measures_every_batch(capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "predict_batches.py"
    spec = importlib.util.spec_from_file_location("predict_batches", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    predictor = Predictor(nested_model(), "ibug68")
    crops = np.random.default_rng(1).integers(0, 256, (24, 16, 16, 3), dtype=np.uint8)
    rows = [bench.measure(predictor, crops, batch, repeats=2) for batch in (4, 64)]
    assert [row["batch"] for row in rows] == [4, 64]
    assert all(row["faces_per_second"] > 0 and 0 <= row["kernel_share"] <= 1 and row["faults_per_face"] >= 0 for row in rows)
    bench.table(rows, default=64)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| 4 |") and lines[1].startswith("| 64 (default) |")


@pytest.mark.skipif(shutil.which("make") is None, reason="runs make")
def test_make_refuses_a_tcmalloc_that_names_no_file(tmp_path):
    # TCMALLOC=/wrong/path ran every step on glibc, each process printing ld.so's "cannot be preloaded: ignored"
    root = Path(__file__).resolve().parents[2]
    # run inside `make test`, a sub-make prints 'Entering directory' lines: this make is a top-level one
    env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
    done = subprocess.run(["make", "-n", "test-tf", f"TCMALLOC={tmp_path / 'libtcmalloc.so.4'}"], cwd=root,
                          capture_output=True, text=True, env=env)
    assert done.returncode == 2 and done.stdout == ""
    assert f"*** TCMALLOC={tmp_path / 'libtcmalloc.so.4'}: no such file; install it" in done.stderr
    (tmp_path / "libtcmalloc.so.4").touch()  # a file: preloaded into the tests (make -n prints, runs nothing)
    done = subprocess.run(["make", "-n", "test-tf", f"TCMALLOC={tmp_path / 'libtcmalloc.so.4'}"], cwd=root,
                          capture_output=True, text=True, env=env)
    assert done.returncode == 0 and f"LD_PRELOAD={tmp_path / 'libtcmalloc.so.4'} KERAS_BACKEND=tensorflow" in done.stdout


# A benchmark measured per allocator: a progress update, then (once the parent has shown it: the file argv[1]
# appears) its JSON line; or one of the failures argv[2] names.
PER_ALLOCATOR = textwrap.dedent("""
    import json, os, sys, time
    flag, failure = sys.argv[1], sys.argv[2]
    if failure == "refused":
        sys.exit(print("fake_bench.py: unknown model 'nosuch' (fake_bench.py --help lists the options)", file=sys.stderr) or 2)
    if failure == "crash":
        raise ValueError("boom")
    sys.stderr.write("\\rrounds x modes: 1/2")
    sys.stderr.flush()
    for _ in range(200):  # 20 s for the parent to show the progress while this run goes on
        if os.path.exists(flag):
            break
        time.sleep(0.1)
    else:
        sys.exit(3)
    sys.stderr.write("\\r                 \\r")
    print(json.dumps({"malloc": os.environ["FACELANDMARKS_MALLOC"]}))
""")


class _Console:
    """A stand-in for sys.stderr that records what it is given and touches ``flag`` once a progress update arrives."""

    def __init__(self, flag):
        self.flag, self.text = flag, ""

    def write(self, text):
        self.text += text
        if "rounds x modes" in text:
            self.flag.touch()

    def flush(self):
        pass


@pytest.mark.parametrize("failure", ["none", "refused", "crash"])
def test_runs_per_allocator_show_their_progress_and_a_failure_in_one_line(tmp_path, monkeypatch, failure):
    """benchmarks/train_throughput.py --allocator all ran minutes without a word (each run's stderr was captured) and,
    when a run failed, printed all of that run's stderr and exited 1. Progress now shows as it comes; a failed run is
    one line naming the allocator with the run's own last line (the caller exits 2)."""
    script = tmp_path / "fake_bench.py"
    script.write_text(PER_ALLOCATOR)
    console = _Console(tmp_path / "shown")
    monkeypatch.setattr(sys, "stderr", console)
    from benchmarks._per_allocator import measure_per_allocator

    rows = measure_per_allocator(str(script), [str(console.flag), failure])
    lines = console.text.splitlines()
    if failure == "none":
        assert rows == [("glibc default", {"malloc": "0"}), ("tuned (runtime.tune_allocator)", {"malloc": "1"})]
        assert lines[0] == "measuring with glibc default (1 of 2)..." and "rounds x modes: 1/2" in console.text
        return
    assert rows is None
    if failure == "refused":  # the run's own line, once, inside the line that names the run
        assert lines == ["measuring with glibc default (1 of 2)...", "fake_bench.py: the run with glibc default failed: "
                         "unknown model 'nosuch' (fake_bench.py --help lists the options)"]
    else:  # a bug's traceback stays above the line
        assert lines[1] == "Traceback (most recent call last):"
        assert lines[-1] == "fake_bench.py: the run with glibc default failed: ValueError: boom"
