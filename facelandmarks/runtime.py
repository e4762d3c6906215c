"""Process set-up for the scripts and the training loop: quiet start-up logging, a tuned allocator.

TensorFlow and absl print INFO lines at start-up (CPU feature guards, oneDNN, XLA, StreamExecutor)
that say nothing about the user's run.  Unless ``FACELANDMARKS_VERBOSE=1`` is set (the scripts'
``--verbose`` sets it), they stay out of the console; warnings and errors still show.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import logging
import os
import re
import sys
import tempfile

VERBOSE_ENV = "FACELANDMARKS_VERBOSE"


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


PLUGINS_ENV = "FACELANDMARKS_PLUGINS"  # plugins every script imports (facelandmarks/models/plugins.py)
JAX_DEPTHWISE_ENV = "FACELANDMARKS_JAX_DEPTHWISE"  # 'xla': JAX keeps its own depthwise convolution (models/depthwise.py)


def comma_list(text: str) -> list[str]:
    """``"a, b,"`` -> ``["a", "b"]``: the items of a list flag (``--plugins A,B``) or variable, spaces and empty items
    left out."""
    return [part.strip() for part in text.split(",") if part.strip()]


def env_plugins() -> list[str]:
    """The plugins ``FACELANDMARKS_PLUGINS`` names (separated by commas), in order; here, without Keras, so a reader
    of a run's config.json knows whether to import the models for them."""
    return comma_list(os.environ.get(PLUGINS_ENV, ""))


def working_copy() -> bool:
    """Whether the package runs from a working copy, whose scripts (``train.py`` ...) sit beside it."""
    return os.path.isfile(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "train.py"))


_SCRIPT = re.compile(r"\b(?:python )?(datagen|train|evaluate|export|models)\.py\b")


def for_this_install(text: str) -> str:
    """``text`` with the scripts named as this install runs them: as written in a working copy (``python
    train.py``, ``train.py``), else (a plain install, which has no such files) as console scripts
    (``facelandmarks-train``)."""
    return text if working_copy() else _SCRIPT.sub(r"facelandmarks-\1", text)


# files of the source repository the help cites, which a plain install does not have: its documentation and its
# recipes (configs/, as a folder; an example's configs/demo.json then reads as that recipe), and the package's
# modules by their files (facelandmarks/data/augment), which a plain install has in site-packages
_SOURCE_FILE = re.compile(r"(?<![\w./~-])(docs/[\w.-]+\.md|configs/(?![\w.-]))")
_MODULE_FILE = re.compile(r"(?<![\w./~-])facelandmarks/([\w/]*\w)(?:\.py)?\b")


def help_for_this_install(text: str) -> str:
    """``for_this_install(text)``, and in a plain install the repository's files that ``text`` cites named as what
    they are there: ``docs/X.md in the source repository``, ``configs/ in the source repository``, ``the module
    facelandmarks.data.augment``; a working copy's text is unchanged."""
    if working_copy():
        return text
    text = _SOURCE_FILE.sub(r"\1 in the source repository", text)
    return for_this_install(_MODULE_FILE.sub(lambda m: "the module facelandmarks." + m[1].replace("/", "."), text))


def note(text: str) -> None:
    """``SCRIPT: note: text`` on stderr, the script whose main runs named as this install runs it (``train.py``,
    ``facelandmarks-train``), as its other lines name it; ``note: text`` where none runs (a program using the package)."""
    from facelandmarks.stops import MAIN

    print(f"{for_this_install(MAIN['script'])}: note: {text}" if MAIN["script"] else f"note: {text}", file=sys.stderr)


def script_command(name: str) -> str:
    """How to run the script ``name`` ('export', 'train', ...) in the hints the package prints: ``python export.py``
    in a working copy, else its console script, ``facelandmarks-export``."""
    return for_this_install(f"python {name}.py")


def quiet_startup() -> None:
    """Hide TensorFlow's and absl's start-up INFO lines (a no-op once TensorFlow is loaded, or when verbose)."""
    if verbose():
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # C++ INFO and WARNING (feature guards, oneDNN notes)
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "1")


# Lines the backends print on import that carry no information for the user (absl's pre-init notice,
# C++ INFO lines such as oneDNN's "custom operations are on").
_STARTUP_NOISE = ("WARNING: All log messages before absl::InitializeLog()", "I0000 ")


