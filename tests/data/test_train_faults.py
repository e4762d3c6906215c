"""Fault injection: a tiny real training run killed at every step of its checkpoint commits, at a random
moment by SIGKILL, and on a full disk; afterwards ``Predictor.load`` and ``train.py --resume`` must work
and the resumed run must end whole (every epoch in the history once, a valid ``model.keras``).

A kill leaves the run folder as it was at that moment.  Rather than start and kill one process per
point, one in-process run is photographed at every point of every commit (``resume.fault_point`` is
the hook): each copy is the folder a kill there leaves, and a ``torn-`` copy also cuts the file being
written short.  Two real processes check that the photographs are honest: one ended by the hook
itself (``FACELANDMARKS_FAULT``, ``os._exit`` inside a commit), one by SIGKILL at a random moment.
"""

import contextlib
import csv
import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from facelandmarks.data.fileset import file_hash
from facelandmarks.training import resume
from facelandmarks.training.resume import BEST, LAST, SAVED_MODEL, find_checkpoint, read_state

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.data, pytest.mark.slow]

EPOCHS = 2  # commits: epoch 1, epoch 2, then model.keras
TINY = ["mlp", "--model-options", '{"hidden_units": [32], "dropout": 0.0}', "--val-fraction", "0.2", "--batch", "16",
        "--augment", "none", "--preview-every", "0", "--workers", "1", "--seed", "1"]
TORN = ("written", "state-written")  # points where a file is being written: a kill there can leave it cut short


def train_args(data, run_dir, epochs=EPOCHS):
    return [*TINY, "--data", str(data), "--run-dir", str(run_dir), "--epochs", str(epochs)]


def history_epochs(run_dir):
    with open(Path(run_dir) / "history.csv", newline="") as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle)]


def train(argv) -> int:
    from facelandmarks.cli.train import main

    return main([str(a) for a in argv])


@pytest.fixture(scope="module")
def photographed(tiny_ibug, tmp_path_factory):
    """(the finished run, {kill point: the run folder as a kill there leaves it}) from one real run."""
    root = tmp_path_factory.mktemp("faults")
    run, shots, seen = root / "run", {}, {}

    def photograph(point, path=None):
        if point == "begin":
            seen["commit"] = seen.get("commit", 0) + 1
        key = f"commit{seen['commit']}-{point}"
        seen[key] = seen.get(key, 0) + 1
        name = f"{key}-{seen[key]}"
        shots[name] = shutil.copytree(run, root / name)
        if point in TORN and path is not None:
            torn = shutil.copytree(run, root / f"{name}-torn")
            os.truncate(torn / Path(path).name, 96)
            shots[f"{name}-torn"] = torn

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(resume, "fault_point", photograph)
        assert train(train_args(tiny_ibug["train"], run)) == 0
    return run, shots


def check_whole(run_dir, epochs=EPOCHS):
    """A finished run: every epoch once, a state naming its files, no leftovers, model.keras = best weights."""
    import keras

    from facelandmarks.inference.predictor import Predictor
    from facelandmarks.models import build_model

    assert history_epochs(run_dir) == list(range(epochs)), "an epoch is missing or repeated"
    state = read_state(run_dir)
    assert state["epoch"] == epochs - 1
    for name in (BEST, LAST, SAVED_MODEL):
        assert find_checkpoint(run_dir, name, state) == (run_dir / name, ""), name
    assert not [p.name for p in run_dir.iterdir() if p.name.startswith(".")], "leftover temporary files"
    x = np.random.default_rng(0).integers(0, 255, (3, 48, 48, 3)).astype(np.float32)
    fresh = build_model("mlp", input_shape=(48, 48, 3), num_points=68, hidden_units=[32], dropout=0.0)
    fresh.load_weights(run_dir / BEST)
    saved = keras.models.load_model(run_dir / SAVED_MODEL, compile=False)
    # called directly, not through predict(): the same outputs of the same weights without tracing a predict
    # function for each new model (the sweep checks about 30 runs)
    expected = keras.ops.convert_to_numpy(fresh(x))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(saved(x)), expected, atol=1e-6)
    np.testing.assert_allclose(Predictor.load(run_dir).predict_crops(x), expected.reshape(-1, 68, 2), atol=1e-6)


