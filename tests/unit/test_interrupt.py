"""Ctrl-C while a script starts: one line saying what happened, none of the backend's start-up chatter."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from facelandmarks import runtime

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


def test_train_py_interrupted_while_keras_loads_says_nothing_was_written(tmp_path):
    run_dir = tmp_path / "run"
    process = subprocess.Popen([sys.executable, str(ROOT / "train.py"), "scratch", "--data", str(tmp_path / "d.npz"),
                                "--run-dir", str(run_dir)], cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    time.sleep(0.8)  # Keras takes seconds to load; the missing data file is found only after it
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert err.strip() == "interrupted before the run began; nothing was written"
    assert not run_dir.exists()