def configured_backend() -> str | None:
    """The backend asked for, as Keras reads it (``KERAS_BACKEND``, else ``keras.json`` in ``KERAS_HOME``
    or ``~/.keras``), without importing Keras; None when neither names one other than TensorFlow, Keras's
    default (Keras writes its default into a new ``keras.json`` itself, so that entry is no choice)."""
    if os.environ.get("KERAS_BACKEND"):  # set empty, it names none: Keras then reads keras.json
        return os.environ["KERAS_BACKEND"]
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        with open(os.path.join(home, "keras.json")) as handle:
            backend = json.load(handle).get("backend")
    except (OSError, ValueError, AttributeError):
        return None
    return str(backend) if backend and backend != "tensorflow" else None


def _installed(backend: str) -> bool:
    """Whether a Keras backend's module is importable (each backend's module bears its name)."""
    return importlib.util.find_spec(backend) is not None


def backend_missing() -> str | None:
    """None when Keras's backend is installed, else what to install, on one line.

    Where no backend is asked for and TensorFlow (Keras's default) is missing but JAX is installed (a
    plain ``facelandmarks[jax]`` install), JAX is chosen (``KERAS_BACKEND=jax``, before Keras loads).
    A plain ``facelandmarks[onnx]`` install has Keras but no backend: that is the message's case.
    """
    if "keras" in sys.modules:
        return None  # Keras is loaded, and its backend with it
    name = configured_backend()
    if name is None and not _installed("tensorflow") and _installed("jax"):
        os.environ["KERAS_BACKEND"] = name = "jax"
    name = name or "tensorflow"
    if _installed(name):
        return None
    other = next((b for b in ("jax", "tensorflow") if b != name and _installed(b)), None)
    if other is not None:  # asked for by KERAS_BACKEND or keras.json, while the other backend is here
        source, undo = (("KERAS_BACKEND", "or unset it") if os.environ.get("KERAS_BACKEND")
                        else ("keras.json", "or remove 'backend' from keras.json"))
        install = f", or pip install 'facelandmarks[{name}]'" if name in ("jax", "tensorflow") else ""
        return (f"Keras's backend {name!r} ({source}) is not installed, but {other!r} is: set "
                f"KERAS_BACKEND={other} ({undo}){install}")
    return for_this_install(f"Keras's backend {name!r} (KERAS_BACKEND) is not installed: pip install "
                            "'facelandmarks[tensorflow]' or 'facelandmarks[jax]'; an exported model (export.py, "
                            "which needs [export]) runs without one")


def startup(verbose_flag: bool = False) -> None:
    """Load Keras and its backend for a script: quietly, unless ``verbose_flag`` or ``FACELANDMARKS_VERBOSE``.

    The backend's import-time INFO lines are written by C++ before any log level applies, so they are
    filtered at the file-descriptor level while Keras imports; every other line (warnings, errors,
    a traceback) is passed on to stderr unchanged.  Without the backend installed the script ends
    with one line saying what to install (exit status 2).
    """
    missing = backend_missing()
    if missing:
        print(f"{os.path.basename(sys.argv[0]) or 'facelandmarks'}: {missing}", file=sys.stderr)
        raise SystemExit(2)
    if verbose_flag:
        os.environ[VERBOSE_ENV] = "1"
        for key in ("TF_CPP_MIN_LOG_LEVEL", "ABSL_MIN_LOG_LEVEL"):
            os.environ.pop(key, None)
    if verbose():
        with _trimmed_keras_import():
            import keras  # noqa: F401
        tune_allocator()
        return
    _import_quietly("keras")
    several_models_predicting()
    tune_allocator()


def _import_quietly(module: str) -> None:
    """Import ``module`` (Keras and its backend, or TensorFlow) with the backends' start-up lines filtered."""
    quiet_startup()
    with filtered_fds((2,), keep=lambda line: not line.startswith(_STARTUP_NOISE)), _trimmed_keras_import():
        importlib.import_module(module)


@contextlib.contextmanager
def _trimmed_keras_import():
    """Keras's import without two packages it pulls in that the toolkit does not use (a 2-core Intel Xeon with AVX-512
    and AMX: ``import keras`` 3.13-3.34 -> 2.66-2.86 s without JAX, start-up 2.52-2.65 -> 2.18-2.39 s without matplotlib).

    - JAX, under TensorFlow where it is not loaded yet: TensorFlow imports it for tf.lite's JAX converter.
    - matplotlib, on either backend: ``keras.visualization`` imports pyplot for its two plotting functions, which get
      stand-ins that import it when they draw (``_matplotlib_when_used``). Both import as ever after the block.
    """
    hidden = [n for n in ("jax", "matplotlib") if n not in sys.modules and (n == "matplotlib" or keras_backend() == "tensorflow")]
    for name in hidden:
        sys.modules[name] = None  # an import of it raises ImportError, which TensorFlow and Keras catch
    try:
        yield
    finally:
        for name in hidden:
            if name in sys.modules and sys.modules[name] is None:  # still the placeholder
                del sys.modules[name]
        if "matplotlib" in hidden:
            _matplotlib_when_used()


