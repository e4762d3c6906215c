"""The stops a script has received (SIGTERM, Ctrl-C), kept where any layer can look: the script's signal handlers
(``cli.common``) record each one and raise it, and a training looks here as each step begins for one that native code
swallowed (``training.callbacks.LostStop``).  Nothing here imports beyond the standard library."""

from __future__ import annotations

import signal


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
