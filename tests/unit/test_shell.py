"""What the scripts say in a shell: output cut short by its reader (``datagen.py info F | head -1``) ends as the
script would have, without "Broken pipe" (exit 2) or a traceback (models.py --list); a plain install names its
console scripts."""

import os
import subprocess
import sys
from pathlib import Path

from facelandmarks.cli.common import _ClosedPipeTolerant
from facelandmarks.data import npz
from tests.unit.test_train_errors import faces

ROOT = Path(__file__).resolve().parents[2]


def test_writes_after_the_reader_has_gone_go_nowhere():
    read, write = os.pipe()
    stream = _ClosedPipeTolerant(os.fdopen(write, "w"))
    stream.write("first line\n")
    stream.flush()
    assert os.read(read, 100) == b"first line\n"
    os.close(read)  # the reader has gone
    stream.write("more\n" * 10000)  # raised BrokenPipeError
    stream.flush()
    assert stream.fileno() == write and not stream.closed
    stream.close()


def test_datagen_info_into_a_closed_pipe_ends_as_it_would_have(tmp_path):
    data = npz.save_npz(tmp_path / "faces.npz", faces(12))
    process = subprocess.Popen([sys.executable, "datagen.py", "info", str(data)], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    process.stdout.close()  # gone before the first line: every write meets a closed pipe
    err = process.stderr.read()
    assert process.wait(timeout=120) == 0 and err == "", err


def test_a_plain_install_names_its_console_scripts(monkeypatch, capsys):
    """A plain install has facelandmarks-train, not train.py: its help, usage errors and error lines said train.py."""
    import pytest

    from facelandmarks import runtime
    from facelandmarks.cli import evaluate, train

    assert runtime.working_copy() and runtime.script_command("train") == "python train.py"  # this checkout
    monkeypatch.setattr(runtime, "working_copy", lambda: False)
    assert runtime.script_command("export") == "facelandmarks-export"
    with pytest.raises(SystemExit):
        train.main(["--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: facelandmarks-train ") and "train.py" not in out and "facelandmarks-train --resume" in out
    assert train.main(["scratch", "--data", "x.npz"]) == 2
    assert capsys.readouterr().err == ("facelandmarks-train: facelandmarks-train scratch needs --run-dir DIR (on the "
                                       "command line or in the --config file)\n")
    with pytest.raises(SystemExit):
        evaluate.main(["--no-such-flag"])
    assert capsys.readouterr().err.startswith("facelandmarks-evaluate: unrecognized arguments: --no-such-flag "
                                              "(facelandmarks-evaluate --help lists the options)")
