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


def set_verbose(argv: list[str]) -> list[str]:
    """Strip a ``--verbose`` flag from ``argv`` and turn verbose start-up on; returns the rest."""
    if "--verbose" in argv:
        os.environ[VERBOSE_ENV] = "1"
        for key in ("TF_CPP_MIN_LOG_LEVEL", "ABSL_MIN_LOG_LEVEL"):
            os.environ.pop(key, None)
        argv = [a for a in argv if a != "--verbose"]
    return argv
