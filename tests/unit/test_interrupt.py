"""Ctrl-C and SIGTERM (kill, timeout, a job scheduler): one line saying what happened, none of the backend's start-up
chatter, and what was being written finished or left as it was."""

import contextlib
import functools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from facelandmarks import runtime
from facelandmarks.cli.common import Terminated

ROOT = Path(__file__).resolve().parents[2]


def test_an_interrupt_keeps_the_filter_and_an_error_passes_every_line(capfd):
    def noisy(error):
        with runtime.filtered_fds((2,), keep=lambda line: not line.startswith("noise")):
            os.write(2, b"noise from C++\nkept\n")
            raise error

    with pytest.raises(KeyboardInterrupt):
        noisy(KeyboardInterrupt())
    assert capfd.readouterr().err == "kept\n"
    with pytest.raises(RuntimeError):  # a failure shows everything: the dropped lines may explain it
        noisy(RuntimeError("failed"))
    assert capfd.readouterr().err == "noise from C++\nkept\n"


def test_a_script_started_with_its_stdout_closed_gets_through_the_captured_blocks():
    """``script >&-`` (a job whose stdout is closed): Python's sys.stdout is None, and the blocks that point fd 1 or 2
    elsewhere (Keras's start-up lines, FFmpeg's on opening a video, Gloo's line as a JAX job starts) ended in
    "AttributeError: 'NoneType' object has no attribute 'flush'" before any work."""
    code = ("import os, sys\nfrom facelandmarks import runtime\n"
            "with runtime.filtered_fds((1,), keep=bool):\n    os.write(2, b'native\\n')\n"
            "with runtime.filtered_fds((2,), keep=bool):\n    os.write(2, b'passed on\\n')\n"
            "print('done', sys.stdout, file=sys.stderr)\n")
    done = subprocess.run([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          preexec_fn=lambda: os.close(1), env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=120)
    assert (done.returncode, done.stderr) == (0, "native\npassed on\ndone None\n"), done.stderr


def ctrl_c_as_at_a_terminal(sigterm=signal.SIG_DFL):
    """In the child before it starts: SIGINT back to its default, SIGTERM as ``sigterm`` (default: its default). A
    test suite started in the background (``make test &``, nohup, some CI runners and launchers) inherits them
    ignored, and Python and the scripts then keep ignoring them, as they should."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, sigterm)


def loading_keras(process, timeout=120.0):
    """Returns once ``process`` (a script) has its stderr captured to filter Keras's start-up lines
    (``runtime.filtered_fds``): its main has claimed the stop signals and Keras is loading.  A fixed sleep signalled a
    loaded machine's script still starting Python or importing its modules (SIGINT killed it, or a KeyboardInterrupt
    traceback) and a quick one's after it had ended."""
    if not Path("/proc/self/fd").is_dir():  # not Linux: the seconds Keras takes to load
        time.sleep(0.8)
        return
    stderr, end = Path(f"/proc/{process.pid}/fd/2"), time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < end:
        with contextlib.suppress(FileNotFoundError):  # the process just ended
            if not os.readlink(stderr).startswith("pipe:"):
                return
        time.sleep(0.005)
    if process.poll() is None:
        process.kill()
    raise AssertionError(f"the script ended or did not load Keras: {process.communicate(timeout=60)}")


