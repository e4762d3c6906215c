"""``train.py --resume`` and the lines and summary a run ends with (tiny synthetic runs, no face data)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from facelandmarks.cli import models as models_cli
from facelandmarks.cli import train as train_cli
from facelandmarks.data import npz
from facelandmarks.files import is_partial
from facelandmarks.training.config import ConfigError, TrainConfig
from facelandmarks.training.resume import FAULT_ENV, FAULT_EXIT
from tests.unit.test_train_errors import TINY, assert_one_line, faces, run_cli

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "weights" / "mobilenetv2-pip-128"  # a shipped model's folder: its config.json names no data, no run_dir


def files_of(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def test_resume_takes_a_moved_val_file_but_no_val_for_a_run_started_without_one(tmp_path, capsys):
    """A --val FILE given to --resume of a run that split its validation faces off --data was taken as 'the same
    file, moved' ('the run was started with None'): the run went on validating on other faces (and training on
    the ones it had held out). The line of a 1-epoch run said '1 epochs'."""
    data = npz.save_npz(tmp_path / "faces.npz", faces(12))
    val = npz.save_npz(tmp_path / "val.npz", faces(8))
    split, with_val = tmp_path / "split", tmp_path / "with_val"
    tiny = [*TINY, "--batch", "4", "--data", str(data)]
    capsys.readouterr()
    assert train_cli.main([*tiny, "--run-dir", str(split)]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(f"run in {split}: "))
    assert line.startswith(f"run in {split}: 1 epoch, ended by its epoch budget (--epochs); best epoch 1 "), line

    before = files_of(split)
    code, lines = run_cli(train_cli.main, ["--resume", "--run-dir", split, "--epochs", "2", "--val", val], capsys)
    assert_one_line(code, lines, "train.py", split / "config.json",
                    f"--resume --val {val}: the run was started validating on --val-fraction 0.1 of --data's subjects "
                    f"(no --val); --resume goes on as it began (train.py --init {split} --val FILE starts a new run")
    assert files_of(split) == before

    # a run started with --val goes on with it where it now is, and refuses to drop it
    assert train_cli.main([*tiny, "--val", str(val), "--run-dir", str(with_val)]) == 0
    code, lines = run_cli(train_cli.main, ["--resume", "--run-dir", with_val, "--epochs", "2", "--val", ""], capsys)
    assert_one_line(code, lines, "train.py", with_val / "config.json",
                    f"--resume --val none: the run was started validating on the faces of --val {val}; --resume goes "
                    "on as it began (give --val where that file is now)")
    moved = val.rename(tmp_path / "moved_val.npz")
    assert train_cli.main(["--resume", "--run-dir", str(with_val), "--epochs", "2", "--val", str(moved)]) == 0
    out = capsys.readouterr().out
    assert f"resuming with --val {moved} (the run was started with {val}): the same file, moved" in out
    assert f"run in {with_val}: 2 epochs, " in out


def test_a_resume_with_moved_data_records_where_they_are_for_the_next_reader_of_its_config(tmp_path, capsys):
    """--resume --data/--val NEW trained on the moved files but left config.json naming the old ones: a second --resume
    without them, --config RUN/config.json and a pipeline on the run as its stage 1 read the old paths ('no such
    dataset file'). The resume now records where it found them, written whole."""
    from facelandmarks.pipelines.train import _stage1_config

    data = npz.save_npz(tmp_path / "faces.npz", faces(12))
    val = npz.save_npz(tmp_path / "val.npz", faces(8))
    run = tmp_path / "run"
    assert train_cli.main([*TINY, "--batch", "4", "--data", str(data), "--val", str(val), "--run-dir", str(run)]) == 0
    (tmp_path / "moved").mkdir()
    data, val = data.rename(tmp_path / "moved" / "faces.npz"), val.rename(tmp_path / "moved" / "val.npz")
    assert train_cli.main(["--resume", "--run-dir", str(run), "--epochs", "2", "--data", str(data), "--val", str(val)]) == 0
    saved = json.loads((run / "config.json").read_text())
    assert (saved["data"], saved["val"], saved["epochs"]) == (str(data), str(val), 2)
    assert sorted(p.name for p in run.iterdir() if p.name.endswith(".tmp") or is_partial(p.name)) == []
    capsys.readouterr()

    assert train_cli.main(["--resume", "--run-dir", str(run), "--epochs", "3"]) == 0  # no hint needed now
    out = capsys.readouterr().out
    assert "the same file, moved" not in out and f"run in {run}: 3 epochs, " in out
    again, resume = train_cli.resolve_config(["--config", str(run / "config.json"), "--run-dir", str(tmp_path / "again")])
    assert (again.data, again.val, resume) == (str(data), str(val), False)
    assert (_stage1_config(run).data, _stage1_config(run).val) == (str(data), str(val))


def test_a_resume_of_a_moved_run_folder_records_where_it_is(tmp_path, monkeypatch, capsys):
    """--resume --run-dir NEW of a moved run left config.json naming the old folder: --config NEW/config.json --resume
    said 'OLD: no such folder, so nothing to resume', and without --resume trained a new run in OLD. The resume now
    records the folder as typed, as it records the data."""
    monkeypatch.chdir(tmp_path)
    npz.save_npz(tmp_path / "faces.npz", faces(12))
    assert train_cli.main([*TINY, "--batch", "4", "--data", "faces.npz", "--run-dir", "old"]) == 0
    (tmp_path / "old").rename(tmp_path / "new")
    assert train_cli.main(["--resume", "--run-dir", "new", "--epochs", "2"]) == 0
    assert json.loads((tmp_path / "new" / "config.json").read_text())["run_dir"] == "new"
    config, resume = train_cli.resolve_config(["--config", "new/config.json", "--resume", "--epochs", "3"])
    assert (config.run_dir, resume) == ("new", True)
    capsys.readouterr()
    assert train_cli.main(["--config", "new/config.json", "--epochs", "3"]) == 2  # the run is there: not a second one
    assert "new already holds a run" in capsys.readouterr().err and not (tmp_path / "old").exists()


def test_a_boxes_run_interrupted_before_its_config_says_what_it_wrote(tmp_path, capsys, monkeypatch):
    """train.py boxes writes its box data (boxes_train.npz) before the run writes config.json: Ctrl-C between them
    said 'interrupted before the run began; nothing was written'."""
    import facelandmarks.pipelines.train as pipeline_train

    def interrupted(config, resume=False):  # Ctrl-C as the box network's run starts
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline_train, "fit", interrupted)
    data = npz.save_npz(tmp_path / "faces.npz", faces(12))
    run = tmp_path / "boxes"
    argv = ["boxes", "--data", str(data), "--run-dir", str(run), "--epochs", "1", "--batch", "4"]
    code, lines = run_cli(train_cli.main, argv, capsys)
    assert code == 130 and lines == [f"interrupted before the run began; it had written boxes_train.npz in {run} "
                                     "(the same command writes it again)"], lines
    assert sorted(p.name for p in run.iterdir()) == ["boxes_train.npz"]
    # again: the file it wrote anew is named, though it was there before
    code, lines = run_cli(train_cli.main, argv, capsys)
    assert code == 130 and lines[-1].startswith("interrupted before the run began; it had written boxes_train.npz in ")


