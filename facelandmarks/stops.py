"""The stops a script has received (SIGTERM, Ctrl-C), kept where any layer can look: the script's signal handlers
(``cli.common``) record each one and raise it, and a training looks here as each step begins for one that native code
swallowed (``training.callbacks.LostStop``); ``held`` makes a stop wait for the end of a block that must not be
parted.  Nothing here imports beyond the standard library."""

from __future__ import annotations

import contextlib
import os
import signal
import threading


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, ``timeout``, a container or job scheduler stopping the script), raised where Ctrl-C raises
    KeyboardInterrupt: the script winds down as after Ctrl-C -- a video's files finished and playable, a training's
    resume line, a dataset's or export's earlier files left as they were -- instead of dying mid-write."""


RECEIVED: list[int] = []  # the stop signals (SIGTERM, Ctrl-C's SIGINT) a script's main has received
MAIN = {"runs": False,  # whether a script's main runs; after, the handlers record a stop and raise nothing
        "script": None}  # the script whose main runs ('train.py'), for the lines of layers below it (runtime.note)


def as_raised(signum: int) -> KeyboardInterrupt:
    """The exception a script's handler raises for the stop signal ``signum``, which it carries (``stop_signal``)."""
    stop = Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()
    stop.stop_signal = signum
    return stop


def lost() -> KeyboardInterrupt | None:
    """The stop to raise where code runs on after one was received: its handler's exception was caught and dropped by
    native code on its way (JAX's ``pxla._get_layouts_from_executable`` wraps a call in a bare ``except:``, and a
    SIGTERM landing as the first step's compilation ends was lost there: the run trained to its end).  None while no
    script's main runs or none was received."""
    return as_raised(RECEIVED[-1]) if MAIN["runs"] and RECEIVED else None


@contextlib.contextmanager
def held():
    """Within the block, a stop (Ctrl-C, SIGTERM) waits for the block's end and is handled there, as its handler
    would have handled it when it came: for steps that are one in the files they write (a video's frame in the overlay
    and in the points file, which a stop between them left one frame apart). In the main thread only, where Python
    runs signal handlers; elsewhere, or where a handler was not set from Python (``getsignal`` gives None: it could not
    be put back), the block runs as it is."""
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    if threading.current_thread() is not threading.main_thread() or None in handlers.values():
        yield
        return
    came = []
    for signum in handlers:
        signal.signal(signum, lambda number, frame: came.append((number, frame)))
    try:
        yield
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        for signum, frame in came:
            if callable(handler := handlers[signum]):
                handler(signum, frame)  # the script's, or Python's Ctrl-C: raises here
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), signum)  # SIGTERM's default: the process ends, now