@pytest.mark.parametrize("signum, status, word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_train_py_stopped_while_keras_loads_says_nothing_was_written(signum, status, word, tmp_path):
    run_dir = tmp_path / "run"
    process = subprocess.Popen([sys.executable, str(ROOT / "train.py"), "scratch", "--data", str(tmp_path / "d.npz"),
                                "--run-dir", str(run_dir)], cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, preexec_fn=ctrl_c_as_at_a_terminal)
    loading_keras(process)  # Keras takes seconds to load; the missing data file is found only after it
    process.send_signal(signum)
    out, err = process.communicate(timeout=120)
    assert process.returncode == status, err
    assert err.strip() == f"{word} before the run began; nothing was written"
    assert not run_dir.exists()


SIGTERM_CHECK = """
import os, signal, time
from facelandmarks.cli.common import Terminated, script_main, stopped

@script_main
def main():
    handler = signal.getsignal(signal.SIGTERM)
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises at once
    except KeyboardInterrupt as err:  # what the scripts catch for Ctrl-C
        return stopped(err)
    return handler

before = signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
print(before, main(), signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, stopped(KeyboardInterrupt()))
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a program that set its own handler keeps it
print(main() is signal.SIG_IGN, signal.getsignal(signal.SIGTERM) is signal.SIG_IGN)
"""


def test_a_script_handles_sigterm_only_while_it_runs_and_only_where_nothing_else_does():
    """In a process of its own: a script that did not claim SIGTERM would end the test run."""
    result = subprocess.run([sys.executable, "-c", SIGTERM_CHECK], capture_output=True, text=True, timeout=60,
                            preexec_fn=ctrl_c_as_at_a_terminal)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["True ('terminated', 143) True ('interrupted', 130)", "True True"]
    assert issubclass(Terminated, KeyboardInterrupt)


# a stop raised while native code built an error of its own comes out as another error: pybind11's "RuntimeError:
# ... MISMATCH of original and normalized active exception types: ORIGINAL UnavailableError REPLACED BY Terminated"
# (a cluster worker sent SIGTERM as TensorFlow told it of its dead partner) was a traceback; as below, faked
STOP_AS_ANOTHER_ERROR = """
import os, signal, sys
from facelandmarks.cli.common import script_main, stopped, stops_as_raised

def native_call(signum):
    try:
        os.kill(os.getpid(), signum)
        signal.pause()
    except KeyboardInterrupt:  # the handler's exception, replaced on its way out of native code
        raise RuntimeError("MISMATCH of original and normalized active exception types") from None

@script_main
def main(signum, handled):
    if not handled:
        native_call(signum)
    try:
        with stops_as_raised():
            native_call(signum)
    except KeyboardInterrupt as err:  # the script's own wind-down
        print("wound down:", *stopped(err))
        return stopped(err)[1]

@script_main
def unrelated():
    raise RuntimeError("a bug, no stop")

signum, handled = getattr(signal, sys.argv[1]), sys.argv[2] == "handled"
if sys.argv[2] == "bug":
    try:
        unrelated()
    except RuntimeError as err:
        print("raised:", err)
        sys.exit(0)
sys.exit(main(signum, handled))
"""


@pytest.mark.parametrize("name, status, word", [("SIGTERM", 143, "terminated"), ("SIGINT", 130, "interrupted")])
def test_a_stop_that_native_code_turned_into_another_error_winds_down_as_the_stop(name, status, word):
    def run(how):
        return subprocess.run([sys.executable, "-c", STOP_AS_ANOTHER_ERROR, name, how], capture_output=True,
                              text=True, timeout=60, preexec_fn=ctrl_c_as_at_a_terminal)

    handled = run("handled")  # within stops_as_raised: the script's own except KeyboardInterrupt
    assert (handled.returncode, handled.stdout, handled.stderr) == (status, f"wound down: {word} {status}\n", "")
    fallback = run("unhandled")  # anywhere else in a script's main: its one line, the stop's status
    assert (fallback.returncode, fallback.stderr) == (status, f"\n__main__.py: {word}\n")
    assert "Traceback" not in fallback.stderr
    bug = run("bug")  # an error with no stop behind it stays what it is
    assert (bug.returncode, bug.stdout) == (0, "raised: a bug, no stop\n"), bug.stderr


# a stop whose exception Python swallows (raised inside a gc callback: JAX's, a Ctrl-C while JAX loads) was lost, the
# run went on (trained to its end), and any error later in the same main came out as that stop (stop_behind)
STOP_SWALLOWED = """
import gc, signal, sys, time
from facelandmarks.cli.common import script_main, stopped

armed = []

def in_gc(phase, info):
    if armed and phase == "start":
        armed.clear()
        signal.raise_signal(signum)  # the handler raises in here: Python prints 'Exception ignored' and goes on

@script_main
def main():
    try:
        gc.callbacks.append(in_gc)
        armed.append(True)
        gc.collect()
        for _ in range(1000):  # the stop, delivered again, lands here
            time.sleep(0.01)
        raise RuntimeError("a bug after a lost stop")
    except KeyboardInterrupt as err:
        print("wound down:", *stopped(err))
        return stopped(err)[1]

signum = getattr(signal, sys.argv[1])
sys.exit(main())
"""


@pytest.mark.parametrize("name, status, word", [("SIGTERM", 143, "terminated"), ("SIGINT", 130, "interrupted")])
def test_a_stop_python_swallowed_is_delivered_again_not_told_for_a_later_error(name, status, word):
    result = subprocess.run([sys.executable, "-c", STOP_SWALLOWED, name], capture_output=True, text=True, timeout=60,
                            preexec_fn=ctrl_c_as_at_a_terminal)
    assert (result.returncode, result.stdout, result.stderr) == (status, f"wound down: {word} {status}\n", "")


# a stopped script's process ends after its exit handlers, without the interpreter's teardown, where a TensorFlow
# training stopped mid-epoch once hung freeing its batches' tf.data iterator (leave_at_exit)
STOPPED_THEN_TEARDOWN = """
import atexit, os, signal, sys, time
from facelandmarks.cli.common import script_main, stopped

class Freed:
    def __del__(self):
        print("torn down", flush=True)

held = Freed()  # freed as the interpreter tears its modules down
atexit.register(lambda: print("exit handler", flush=True))

@script_main
def main(stop):
    try:
        if stop:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        return 0
    except KeyboardInterrupt as err:
        return stopped(err)[1]

sys.exit(main(sys.argv[1] == "stop"))
"""


@pytest.mark.parametrize("stop, status, lines", [("stop", 143, ["exit handler"]), ("no", 0, ["exit handler", "torn down"])])
def test_a_stopped_script_ends_after_its_exit_handlers_without_the_teardown(stop, status, lines):
    result = subprocess.run([sys.executable, "-c", STOPPED_THEN_TEARDOWN, stop], capture_output=True, text=True,
                            timeout=60, cwd=ROOT, preexec_fn=ctrl_c_as_at_a_terminal)
    assert (result.returncode, result.stdout.splitlines(), result.stderr) == (status, lines, "")


def test_a_terminated_video_leaves_a_playable_overlay_of_every_frame_its_points_list(tmp_path):
    """``timeout`` or ``kill`` in the middle of a video: the overlay (mp4 writes its index last) is finished and
    renamed as after Ctrl-C, not left as an unplayable NAME.partial.mp4."""
    source, out = tmp_path / "long.mp4", tmp_path / "out" / "long_landmarks.mp4"
    writer = cv2.VideoWriter(str(source), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (96, 72))
    for i in range(3000):  # faceless frames: minutes of work, far more than the test waits for
        writer.write(np.full((72, 96, 3), i % 200, np.uint8))
    writer.release()
    process = subprocess.Popen([sys.executable, str(ROOT / "evaluate.py"), "--video", str(source), "--out", str(out)],
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=ctrl_c_as_at_a_terminal)
    points = out.with_suffix(".jsonl")
    deadline = time.monotonic() + 120
    while (not points.is_file() or len(points.read_text().splitlines()) < 4) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err
    assert err.strip().splitlines()[-1] == "evaluate.py: terminated"
    assert not list(out.parent.glob("*.partial*"))
    frames = len(points.read_text().splitlines()) - 1  # a header line, then one line per frame
    capture = cv2.VideoCapture(str(out))
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    assert 3 <= frames < 3000 and count == frames


FORKSERVER_CTRL_C = """
import os, signal, time
from multiprocessing import forkserver
from facelandmarks.data.cropping import worker_context
context = worker_context()
forkserver.ensure_running()  # the pool's server: started by now, and still importing its preload
time.sleep(0.05)  # starting Python or importing OpenCV: either way it took Ctrl-C before the fix
os.kill(forkserver._forkserver._forkserver_pid, signal.SIGINT)  # Ctrl-C reaches the whole process group
with context.Pool(1) as pool:
    print(pool.map(abs, [-3]))
"""


def test_ctrl_c_while_the_forkserver_imports_its_preload_leaves_it_running_and_silent():
    # prepare's pool server ignored Ctrl-C only once it had imported OpenCV and dlib (about a second): a Ctrl-C
    # before then ended it with a KeyboardInterrupt traceback of its own under prepare's one line (seen on a loaded
    # machine in tests/data/test_prepare_faults.py); the main process's handling is tested there
    done = subprocess.run([sys.executable, "-c", FORKSERVER_CTRL_C], capture_output=True, text=True, timeout=120,
                          cwd=ROOT, preexec_fn=ctrl_c_as_at_a_terminal)
    assert (done.returncode, done.stdout, done.stderr) == (0, "[3]\n", "")


FORKSERVER_SIGTERM_IGNORED = """
import signal, time
from facelandmarks.data.cropping import worker_context
context = worker_context()
with context.Pool(1) as pool:  # a worker's own disposition, before any initializer of the toolkit's
    print(pool.apply(signal.getsignal, (signal.SIGTERM,)).name)
pool = context.Pool(2, initializer=time.sleep, initargs=(2,))  # workers still starting on a loaded machine
time.sleep(0.3)
pool.terminate()  # as prepare's pool after Ctrl-C
print("stopped")
"""


def test_a_pool_stopped_while_its_workers_start_ends_when_started_with_sigterm_ignored():
    """prepare started with SIGTERM ignored (a launcher, ``make test &``) hung after Ctrl-C, now and then under load:
    its workers inherited the ignored SIGTERM through the forkserver and set it back to the default only in their
    initializer, so the pool's SIGTERM to a worker still starting did nothing and the pool waited for it for ever
    (seen in tests/data/test_prepare_faults.py under the parallel suite)."""
    proc = subprocess.Popen([sys.executable, "-c", FORKSERVER_SIGTERM_IGNORED], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT, start_new_session=True,
                            preexec_fn=functools.partial(ctrl_c_as_at_a_terminal, signal.SIG_IGN))
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("the pool waited for ever for workers that ignored its SIGTERM")
    assert (proc.returncode, out, err) == (0, "SIG_DFL\nstopped\n", "")


def test_the_resume_line_names_the_script_as_it_was_started(monkeypatch):
    """The line after an interrupted training said 'python train.py' in any working copy: from another folder
    (python ~/facelandmarks/train.py) or through the console script of an editable install, that command was not
    there. It now names the script as this process was started."""
    from facelandmarks.cli.common import script_as_started
    from facelandmarks.runtime import script_command

    monkeypatch.setattr(sys, "argv", [str(ROOT / "train.py"), "cascade"])
    assert script_as_started("train") == f"python {ROOT / 'train.py'}"
    assert script_as_started("evaluate") == f"python {ROOT / 'evaluate.py'}"  # the script beside it
    monkeypatch.setattr(sys, "argv", ["/opt/venv/bin/facelandmarks-train", "cascade"])
    assert (script_as_started("train"), script_as_started("evaluate")) == ("facelandmarks-train", "facelandmarks-evaluate")
    monkeypatch.setattr(sys, "argv", [str(ROOT / "facelandmarks" / "cli" / "train.py")])  # the module: not a script
    assert script_as_started("train") == script_command("train")


def test_a_pipeline_stopped_in_a_refiner_names_the_command_that_resumes_it(tmp_path, monkeypatch):
    """train.py cascade run from another folder and stopped while a refiner trains: its line's command, run there,
    continues the pipeline (it said 'python train.py', which is not in that folder)."""
    from facelandmarks.cli.train import main as train
    from facelandmarks.data import npz
    from tests.unit.test_train_errors import faces

    npz.save_npz(tmp_path / "faces.npz", faces(16, size=16))
    common = ["--batch", "4", "--augment", "none", "--preview-every", "0", "--workers", "1", "--model-options",
              '{"hidden_units": [4]}']
    script = [sys.executable, str(ROOT / "train.py")]
    with monkeypatch.context() as here:  # stage 1 in this process (one Keras start-up less): the stopped cascade's input
        here.chdir(tmp_path)
        assert train(["mlp", "--data", "faces.npz", "--run-dir", "runs/stage 1", "--epochs", "1", *common]) == 0
    process = subprocess.Popen([*script, "cascade", "--stage1", "runs/stage 1", "--run-dir", "runs/my cascade",
                                "--refiner", "mlp", "--regions", "nose", "--copies", "1", "--patch-size", "8",
                                "--epochs", "5000", *common], cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, preexec_fn=ctrl_c_as_at_a_terminal)
    state = tmp_path / "runs" / "my cascade" / "nose" / "run" / "state.json"
    deadline = time.monotonic() + 240
    while not state.is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err
    assert err.strip().splitlines()[-1] == (f"terminated; continue with: python {ROOT / 'train.py'} --resume --run-dir "
                                            "'runs/my cascade'")
    import shlex

    done = len((state.parent / "history.csv").read_text().splitlines()) - 1
    command = shlex.split(err.strip().splitlines()[-1].split("continue with: ")[1])
    resumed = subprocess.run([sys.executable, *command[1:], "--epochs", str(done + 1)], cwd=tmp_path,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    # then a line says where the pipeline is, and how to score it (it printed only the refiners' summaries)
    line = next(line for line in resumed.stdout.splitlines() if line.startswith("pipeline in "))
    assert line.startswith("pipeline in runs/my cascade: pipeline.json, refiners nose/run (best epoch ")
    assert line.endswith(f"; python {ROOT / 'evaluate.py'} 'runs/my cascade' --data TEST.npz scores it")
    assert len((state.parent / "history.csv").read_text().splitlines()) - 1 == done + 1


# a wind-down that does not end: the handler's exception caught and the block waiting for ever (as a worker's main
# thread waited in a collective step for a dead partner, where no handler ran: its SIGTERM seemed ignored)
STUCK_WIND_DOWN = """
import sys, time
from facelandmarks.cli.common import script_main
from facelandmarks.cli.wind_down import bounded_wind_down, stop_timeout

@script_main
def main():
    with bounded_wind_down(stop_timeout(), lambda word, seconds: f"{word} after {seconds:g} s: what was saved"):
        try:
            print("ready", flush=True)
            time.sleep(60)
        except KeyboardInterrupt:
            with open(sys.argv[1], "w") as f:
                f.write("written before the wind-down hung")
            time.sleep(60)
    return 0

sys.exit(main())
"""


@pytest.mark.parametrize("signum, status, word", [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")])
def test_a_wind_down_that_does_not_end_ends_the_process_with_one_line(signum, status, word, tmp_path):
    env = dict(os.environ, FACELANDMARKS_STOP_TIMEOUT="0.5")
    process = subprocess.Popen([sys.executable, "-c", STUCK_WIND_DOWN, str(tmp_path / "out.txt")], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline() == "ready\n"
        process.send_signal(signum)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == status, err
    assert err == f"\n{word} after 0.5 s: what was saved\n"
    assert (tmp_path / "out.txt").read_text() == "written before the wind-down hung"


def test_a_wind_down_that_ends_in_time_is_left_alone_and_a_bad_stop_timeout_is_one_line(monkeypatch):
    from facelandmarks.cli.wind_down import bounded_wind_down, stop_timeout

    lines = []
    with pytest.raises(KeyboardInterrupt), bounded_wind_down(0.2, lambda word, seconds: lines.append(word)):
        signal.raise_signal(signal.SIGINT)
    time.sleep(0.5)  # past the time allowed: the process is still here
    assert lines == [] and signal.set_wakeup_fd(-1) == -1  # and the wakeup descriptor was given back
    monkeypatch.setenv("FACELANDMARKS_STOP_TIMEOUT", "soon")
    with pytest.raises(ValueError, match=r"^FACELANDMARKS_STOP_TIMEOUT='soon': give the seconds a wind-down may take"):
        stop_timeout()
    monkeypatch.setenv("FACELANDMARKS_STOP_TIMEOUT", "")
    assert stop_timeout() == 20


def test_the_line_of_a_run_that_did_not_wind_down_names_its_last_committed_epoch(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from facelandmarks.cli import train

    monkeypatch.setattr(sys, "argv", [str(ROOT / "train.py")])
    config = SimpleNamespace(run_dir=str(tmp_path / "run"))
    assert train._unwound_line(config, "terminated", 20.0) == (
        "terminated: the run did not wind down within 20 s (FACELANDMARKS_STOP_TIMEOUT; a step waiting for another "
        "process of the job, or a long computation) and ends without it; the checkpoints committed before stay as they were")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text("{}")
    (tmp_path / "run" / "state.json").write_text('{"epoch": 2}')
    assert train._unwound_line(config, "interrupted", 0.5).endswith(
        f"and ends without it; {tmp_path / 'run'} keeps its checkpoints of epoch 3, the last committed (state.json); "
        f"continue with: python {ROOT / 'train.py'} --resume --run-dir {tmp_path / 'run'}")