class _ImportedWhenUsed:
    """A module imported at its first attribute lookup."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr):
        return getattr(importlib.import_module(self._name), attr)


def _matplotlib_when_used() -> None:
    """``keras.visualization``'s modules, which found no matplotlib, get ones that import it when used (where it is
    installed; a Keras that names them otherwise is left as it is)."""
    if importlib.util.find_spec("matplotlib") is None:
        return
    for module, attr, target in (("keras.src.visualization.plot_image_gallery", "plt", "matplotlib.pyplot"),
                                 ("keras.src.visualization.plot_bounding_box_gallery", "patches", "matplotlib.patches")):
        loaded = sys.modules.get(module)
        if loaded is not None and getattr(loaded, attr, ...) is None:
            setattr(loaded, attr, _ImportedWhenUsed(target))


def import_keras_quietly() -> None:
    """Import Keras and its backend with their start-up lines filtered, as ``startup`` does for the scripts, when a
    program uses the package from Python (``Predictor.load``, ``facelandmarks.models``): a no-op once Keras is
    loaded or when verbose."""
    if "keras" not in sys.modules and not verbose():
        _import_quietly("keras")


class _OneTracePerModel(logging.Filter):
    """Drops TensorFlow's "N out of the last N calls to <function ...one_step_on_data_distributed> triggered
    tf.function retracing" warning. Every Keras model's predict step is a closure of the same code, and TensorFlow
    counts their traces together: a pipeline's models (stage 1, a refiner per region, a box net), each traced once
    for its first batch, read to it as one function retraced five or more times."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("make_predict_function" in message and "triggered tf.function retracing" in message)


_ONE_TRACE_PER_MODEL = _OneTracePerModel()


def several_models_predicting() -> None:
    """Quiet the retracing warning of ``_OneTracePerModel`` for a program that predicts with several Keras models (the
    scripts: pipelines, several runs compared, a training's teachers); a training step's retracing still warns."""
    logging.getLogger("tensorflow").addFilter(_ONE_TRACE_PER_MODEL)  # added once, however often called


def load_tensorflow_quietly() -> None:
    """Import TensorFlow, where it is installed and not loaded yet, with its start-up lines filtered as in
    ``startup``: under another backend Keras imports it on its own later (``keras.utils.set_random_seed``,
    TensorBoard), and its oneDNN notice then reached the console in the middle of a JAX training."""
    if "tensorflow" not in sys.modules and not verbose() and _installed("tensorflow"):
        _import_quietly("tensorflow")


@contextlib.contextmanager
def filtered_fds(fds: tuple, keep):
    """Capture the file descriptors ``fds`` (C++ code writes there directly) for the block; afterwards pass
    the lines ``keep`` accepts on to stderr -- all of them if the block raised.  A descriptor the script was started
    with closed (``script >&-``: its ``sys.stdout`` is None) is left as it is."""
    streams = [stream for stream in (sys.stdout, sys.stderr) if stream is not None]
    for stream in streams:
        stream.flush()
    fds = [fd for fd in fds if {1: sys.stdout, 2: sys.stderr}.get(fd, fd) is not None]  # its number may be another file's
    saved = {fd: os.dup(fd) for fd in fds}
    failed = False
    with tempfile.TemporaryFile(mode="w+b") as captured:
        for fd in fds:
            os.dup2(captured.fileno(), fd)
        try:
            yield
        except KeyboardInterrupt:  # Ctrl-C while the block ran: its lines are as they would have been
            raise
        except BaseException:
            failed = True
            raise
        finally:
            for stream in streams:
                stream.flush()
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines(keepends=True):
                if (failed or keep(line)) and sys.stderr is not None:
                    sys.stderr.write(line)
            if sys.stderr is not None:
                sys.stderr.flush()


def quiet_output():
    """A block whose own output (a converter's progress chatter on stdout and stderr) is dropped unless it
    fails or ``FACELANDMARKS_VERBOSE`` is set; warnings from Python's ``warnings`` go the same way."""
    if verbose():
        return contextlib.nullcontext()
    return filtered_fds((1, 2), keep=lambda line: False)


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -2, -3, -4, -8
MALLOC_ENV = "FACELANDMARKS_MALLOC"
_MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's ceiling for this setting on 64-bit
_TRIM_THRESHOLD = 1024 * 1024 * 1024
_TOP_PAD = 64 * 1024 * 1024


