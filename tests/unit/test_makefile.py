"""`make setup` keeps the shipped model's export in step with its weights.

The export (weights/<name>/export/) is ignored by git, so a checkout keeps the one `make setup` wrote when it was
made.  A pull that brings new shipped weights must export again at the next `make setup` (or `make test`, `make demo`),
or photos run through Keras instead of ONNX Runtime: an export of other weights is never used.  These tests run the
repository's own Makefile with `make -n` (print, do not run) in a folder laid out like a checkout, with file times set
by hand: nothing is installed or exported.
"""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAKEFILE = (ROOT / "Makefile").read_text()
SHIPPED = Path(re.search(r"^SHIPPED_MODEL\s*:=\s*(\S+)", MAKEFILE, re.M).group(1))

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")


def checkout(tmp_path: Path, times: dict[str, int]) -> Path:
    """A folder with the Makefile and the files its setup rules depend on, each with the modification time given
    (seconds); files not named get time 1000."""
    (tmp_path / "Makefile").write_text(MAKEFILE)
    files = ["requirements.txt", "pyproject.toml", "setup.py", ".venv/.installed",
             f"{SHIPPED}/best.weights.h5", f"{SHIPPED}/config.json", f"{SHIPPED}/export/export.json"]
    for name in files:
        if name in times and times[name] is None:
            continue
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
        stamp = times.get(name, 1000)
        os.utime(path, (stamp, stamp))
    return tmp_path


def planned(folder: Path) -> list[str]:
    """The commands `make setup` would run there."""
    result = subprocess.run(["make", "-n", "-C", str(folder), "setup"], capture_output=True, text=True,
                            env={**os.environ, "MAKEFLAGS": ""}, check=True)
    return [line for line in result.stdout.splitlines() if line.strip() and not line.startswith("make")]


def export_lines(commands: list[str]) -> list[int]:
    """Where ``commands`` run ``python export.py`` (the shipped model, no arguments)."""
    return [i for i, line in enumerate(commands) if re.search(r"python export\.py\s*$", line)]


def exports(commands: list[str]) -> bool:
    return bool(export_lines(commands))


def test_an_up_to_date_checkout_does_nothing(tmp_path):
    folder = checkout(tmp_path, {".venv/.installed": 2000, f"{SHIPPED}/export/export.json": 3000})
    assert planned(folder) == []


def test_weights_newer_than_the_export_export_again_and_nothing_else(tmp_path):
    # what `git pull` does to a checkout made before: the new weights carry the time of the pull
    folder = checkout(tmp_path, {".venv/.installed": 2000, f"{SHIPPED}/export/export.json": 3000,
                                 f"{SHIPPED}/best.weights.h5": 4000})
    commands = planned(folder)
    assert exports(commands), commands
    assert not any("pip install" in line for line in commands), commands


def test_a_new_config_exports_again(tmp_path):
    folder = checkout(tmp_path, {".venv/.installed": 2000, f"{SHIPPED}/export/export.json": 3000,
                                 f"{SHIPPED}/config.json": 4000})
    assert exports(planned(folder))


def test_a_checkout_without_an_export_exports_after_installing(tmp_path):
    folder = checkout(tmp_path, {".venv/.installed": None, f"{SHIPPED}/export/export.json": None})
    commands = planned(folder)
    installs = [i for i, line in enumerate(commands) if "pip install" in line]
    assert installs and exports(commands), commands
    assert installs[-1] < export_lines(commands)[0]


def test_a_new_environment_exports_again(tmp_path):
    # requirements.txt changed: the environment is built again, and the export with the new versions
    folder = checkout(tmp_path, {".venv/.installed": 2000, f"{SHIPPED}/export/export.json": 3000,
                                 "requirements.txt": 4000})
    commands = planned(folder)
    assert any("pip install" in line for line in commands) and exports(commands), commands