def check_after_kill(run_dir, capsys, epochs=EPOCHS):
    """What a kill leaves loads without a word of damage (or names the run when no epoch had finished),
    and ``--resume`` ends with the whole run."""
    from facelandmarks.inference.predictor import Predictor

    committed = read_state(run_dir) is not None
    capsys.readouterr()
    if committed:
        assert np.isfinite(Predictor.load(run_dir).predict_crops(np.zeros((1, 48, 48, 3), np.uint8))).all()
    else:
        with pytest.raises(ValueError, match=str(run_dir)):
            Predictor.load(run_dir)
    assert "damaged" not in capsys.readouterr().err, "a kill left a file damaged"
    assert train(["--resume", "--run-dir", run_dir]) == 0, capsys.readouterr().err
    check_whole(run_dir, epochs)


def folder_contents(folder) -> tuple:
    """Every name in ``folder`` with its file's hash: two kill points that leave the same folder are one case."""
    return tuple((str(path.relative_to(folder)), file_hash(path) if path.is_file() else None)
                 for path in sorted(Path(folder).rglob("*")))


def test_a_kill_at_any_point_of_any_commit_keeps_the_last_finished_epoch(photographed, capsys):
    run, shots = photographed
    check_whole(run)
    reference = read_state(run)["files"]
    points = {name.split("-", 1)[1].rsplit("-", 1)[0] for name in shots if not name.endswith("-torn")}
    assert {"begin", "write", "written", "state", "state-written", "committed", "renamed", "done"} <= points
    # Neighbouring points often leave the same bytes (nothing is written between "begin" and the first "write");
    # the code under test sees only the folder, so each distinct folder is checked once.
    distinct = {}
    for name, folder in shots.items():
        distinct.setdefault(folder_contents(folder), (name, folder))
    assert len(distinct) >= 20
    survived = []
    for name, folder in distinct.values():
        before = read_state(folder)
        check_after_kill(folder, capsys)
        if before and before["epoch"] == EPOCHS - 1:  # the last epoch had been committed: kept bit for bit
            assert read_state(folder)["files"][LAST] == reference[LAST], name
        survived.append(name)
    with capsys.disabled():
        print(f"\nkill points tried: {len(shots)} ({len(distinct)} distinct folders), survived: {len(survived)} "
              f"of {len(distinct)}, files lost: 0")
    assert len(survived) == len(distinct) and len(shots) >= 30


def test_a_process_ended_inside_a_commit_leaves_what_the_photographs_show(tiny_ibug, tmp_path, capsys):
    run = tmp_path / "run"
    env = {**os.environ, resume.FAULT_ENV: "torn-written@2"}  # cut epoch 2's best weights short, then die
    result = subprocess.run([sys.executable, str(ROOT / "train.py"), *train_args(tiny_ibug["train"], run)], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == resume.FAULT_EXIT, result.stderr[-2000:]
    torn = [p for p in run.iterdir() if ".pending." in p.name]
    assert torn and torn[0].stat().st_size == 96 and read_state(run)["epoch"] == 0
    check_after_kill(run, capsys)


def test_sigkill_at_a_random_moment(tiny_ibug, tmp_path, capsys):
    seed = int(time.time())
    delay = random.Random(seed).uniform(0.0, 1.0)  # the five epochs after the first take about 1 to 2 s
    run, stderr = tmp_path / "run", tmp_path / "stderr.txt"
    with open(stderr, "w") as err:
        process = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *train_args(tiny_ibug["train"], run, epochs=6)],
                                   stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    try:
        deadline = time.time() + 240
        while not (run / "state.json").is_file() and process.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(delay)  # somewhere in the epochs and their commits (or after the end: still a valid test)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    state = read_state(run)
    # killed, or done before the kill, and no error before it: a run that crashed (in its second epoch, say) left a
    # folder the in-process resume below finished all the same, and passed as a survived kill. The kill may land
    # while a crashed process is still exiting, so its traceback is looked for too
    finished = process.returncode == 0 and state is not None and state["epoch"] == 5
    written = stderr.read_text()
    assert process.returncode == -signal.SIGKILL or finished, (process.returncode, written[-2000:])
    assert "Traceback" not in written and "train.py: " not in written, written[-2000:]
    with capsys.disabled():
        print(f"\nSIGKILL {delay:.2f} s after the first epoch (seed {seed}): last finished epoch {state and state['epoch'] + 1}")
    check_after_kill(run, capsys, epochs=6)


