"""``models.py --ship`` replaces a shipped model whole: killed at any step, its folder still loads, and the next
``--ship`` clears what the kill left; what it must not replace is refused in one line (tiny synthetic runs)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from facelandmarks.cli import models as models_cli
from facelandmarks.cli import train as train_cli
from facelandmarks.data import npz
from facelandmarks.inference import ship, shipped, swap
from facelandmarks.inference.predictor import Predictor
from facelandmarks.landmarks import Scheme
from tests.unit.test_init_head import FACE5, PICKED
from tests.unit.test_train_errors import TINY, faces

ROOT = Path(__file__).resolve().parents[2]
# Not backend-marked: what is tested here is the folders' swap (renames, kills, refusals), the same on either
# backend; a ship on JAX, its float16 copy loaded and predicting, is tests/data/test_shipped.py's.

# a subprocess ships runs[1] over runs[0]'s folder and is killed (os._exit) at one step
KILLED = """
import os, sys
from facelandmarks.cli.models import main
from facelandmarks.inference import ship, swap

point, run, dest = sys.argv[1:]
die = lambda *args, **kwargs: os._exit(9)
rename, renames = os.rename, []

def rename_then_die(src, dst):  # killed before the rename numbered by the point's last character
    renames.append(dst)
    if len(renames) == int(point[-1]):
        os._exit(9)
    rename(src, dst)

if point == "written":  # every file of the new folder written, nothing swapped
    ship._check_loads = die
elif point == "exchanged":  # swapped in one step, the old folder not yet deleted
    swap.shutil.rmtree = die
else:  # a system that cannot exchange two names: the old folder moves aside, then the new one in
    swap._exchange = lambda first, second: False
    if point == "renamed":
        swap.shutil.rmtree = die
    else:
        swap.os.rename = rename_then_die