def tune_allocator() -> bool:
    """Keep freed memory in the process instead of handing it back to the kernel after every step.

    Training and batched prediction allocate and free the same large buffers (batches, activations,
    gradients) on every step.  glibc serves blocks over ``M_MMAP_THRESHOLD`` with a fresh ``mmap`` and
    trims freed heap tops back to the kernel, so each step faults the same memory in again, page by
    page: on a 2-core machine half of the training CPU time went to the kernel.  TensorFlow's tf.data
    makes it worse: the first time a dataset is iterated it sets ``M_TRIM_THRESHOLD`` to 128 KB, which
    also freezes glibc's adaptive mmap threshold at its 128 KB default.  This sets the three thresholds
    so the process keeps its peak heap; call it again after tf.data has started (the training loop does,
    at the first batch of every epoch: ``training.callbacks.AllocatorSettings``), since TensorFlow's
    patch would otherwise override it.

    Under JAX that is not enough: XLA allocates a step's temporaries as one block (2.5 GB for MobileNetV2's heatmap
    model at batch 64, 128 px) in a thread of its own pool, and a thread's arena maps any block over its 64 MB heaps
    afresh, whatever the thresholds say: 692,000 page faults a step, a quarter of the CPU time in the kernel.  So
    with Keras on JAX every thread shares the main arena (``M_ARENA_MAX`` 1), which serves big blocks from the heap
    (``M_MMAP_MAX`` 0) and never trims it (``M_TRIM_THRESHOLD`` -1): no faults once the heap has grown, for a peak
    that may be a step's block higher (a freed block's hole is a little short of the aligned size asked for next:
    docs/results.md).  Only threads that have not allocated yet join the main arena, so this must run before JAX
    first computes (``startup`` does; ``Predictor.load`` before its model).  Called first after that, it still sets
    them (the thresholds hold for every arena) but returns False, and one note on stderr says what to do.

    Returns True when glibc took the settings; False on another C library, with ``FACELANDMARKS_MALLOC=0`` (or
    ``off``, ``false``, ``no``), or under JAX too late for its threads.
    """
    if _ALLOCATOR["left"] or os.environ.get(MALLOC_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return False  # the variable read as FACELANDMARKS_VERBOSE is
    import ctypes

    try:  # the process's own symbols: glibc's mallopt when glibc is the C library (no library search per call)
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    jax = keras_backend() == "jax"
    trim = -1 if jax else _TRIM_THRESHOLD  # -1: never trim (man mallopt)
    settings = [(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, trim), (_M_TOP_PAD, _TOP_PAD)]
    if jax:
        settings += [(_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0)]
    late = jax and not _ALLOCATOR["before_jax"] and jax_started()
    took = all(mallopt(param, value) == 1 for param, value in settings)
    _ALLOCATOR["before_jax"] |= took and jax and not late  # a later call (each epoch's) re-applies them
    if took and late and not _ALLOCATOR["noted"]:
        _ALLOCATOR["noted"] = True
        note("runtime.tune_allocator: JAX has computed already, so its threads that have allocated keep glibc arenas of "
             "their own, which map a step's big blocks afresh every step: call it before JAX first computes (before a "
             f"model is built or loaded), or set {MALLOC_ENV}=0 to leave glibc as it comes")
    return took and not late


# tune_allocator's state: taken under JAX before it computed; its note said; leave_allocator called
_ALLOCATOR = {"before_jax": False, "noted": False, "left": False}


def leave_allocator() -> None:
    """Leave this process's allocator as glibc sets it: later ``tune_allocator`` calls (a script's main, every epoch,
    ``Predictor.load``) change nothing and say nothing, as ``FACELANDMARKS_MALLOC=0`` would, without passing that on
    to the processes it starts. For a program that runs many short computations in one process, where the tuning is
    not worth it: the test suite under JAX (tests/conftest.py), whose in-process tests took 1.17-1.22x as long with
    every thread in one arena (docs/results.md, Test-suite timings)."""
    _ALLOCATOR["left"] = True


def jax_started() -> bool:
    """Whether JAX has set up its backends (its first computation does, or a look at its devices), after which its
    threads may hold glibc arenas of their own. JAX has no public call that tells without setting them up (those of
    ``jax.extend.backend`` do); ``jax._src.xla_bridge.backends_are_initialized`` tells, and where a JAX to come has
    none, this says False (no note, as before)."""
    initialized = getattr(sys.modules.get("jax._src.xla_bridge"), "backends_are_initialized", None)
    return bool(initialized and initialized())


def keras_backend() -> str:
    """The backend Keras runs on, or (not loaded yet) will load: ``configured_backend``, else TensorFlow, its default,
    unless only JAX is installed (as ``backend_missing`` picks)."""
    keras = sys.modules.get("keras")
    if keras is not None and hasattr(keras, "config"):
        return keras.config.backend()
    return configured_backend() or ("jax" if not _installed("tensorflow") and _installed("jax") else "tensorflow")
