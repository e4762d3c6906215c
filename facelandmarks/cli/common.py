"""What the command lines share: a user's mistake is told in one line, never a usage page or a traceback."""

from __future__ import annotations

import _thread
import argparse
import atexit
import contextlib
import functools
import os
import shlex
import signal
import sys
import threading
import zipfile

from facelandmarks.runtime import for_this_install, help_for_this_install, script_command
from facelandmarks.stops import MAIN as _MAIN
from facelandmarks.stops import RECEIVED as _STOPS
from facelandmarks.stops import Terminated, as_raised

# What a user can cause and the scripts report in one line (exit 2).  Anything else is a bug: a traceback.
# zipfile.BadZipFile and EOFError come from numpy reading a truncated npz when the loader does not name it.
USER_ERRORS = (ValueError, OSError, zipfile.BadZipFile, EOFError)


def script_as_started(name: str) -> str:
    """How to run the script ``name`` ('train', 'evaluate', ...) for a hint, as this process was started: ``python
    PATH/NAME.py`` beside the script typed (``python ~/facelandmarks/train.py`` from any folder), the console script
    (``facelandmarks-train`` started, ``facelandmarks-evaluate`` named), else (a test, an embedding program)
    ``script_command(name)``."""
    started = sys.argv[0] if sys.argv else ""
    folder, base = os.path.split(started)
    script = os.path.join(folder, f"{name}.py")
    if base.endswith(".py") and os.path.isfile(script) and not os.path.isfile(os.path.join(folder, "__init__.py")):
        return f"python {shlex.quote(script)}"  # a script of a working copy, not a module of the package
    if base.startswith("facelandmarks-"):
        return f"facelandmarks-{name}"
    return script_command(name)


def error_line(err: BaseException, npz_files=()) -> str:
    """``PATH: what is wrong``, on one line, for an error of ``USER_ERRORS``.

    ``npz_files``: the npz files the command reads, to name the one a bare ``BadZipFile`` is about.
    """
    if isinstance(err, (zipfile.BadZipFile, EOFError)):
        given = [str(p) for p in npz_files if p]
        broken = [p for p in given if not zipfile.is_zipfile(p)] or given or ["the data file"]
        return f"{' or '.join(broken)}: not a readable npz file, truncated or corrupt ({err or type(err).__name__})"
    if isinstance(err, OSError) and err.filename and str(err.filename) not in str(err.strerror or ""):
        return f"{err.filename}: {' '.join(str(err.strerror or err).split())}"
    return " ".join(str(err).split()) or type(err).__name__


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line (exit 2) that points at ``--help``.

    Sub-commands' parsers (``add_subparsers``) are of this class too, and name their command.
    """

    def error(self, message):
        self.exit(2, for_this_install(f"{self.prog}: {message} ({self.prog} --help lists the options)\n"))

    def format_usage(self):
        return for_this_install(super().format_usage())

    def format_help(self):  # a plain install runs facelandmarks-train, not train.py, and has no docs/: its help says so
        return help_for_this_install(super().format_help())


def complain(text: str) -> None:
    """A line for the user on stderr, the scripts named as this install runs them."""
    print(for_this_install(text), file=sys.stderr)


class _ClosedPipeTolerant:
    """``sys.stdout`` that, once its reader has gone (``| head``), sends the rest of the output to /dev/null
    instead of raising ``BrokenPipeError`` out of the next print: the script finishes its work and exits as it
    would have (it ended in "Broken pipe", exit 2, or a traceback, even after ``prepare`` had written its set)."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text):
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._to_devnull()
            return len(text)

    def flush(self):
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._to_devnull()

    def _to_devnull(self):
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:  # the descriptor too: Python flushes the original stream once more at exit
            os.dup2(devnull, self._stream.fileno())
        finally:
            os.close(devnull)

    def __getattr__(self, name):
        return getattr(self._stream, name)


_UNSENT: list[int] = []  # a stop Python swallowed, waiting to be sent again (_deliver_swallowed_stop)
_SENDING = threading.Lock()  # held to send it again, and by script_main as its main ends: none is sent after


def _raise_terminated(signum, frame):
    _STOPS.append(signum)
    if not _MAIN["runs"]:  # landed as main ended: script_main gives its status
        return
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM during the wind-down ends the process at once
    raise as_raised(signum)


def _raise_interrupted(signum, frame):
    _STOPS.append(signum)
    if _MAIN["runs"]:
        raise as_raised(signum)