sys.exit(main(["--ship", run, "--to", dest]))
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two ibug68 runs (other seeds: other weights) and one of a five-point markup."""
    root = tmp_path_factory.mktemp("ship_swap")
    arrays = faces(12)
    ibug = npz.save_npz(root / "ibug.npz", arrays)
    five = npz.save_npz(root / "five.npz", npz.select_points(arrays, Scheme.from_dict(FACE5), PICKED))
    made = {"data": ibug}
    for name, data, seed in (("a", ibug, 0), ("b", ibug, 1), ("five", five, 0)):
        made[name] = root / name
        argv = [*TINY, "--batch", "4", "--seed", str(seed), "--data", str(data), "--run-dir", str(made[name])]
        assert train_cli.main(argv) == 0
    return made


def _shipped_from(folder: Path) -> str:
    return json.loads((folder / "config.json").read_text())["shipped_from"]


def _loads(folder: Path, data) -> None:
    points = Predictor.load(folder, runtime="keras").predict_crops(npz.load_npz(data)["images"][:2])
    assert points.shape == (2, 68, 2) and np.isfinite(points).all()


@pytest.mark.parametrize("point", ["written", "exchanged", "aside-rename2", "renamed"])
def test_a_ship_killed_at_any_step_leaves_a_whole_model_and_the_next_one_clears_what_it_left(point, runs, tmp_path,
                                                                                              monkeypatch, capsys):
    weights = tmp_path / "weights"
    dest = weights / "tiny"
    monkeypatch.setattr(shipped, "weights_folders", lambda: [weights])
    assert models_cli.main(["--ship", str(runs["a"]), "--to", str(dest)]) == 0
    (dest / "MODEL_CARD.md").write_text("the card, written by hand\n")
    (dest / ".config.json.tmp").write_text("{}")  # what a --ship killed before 6 Dec 2026 left: not carried over
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    killed = subprocess.run([sys.executable, "-c", KILLED, point, str(runs["b"]), str(dest)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == 9, killed.stderr

    left = sorted(p.name for p in weights.iterdir())
    if point == "aside-rename2":  # the one moment without exchange when the folder is away: recover puts it back
        assert left == [".tiny.old", ".tiny.partial"]
        line = swap.recover(dest, "a --ship")
        assert line == (f"{dest}: put {dest} back from .tiny.old; removed {weights / '.tiny.partial'}, left by a "
                        "--ship that was stopped")
    else:
        assert left == [".tiny.old" if point == "renamed" else ".tiny.partial", "tiny"]
    # the folder holds one model, whole: the old one until the swap, the new one after it
    assert _shipped_from(dest) == ("b" if point in ("exchanged", "renamed") else "a")
    assert (dest / "MODEL_CARD.md").read_text() == "the card, written by hand\n"
    _loads(dest, runs["data"])
    assert shipped.default_model_dir() == dest  # the leftover beside it is no second model

    capsys.readouterr()
    assert models_cli.main(["--ship", str(runs["b"]), "--to", str(dest)]) == 0
    out = capsys.readouterr().out.splitlines()
    if point != "aside-rename2":
        assert out[0].startswith(f"{dest}: removed {weights}/.tiny.") and out[0].endswith(", left by a --ship that "
                                                                                          "was stopped")
    assert sorted(p.name for p in weights.iterdir()) == ["tiny"] and _shipped_from(dest) == "b"
    assert sorted(p.name for p in dest.iterdir()) == ["MODEL_CARD.md", "best.weights.h5", "config.json", "history.csv"]
    assert f"{dest / 'MODEL_CARD.md'}: kept from the model it replaced" in out[-2] and out[-1].startswith("shipped ")
    _loads(dest, runs["data"])


@pytest.mark.parametrize("exchange", [True, False])
def test_a_ctrl_c_after_the_swap_says_the_new_model_is_in_place(exchange, runs, tmp_path, monkeypatch, capsys):
    # a Ctrl-C while the old folder was being deleted said 'left as it was' of a folder holding the new model
    import shutil

    dest = tmp_path / "tiny"
    assert models_cli.main(["--ship", str(runs["a"]), "--to", str(dest)]) == 0
    rmtree, calls = shutil.rmtree, []

    def ctrl_c_then_delete(path, *args, **kwargs):  # the first deletion is the old folder's, after the swap
        calls.append(path)
        if len(calls) == 1:
            raise KeyboardInterrupt
        rmtree(path, *args, **kwargs)

    monkeypatch.setattr(swap.shutil, "rmtree", ctrl_c_then_delete)
    if not exchange:
        monkeypatch.setattr(swap, "_exchange", lambda first, second: False)
    capsys.readouterr()
    assert models_cli.main(["--ship", str(runs["b"]), "--to", str(dest)]) == 130
    assert capsys.readouterr().err == (f"\nmodels.py: interrupted while deleting the model it replaced; {dest} holds "
                                       f"{runs['b']}'s (what is left of the old one goes at the next --ship)\n")
    assert _shipped_from(dest) == "b"
    _loads(dest, runs["data"])

    def ctrl_c(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(ship, "_check_loads", ctrl_c)  # before the swap: the folder is as it was
    assert models_cli.main(["--ship", str(runs["a"]), "--to", str(dest)]) == 130
    assert capsys.readouterr().err.endswith(f"models.py: interrupted; {dest} left as it was\n")
    assert _shipped_from(dest) == "b" and sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]


def test_what_a_ship_must_not_replace_is_refused_in_one_line_and_left_as_it_was(runs, tmp_path, monkeypatch, capsys):
    weights = tmp_path / "weights"
    dest = weights / "tiny"
    monkeypatch.setattr(shipped, "weights_folders", lambda: [weights])
    assert models_cli.main(["--ship", str(runs["a"]), "--to", str(dest)]) == 0
    (weights / "README.md").write_text("what the folder holds\n")
    (tmp_path / "a-file").write_text("x\n")
    cascade = tmp_path / "cascade"  # a pipeline's run: it said "no best.weights.h5 to ship (no epoch finished)"
    cascade.mkdir()
    (cascade / "config.json").write_text(json.dumps({**json.loads((runs["a"] / "config.json").read_text()),
                                                     "model": "cascade", "scheme": None}))
    (cascade / "pipeline.json").write_text("{}\n")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    run_before = {p: p.stat().st_mtime_ns for p in runs["b"].rglob("*")}
    capsys.readouterr()
    for argv, line in (
        ([runs["b"], runs["a"]], f"{runs['a']}: a training run's folder (state.json), not a shipped model's"),
        ([runs["b"], weights], f"{weights}: holds README.md, tiny but no shipped model"),
        ([runs["b"], tmp_path / "a-file"], f"{tmp_path / 'a-file'}: a file, not a folder"),
        ([runs["five"], dest], f"{dest} holds a model of ibug68 (68 points) and {runs['five']} predicts initheadfive (5 "
                               f"points): ship it to a folder of its own, or remove {dest} first"),
        ([runs["b"], weights / "other"], f"{weights / 'other'}: {weights} ships tiny already, and Predictor.load() "
                                         f"takes the one model there: --to {dest} replaces it"),
        ([dest, tmp_path / "again"], f"{dest}: a shipped model already (from the run a), not a run to ship"),
        ([tmp_path, tmp_path / "x"], f"{tmp_path}: not a run directory (no config.json)"),
        ([cascade, tmp_path / "x"], f"{cascade}: a cascade run, not one model's; --ship takes the run of a model that "
                                    "models.py --list names"),
    ):
        assert models_cli.main(["--ship", str(argv[0]), "--to", str(argv[1])]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"models.py: {line}") and err.count("\n") == 1, err
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    assert {p: p.stat().st_mtime_ns for p in runs["b"].rglob("*")} == run_before


def test_a_run_without_weights_or_too_big_for_weights_is_refused_and_an_unfinished_one_is_shipped_with_a_warning(
        runs, tmp_path, monkeypatch, capsys):
    weights = tmp_path / "weights"
    monkeypatch.setattr(shipped, "weights_folders", lambda: [weights])
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text((runs["a"] / "config.json").read_text())  # killed during its first epoch
    assert models_cli.main(["--ship", str(empty), "--to", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err == f"models.py: {empty}: no best.weights.h5 to ship (no epoch of it finished)\n"

    damaged = tmp_path / "damaged"  # its best weights cut short: the state.json of the run says so
    damaged.mkdir()
    for name in ("config.json", "state.json", "best.weights.h5"):
        (damaged / name).write_bytes((runs["a"] / name).read_bytes()[:1000 if name == "best.weights.h5" else None])
    assert models_cli.main(["--ship", str(damaged), "--to", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err.startswith(f"models.py: {damaged / 'best.weights.h5'}: damaged (1000 bytes, state.json "
                                              "recorded ")
    assert not (tmp_path / "x").exists()

    # float16, 768 x 6000 + 6000 x 136 weights take 10.8 MB: more than weights/ may hold, anywhere else fine
    big = tmp_path / "big"
    argv = [*TINY, "--model-options", '{"hidden_units": [6000]}', "--batch", "4", "--data", str(runs["data"]),
            "--run-dir", str(big)]
    assert train_cli.main(argv) == 0
    capsys.readouterr()
    assert models_cli.main(["--ship", str(big), "--to", str(weights / "big")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"models.py: {big}: shipped, it takes 10.") and err.endswith(
        f"over the 8 MiB a model in {weights} may take; {weights / 'big'} left as it was\n")
    assert not weights.exists() or list(weights.iterdir()) == []

    (big / "summary.json").unlink()  # stopped (or still training) in its first sitting
    assert models_cli.main(["--ship", str(big), "--to", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (f"warning: {big} has not finished (epoch 1 of 1): no summary.json of its last epochs (still "
                      f"training, or stopped); shipping its best weights so far (python train.py --resume --run-dir "
                      f"{big} finishes it)")
    assert (tmp_path / "out" / "best.weights.h5").stat().st_size > 8 * 2**20


def test_ship_goes_alone(capsys):
    """--list, --summary and --num-points beside --ship were ignored in silence."""
    for argv in (["--ship", "r", "--to", "w", "--list"], ["--ship", "r", "--to", "w", "--num-points", "5"]):
        with pytest.raises(SystemExit) as exit_info:
            models_cli.main(argv)
        assert exit_info.value.code == 2 and capsys.readouterr().err.startswith(
            "models.py: --ship RUN_DIR --to FOLDER goes alone, not with --list, --summary or --num-points")


def test_what_a_stopped_ship_leaves_in_weights_is_neither_committed_nor_installed(tmp_path, monkeypatch):
    """A kill leaves .NAME.partial (or .NAME.old) with a model's files beside weights/NAME: git would have offered
    them for a commit (weights/*/config.json is let in) and setup.py installed them as a second model."""
    import runpy

    import setuptools

    for leftover in (".tiny.partial", ".tiny.old"):
        ignored = subprocess.run(["git", "check-ignore", "-q", f"weights/{leftover}/config.json"], cwd=ROOT)
        assert ignored.returncode == 0, leftover
    assert subprocess.run(["git", "check-ignore", "-q", "weights/tiny/config.json"], cwd=ROOT).returncode == 1
    for name in ("tiny", ".tiny.partial"):
        (tmp_path / "weights" / name).mkdir(parents=True)
        (tmp_path / "weights" / name / "config.json").write_text("{}")
    installed = {}
    monkeypatch.setattr(setuptools, "setup", lambda **kwargs: installed.update(kwargs))
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(ROOT / "setup.py"))
    assert installed["data_files"] == [("share/facelandmarks/weights/tiny", ["weights/tiny/config.json"])]


def test_an_interrupt_just_after_the_new_folder_moved_in_keeps_it(tmp_path, monkeypatch):
    """Where the old folder moves aside first, a Ctrl-C landing just after the new one's rename tried to move the old
    one back onto it (an OSError in place of the interrupt)."""
    dest, work = tmp_path / "model", tmp_path / ".model.partial"
    dest.mkdir()
    (dest / "which").write_text("old")
    work.mkdir()
    (work / "which").write_text("new")
    monkeypatch.setattr(swap, "_exchange", lambda first, second: False)
    rename = swap.os.rename

    def rename_then_ctrl_c(source, target):
        rename(source, target)
        if Path(source) == work:
            raise KeyboardInterrupt

    monkeypatch.setattr(swap.os, "rename", rename_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt) as caught:
        swap.replace_folder(work, dest)
    assert swap.was_replaced(caught.value) and (dest / "which").read_text() == "new"
    monkeypatch.setattr(swap.os, "rename", rename)
    assert swap.recover(dest, "a test") == f"{dest}: removed {tmp_path / '.model.old'}, left by a test that was stopped"
