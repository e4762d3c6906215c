"""A model family and a loss from the researcher's own file (docs/models.md, "Families and losses from your own file"):
the doc's example file, as it is written there, trains, resumes, is listed, evaluates and rebuilds in new processes,
which find it through the run's config.json alone."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import built_once

pytestmark = pytest.mark.data

ROOT = Path(__file__).resolve().parents[2]


def doc_plugin() -> str:
    """The Python fence of docs/models.md's "Families and losses from your own file"."""
    text = (ROOT / "docs" / "models.md").read_text()
    section = text.split("## Families and losses from your own file", 1)[1].split("\n## ", 1)[0]
    return re.search(r"^```python\n(.*?)^```", section, re.S | re.M).group(1)


def script(name: str, *args, cwd: Path, plugins_env: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's package, in the folder the user trains in
    env.pop("FACELANDMARKS_PLUGINS", None)
    if plugins_env is not None:
        env["FACELANDMARKS_PLUGINS"] = plugins_env
    return subprocess.run([sys.executable, str(ROOT / name), *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="session")
def trained_with_plugin(tmp_path_factory, tiny_ibug):
    """A folder holding the doc's example file (my_models.py) and a run of its family and loss trained from there for
    one epoch in a train.py process, as the doc's command does: built once for the session, whichever pytest-xdist
    process asks first (``built_once``). Each test copies it into its own folder and goes on there (the two tests each
    trained the same run: 6.6 s a process alone, TensorFlow)."""
    def build(folder):
        (folder / "my_models.py").write_text(doc_plugin())
        first = script("train.py", "tinycnn", "--plugins", "my_models.py", "--loss", "smooth_l1", "--loss-options",
                       '{"beta": 0.05}', "--model-options", '{"filters": 8}', "--data", tiny_ibug["train"], "--run-dir",
                       "run", "--epochs", "1", "--batch", "16", "--augment", "none", "--preview-every", "0", cwd=folder)
        assert first.returncode == 0, first.stderr

    return built_once(tmp_path_factory, "plugin_run", build)


def copy_of(trained_with_plugin, tmp_path) -> Path:
    shutil.copytree(trained_with_plugin, tmp_path, dirs_exist_ok=True)
    return tmp_path


@pytest.mark.backend  # the file's family and loss, in keras.ops, train and evaluate on JAX too
def test_a_family_and_a_loss_of_your_own_file_train_resume_list_and_evaluate(trained_with_plugin, tmp_path, tiny_ibug):
    run = copy_of(trained_with_plugin, tmp_path) / "run"
    config = json.loads((run / "config.json").read_text())
    assert (config["model"], config["loss"], config["plugins"]) == ("tinycnn", "smooth_l1", ["my_models.py"])

    resumed = script("train.py", "--resume", "--run-dir", "run", "--epochs", "2", cwd=tmp_path)  # config.json alone
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((run / "summary.json").read_text())["epochs"] == 2

    listed = script("models.py", "--list", "--plugins", "my_models.py", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert re.search(r"^tinycnn\s+64x64x3\s", listed.stdout, re.M), listed.stdout
    assert '{"filters": 16, "blocks": 3}' in listed.stdout

    evaluated = script("evaluate.py", "run", "--data", tiny_ibug["test"], "--no-timing", "--out", "results",
                       cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    assert (tmp_path / "results").is_dir()


# (not backend-marked: where a run finds its plugin file is the same on either backend)
def test_a_run_whose_plugin_moved_is_told_so_and_resumes_with_its_new_place(trained_with_plugin, tmp_path, tiny_ibug,
                                                                            monkeypatch, capfd):
    copy_of(trained_with_plugin, tmp_path)
    (tmp_path / "moved").mkdir()
    (tmp_path / "my_models.py").rename(tmp_path / "moved" / "my_models.py")
    # the refusal: train.py's main in this process (its line and status are what is checked; a process spent 4 s
    # starting), which knows the plugin's family and loss no more than a new process would
    from facelandmarks.cli.train import main
    from facelandmarks.models import REGISTRY, losses, plugins

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(plugins, "_LOADED", {})
    monkeypatch.delenv(plugins.ENV, raising=False)
    monkeypatch.delitem(REGISTRY, "tinycnn", raising=False)
    monkeypatch.delitem(losses.LOSSES, "smooth_l1", raising=False)
    capfd.readouterr()
    assert main(["--resume", "--run-dir", "run", "--epochs", "2"]) == 2
    lost = capfd.readouterr()
    assert lost.err.strip().splitlines() == [
        f"train.py: my_models.py: no such plugin file (plugins of {Path('run') / 'config.json'}; --resume --plugins "
        "PATH: where it is now)"]
    found = script("train.py", "--resume", "--run-dir", "run", "--epochs", "2", "--plugins", "moved/my_models.py",
                   cwd=tmp_path)
    assert found.returncode == 0, found.stderr
    assert json.loads((tmp_path / "run" / "config.json").read_text())["plugins"] == ["moved/my_models.py"]
    evaluated = script("evaluate.py", "run", "--data", tiny_ibug["test"], "--no-timing", "--out", "results", cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