def _deliver_swallowed_stop(unraisable, hook) -> None:
    """``sys.unraisablehook`` while a script's main runs: a stop whose exception Python swallowed (raised in a gc
    callback, JAX's when Ctrl-C lands as it loads, or a ``__del__``; 'Exception ignored in ...') is sent again, from
    a thread, for the main thread to raise where it runs then; other errors go to ``hook``.  Lost, the run went on
    to its end, and any error later in the main came out as that stop (``stop_behind``)."""
    signum = getattr(unraisable.exc_value, "stop_signal", None)
    if signum is None or not _STOPS:
        hook(unraisable)
        return
    _STOPS.pop()  # recorded again when it lands
    if signum == signal.SIGTERM:
        signal.signal(signal.SIGTERM, _raise_terminated)
    with _SENDING:
        _UNSENT.append(signum)
    # a moment later: sent at once, it lands in this hook (Thread.start waits), swallowed again; one that lands in
    # another callback comes back here
    again = threading.Timer(0.05, _send_again)
    again.daemon = True
    again.start()


def _send_again() -> None:
    """The swallowed stop, to the main thread's handler as the signal would (``_thread.interrupt_main``: no signal
    is sent, so none can find its handler back at the default and kill the process, -15 instead of 143), while
    main runs; once it has ended, script_main gives the stop's status instead."""
    with _SENDING:
        if _UNSENT and _MAIN["runs"]:
            _thread.interrupt_main(_UNSENT.pop())


def stop_behind(err: BaseException) -> KeyboardInterrupt | None:
    """The stop an error stands for: ``err`` itself after Ctrl-C or SIGTERM; any other error once a script's main
    has received one of them, because the handler's exception, raised while native code was building an error of
    its own, comes out as something else (pybind11's ``RuntimeError: ... MISMATCH of original and normalized active
    exception types: ORIGINAL UnavailableError REPLACED BY Terminated``: a worker of a training cluster whose partner
    died); None: no stop."""
    if isinstance(err, KeyboardInterrupt):
        return err
    if _STOPS:
        return as_raised(_STOPS[-1])
    return None


@contextlib.contextmanager
def stops_as_raised():
    """Within the block, an error that a stop turned into another (``stop_behind``) is raised as that stop, for the
    script's own ``except KeyboardInterrupt`` to wind down as after Ctrl-C or SIGTERM (not a traceback)."""
    try:
        yield
    except Exception as err:
        stop = stop_behind(err)
        if stop is None:
            raise
        raise stop from err


def stopped(err: KeyboardInterrupt) -> tuple[str, int]:
    """('interrupted', 130) after Ctrl-C, ('terminated', 143) after SIGTERM: the word the script's last line uses
    and its exit status (128 + the signal's number, as a shell reports a process the signal ended)."""
    return ("terminated", 128 + signal.SIGTERM) if isinstance(err, Terminated) else ("interrupted", 128 + signal.SIGINT)