@pytest.mark.parametrize("point", ["written", "state"])
def test_a_full_disk_leaves_the_previous_set_loadable(tiny_ibug, tmp_path, capsys, monkeypatch, point):
    from facelandmarks.inference.predictor import Predictor

    run = tmp_path / "run"
    commits = []

    def disk_full(where, path=None):
        commits.append(where) if where == "begin" else None
        if where == point and len(commits) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(resume, "fault_point", disk_full)
    assert train(train_args(tiny_ibug["train"], run)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"train.py: {run}/") and "No space left on device" in err[0], err
    assert read_state(run)["epoch"] == 0 and not [p for p in run.iterdir() if p.name.startswith(".")]
    Predictor.load(run)
    assert "damaged" not in capsys.readouterr().err
    monkeypatch.undo()
    assert train(["--resume", "--run-dir", run]) == 0
    check_whole(run)


def test_damaged_checkpoints_fall_back_with_one_line_each(photographed, tiny_ibug, tmp_path, capsys):
    from facelandmarks.inference.predictor import Predictor

    run = shutil.copytree(photographed[0], tmp_path / "run")
    os.truncate(run / BEST, 96)  # what Keras' in-place write left when a kill hit it
    os.truncate(run / SAVED_MODEL, 1000)
    capsys.readouterr()
    Predictor.load(run)
    err = capsys.readouterr().err.splitlines()
    assert any(line.startswith(f"{run / SAVED_MODEL}: damaged") for line in err), err
    assert any(line.startswith(f"{run / BEST}: damaged") and "using last.weights.h5" in line for line in err), err
    # --init from the damaged run takes its last weights; --resume writes a new best and a new model.keras
    assert train([*TINY, "--data", tiny_ibug["train"], "--run-dir", tmp_path / "fine", "--epochs", 1, "--init", run]) == 0
    assert f"{run / BEST}: damaged" in capsys.readouterr().err
    assert train(["--resume", "--run-dir", run, "--epochs", EPOCHS + 1]) == 0
    assert f"{run / BEST}: damaged" in capsys.readouterr().err
    check_whole(run, EPOCHS + 1)


def test_a_run_from_before_the_record_with_a_torn_best_still_resumes_and_inits(photographed, tiny_ibug, tmp_path, capsys):
    run = shutil.copytree(photographed[0], tmp_path / "old")
    state = read_state(run)
    del state["files"]  # state.json as train.py wrote it before the checkpoint set
    (run / "state.json").write_text(json.dumps(state))
    os.truncate(run / BEST, 96)
    os.remove(run / SAVED_MODEL)
    capsys.readouterr()
    assert train([*TINY, "--data", tiny_ibug["train"], "--run-dir", tmp_path / "fine", "--epochs", 1, "--init", run]) == 0
    assert f"{run / BEST}: unreadable" in capsys.readouterr().err
    assert train(["--resume", "--run-dir", run, "--epochs", EPOCHS + 1]) == 0
    assert f"{run / BEST}: unreadable" in capsys.readouterr().err
    check_whole(run, EPOCHS + 1)
