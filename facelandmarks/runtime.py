"""Process set-up done before TensorFlow or JAX load: start-up logging.

TensorFlow and absl print INFO lines at start-up (CPU feature guards, oneDNN, XLA, StreamExecutor)
that say nothing about the user's run.  Unless ``FACELANDMARKS_VERBOSE=1`` is set (the scripts'
``--verbose`` sets it), they stay out of the console; warnings and errors still show.
"""

from __future__ import annotations

import os

VERBOSE_ENV = "FACELANDMARKS_VERBOSE"


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


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


def startup(verbose_flag: bool = False) -> None:
    """Load Keras and its backend for a script: quietly, unless ``verbose_flag`` or ``FACELANDMARKS_VERBOSE``.

    The backend's import-time INFO lines are written by C++ before any log level applies, so they are
    filtered at the file-descriptor level while Keras imports; every other line (warnings, errors,
    a traceback) is passed on to stderr unchanged.
    """
    if verbose_flag:
        os.environ[VERBOSE_ENV] = "1"
        for key in ("TF_CPP_MIN_LOG_LEVEL", "ABSL_MIN_LOG_LEVEL"):
            os.environ.pop(key, None)
    if verbose():
        import keras  # noqa: F401
        return
    quiet_startup()
    import sys
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import keras  # noqa: F401
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines(keepends=True):
                if not line.startswith(_STARTUP_NOISE):
                    sys.stderr.write(line)
            sys.stderr.flush()