def script_main(main):
    """``main`` of a script, with what every script does: output that its reader may cut short
    (``tolerate_closed_stdout``) and, while it runs, SIGTERM handled as Ctrl-C is (``Terminated``) where nothing
    else has claimed it; the previous handler is back when it returns (tests call ``main`` in their own process).
    A stop received while main ran gives the stop's status (143, 130) even where it was lost on its way (swallowed
    by native code, or landing as main returned 0) and the line ``NAME.py: terminated``. A process that a stop
    ended, and any failing process of a multi-process JAX job, ends after its exit handlers (``leave_at_exit``)."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        tolerate_closed_stdout()
        main_thread = threading.current_thread() is threading.main_thread()
        claim = main_thread and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        claim_int = main_thread and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        claimed = claim or claim_int
        _STOPS.clear()
        lost = []
        name = f"{main.__module__.rpartition('.')[2]}.py"
        script, _MAIN["script"] = _MAIN["script"], name  # its notes name it (runtime.note), in any thread
        if claimed:
            _MAIN["runs"] = True
            _UNSENT.clear()
            hook, sys.unraisablehook = sys.unraisablehook, functools.partial(_deliver_swallowed_stop,
                                                                             hook=sys.unraisablehook)
        if claim:
            signal.signal(signal.SIGTERM, _raise_terminated)
        if claim_int:  # raises KeyboardInterrupt as Python's own handler does, and records it (stop_behind)
            signal.signal(signal.SIGINT, _raise_interrupted)
        try:
            status = main(*args, **kwargs)
        except Exception as err:  # a stop come out as another error where the script did not expect it: its line
            if (stop := stop_behind(err)) is None:
                if in_jax_job():  # a bug's traceback, and status 1 as the interpreter gives, without the wait
                    leave_at_exit(1)
                raise
            word, status = stopped(stop)
            complain(f"\n{name}: {word}")
        finally:
            _MAIN["script"] = script
            if claimed:
                with _SENDING:  # no stop is sent again after this
                    _MAIN["runs"] = False
                    unsent = [*_UNSENT]
                    _UNSENT.clear()
                _landed()  # one sent just before lands now, in the handler, which records it and raises nothing
                lost = [*unsent, *_STOPS]
                sys.unraisablehook = hook
            if claim:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
            if claim_int:
                signal.signal(signal.SIGINT, signal.default_int_handler)
        if lost and not status:  # a stop the run did not wind down from: its status
            word, status = stopped(as_raised(lost[-1]))
            complain(f"\n{name}: {word}")
        if status and isinstance(status, int) and (in_jax_job() or lost):  # a stopped process skips the teardown
            leave_at_exit(status)
        return status

    return wrapper


def _landed() -> None:
    """Nothing: calling a Python function runs the handlers of the signals that arrived before (CPython runs them as
    a function starts)."""


def in_jax_job() -> bool:
    """Whether this process is one of a job of several JAX processes (``jax.distributed.initialize`` ran)."""
    state = getattr(sys.modules.get("jax._src.distributed"), "global_state", None)
    return getattr(state, "client", None) is not None and (getattr(state, "num_processes", None) or 1) > 1


_EXIT_STATUS: list[int] = []  # set by leave_at_exit: the status the process ends with after its exit handlers


def leave_at_exit(status: int) -> None:
    """Have this process end with ``status`` as soon as its exit handlers (``atexit``) have run and its output is
    flushed, without the interpreter's clean-up after them; main returns ``status`` as before.

    For any process that a stop ends, and any failing process of a multi-process JAX job:

    - A TensorFlow training stopped mid-epoch left the tf.data iterator of its batches (a Python generator, read ahead
      by a prefetch thread) to the interpreter's teardown, where freeing it waited for that thread, which Python ends
      when it asks for the GIL as Python finalizes: the process hung after its last line (once in a CI run, 7 Dec
      2026: ``~PrefetchDatasetOp::Dataset::Iterator`` waiting under ``EagerTensor_dealloc``, py-spy's stack).

    - A stop landing in the first epoch's XLA compilation (or as jaxlib loads) left that compilation running in JAX's
      thread pool; the interpreter's final garbage collection then destroyed JAX's client under it and the process
      segfaulted (exit -11 instead of 143, after the right line: the compiling thread used a device freed by
      ``~PjRtClient``, seen in a core dump).
    - At exit JAX shuts its distributed client down (``jax._src.api.clean_up``, unregistered here), which waits for
      every other process of the job to do the same, while they wait for this one in a collective (a step,
      build_model's check of the first weights): the whole job hung until killed. With only that left out, the
      interpreter's own end aborted (SIGABRT and a C++ stack trace from the distributed client's threads). Each
      other process's collective then fails on the closed connection, says so in one line
      (``distribute.lost_worker``), and ends the same way; where process 0 (the coordinator, host of JAX's
      distributed service) ended, JAX's client ends the others first, with a fatal error of its own.

    A run's files are written and closed (or flushed: history.csv) as they go, and the exit handlers still run
    (TensorBoard's writers, logging). Python has no public call that runs the exit handlers and returns, and none
    that tells one the exit status, so ``_end_after_exit_handlers``, registered when this module is imported (before
    any backend is: handlers run last registered first), ends the process with the status kept here."""
    api = sys.modules.get("jax._src.api")
    if api is not None:
        atexit.unregister(api.clean_up)
    _EXIT_STATUS[:] = [status]


def _end_after_exit_handlers() -> None:
    if not _EXIT_STATUS:
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(_EXIT_STATUS[0])


atexit.register(_end_after_exit_handlers)


def tolerate_closed_stdout() -> None:
    """Let the script's output be cut short by its reader (``script ... | head``); see ``_ClosedPipeTolerant``."""
    if not isinstance(sys.stdout, _ClosedPipeTolerant) and sys.stdout is not None:
        sys.stdout = _ClosedPipeTolerant(sys.stdout)
