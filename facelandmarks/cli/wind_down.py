"""A bounded wind-down after SIGTERM or Ctrl-C: a process whose main thread cannot take the signal ends by itself.

Python runs a signal's handler (``Terminated``, ``KeyboardInterrupt``) in the main thread, between two steps of
its bytecode.  A main thread inside a long native call never gets there: a worker of a training cluster waiting in
a collective step for a partner that died waits until TensorFlow notices (tens of seconds, or for ever where it
does not), and SIGTERM seemed ignored; only SIGKILL ended it.  ``bounded_wind_down`` has the signal's byte written
to a pipe (``signal.set_wakeup_fd``) that a thread watches: when the wind-down has not ended the process
``seconds`` after the signal, the thread writes the caller's one line and ends the process (``os._exit``) with the
status a wind-down gives (143 after SIGTERM, 130 after Ctrl-C).  What the process had written stays as it was: a
training's checkpoint set is committed by renames, whole or not at all, so its last committed epoch stays
loadable (``facelandmarks/training/resume.py``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable

from facelandmarks.cli.common import Terminated, stopped

STOP_TIMEOUT_ENV = "FACELANDMARKS_STOP_TIMEOUT"
# below the 30 s a job scheduler leaves between SIGTERM and SIGKILL (Slurm's KillWait, Kubernetes' grace period)
STOP_TIMEOUT = 20.0


def stop_timeout() -> float:
    """The seconds a wind-down may take: ``FACELANDMARKS_STOP_TIMEOUT``, else ``STOP_TIMEOUT``."""
    text = os.environ.get(STOP_TIMEOUT_ENV, "").strip()
    if not text:
        return STOP_TIMEOUT
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(f"{STOP_TIMEOUT_ENV}={text!r}: give the seconds a wind-down may take after SIGTERM or "
                         f"Ctrl-C, a number above 0 (default {STOP_TIMEOUT:g})")
    return seconds


@contextlib.contextmanager
def bounded_wind_down(seconds: float, last_line: Callable[[str, float], str]):
    """While the block runs, SIGTERM or Ctrl-C not wound down within ``seconds`` ends the process with
    ``last_line(word, seconds)`` on stderr (``word``: 'terminated' or 'interrupted', as ``stopped`` says).

    Armed only in the main thread of a process where nothing else watches the signals (``set_wakeup_fd`` is one
    per process: an asyncio loop's, say); elsewhere the block runs as it would without it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    read_fd, write_fd = os.pipe()
    try:
        os.set_blocking(write_fd, False)  # the signal handler's write must never block
        previous = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    except (OSError, ValueError):  # a platform whose wakeup descriptor must be a socket (Windows)
        previous = None
    if previous != -1:
        if previous is not None:
            signal.set_wakeup_fd(previous)
        os.close(read_fd)
        os.close(write_fd)
        yield
        return
    over = threading.Event()
    watcher = threading.Thread(target=_watch, args=(read_fd, seconds, last_line, over), name="wind-down watch",
                               daemon=True)
    watcher.start()
    try:
        yield
    finally:
        over.set()
        signal.set_wakeup_fd(-1)
        os.close(write_fd)  # the watcher's read ends
        watcher.join()
        os.close(read_fd)


def _watch(read_fd: int, seconds: float, last_line, over: threading.Event) -> None:
    stops = (signal.SIGTERM, signal.SIGINT)
    while True:
        received = os.read(read_fd, 64)
        if not received:  # the block ended
            return
        if caught := [number for number in received if number in stops]:
            break
    if over.wait(seconds):  # wound down in time
        return
    word, status = stopped(Terminated() if caught[0] == signal.SIGTERM else KeyboardInterrupt())
    try:
        os.write(2, f"\n{last_line(word, seconds)}\n".encode())
    finally:
        os._exit(status)