@pytest.mark.backend
def test_a_run_resumed_past_its_summary_and_stopped_writes_a_new_one_at_the_epochs_it_ran(tmp_path, capsys):
    """A finished 1-epoch run resumed with --epochs 3 and killed after epoch 2: '--resume --epochs 2' printed the
    first sitting's summary ('1 epochs ... best epoch 1'), wrote none, and models.py --ship went on warning that
    the run had not finished (as did the plain --resume that warning advised)."""
    data = npz.save_npz(tmp_path / "faces.npz", faces(12))
    run = tmp_path / "run"
    assert train_cli.main([*TINY, "--batch", "4", "--data", str(data), "--run-dir", str(run)]) == 0
    env = dict(os.environ, **{FAULT_ENV: "done@1"}, PYTHONPATH=str(ROOT))  # killed once epoch 2 is committed
    killed = subprocess.run([sys.executable, str(ROOT / "train.py"), "--resume", "--run-dir", str(run), "--epochs", "3"],
                            capture_output=True, text=True, timeout=300, env=env)
    assert killed.returncode == FAULT_EXIT, killed.stderr[-2000:]
    assert json.loads((run / "summary.json").read_text())["epochs"] == 1
    assert json.loads((run / "state.json").read_text())["epoch"] == 1  # epoch 2, counted from 0

    capsys.readouterr()
    assert train_cli.main(["--resume", "--run-dir", str(run), "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs"] == 2 and summary["stopped_by"] == "epoch budget", summary
    assert json.loads(out[out.index("{"):]) == summary
    assert f"run in {run}: 2 epochs, ended by its epoch budget (--epochs); best epoch {summary['best_epoch']} " in out
    assert models_cli.main(["--ship", str(run), "--to", str(tmp_path / "shipped")]) == 0
    assert "has not finished" not in capsys.readouterr().out
    # once written, it is what a further --resume with nothing to run gives back, as it is
    written = (run / "summary.json").read_bytes()
    assert train_cli.main(["--resume", "--run-dir", str(run), "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out[out.index("{"):]) == summary and (run / "summary.json").read_bytes() == written


def test_a_shipped_models_folder_is_refused_by_resume_and_by_run_config_loading_in_one_line(capsys):
    """Its config.json names no data and no run_dir: --resume ended in a TypeError traceback from TrainConfig."""
    before = files_of(SHIPPED)
    code, lines = run_cli(train_cli.main, ["--resume", "--run-dir", SHIPPED, "--epochs", "2"], capsys)
    assert_one_line(code, lines, "train.py", SHIPPED,
                    f"a shipped model (its config.json names no data and no run_dir), not a run to resume; train.py "
                    f"--init {SHIPPED} --data TRAIN.npz --run-dir DIR starts a new run from it")
    assert files_of(SHIPPED) == before
    with pytest.raises(ConfigError, match=f"^{SHIPPED / 'config.json'}: no data or run_dir: not the config.json of a "
                                          "training run$"):
        TrainConfig.load(SHIPPED / "config.json")


@pytest.mark.backend
def test_a_resumed_worker_that_is_not_the_chief_sums_up_the_whole_run(tmp_path, monkeypatch):
    """A worker other than the chief writes into a scratch folder: resumed, its summary read the history of this
    sitting only (train seconds, best epoch) and, where no epoch since had been better, no best weights there.
    Here the run's summary was lost to a kill after its last epoch; the worker's summary is the chief's."""
    from facelandmarks.training import distribute
    from facelandmarks.training.fit import fit

    data = npz.save_npz(tmp_path / "faces.npz", faces(12))
    config = TrainConfig(model="mlp", data=str(data), run_dir=str(tmp_path / "run"), epochs=2, batch=4, augment="none",
                         preview_every=0, workers=1, model_options={"hidden_units": [4]})
    chief = fit(config, verbose=0)
    (tmp_path / "run" / "summary.json").unlink()
    monkeypatch.setattr(distribute, "setup", lambda *args: distribute.Cluster(is_chief=False))
    worker = fit(config, resume=True, verbose=0)
    for key in ("epochs", "best_epoch", "train_seconds", "weights_sha1", "val_nme"):
        assert worker[key] == chief[key], key
    assert not (tmp_path / "run" / "summary.json").exists()  # the worker writes none in the run folder
