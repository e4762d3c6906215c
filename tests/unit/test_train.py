"""Training without face data: the validation split (training runs on real faces: ``tests/data/test_train.py``)."""

from pathlib import Path

import numpy as np
import pytest

from facelandmarks.data.feeding import split_by_subject


def test_validation_split_is_by_subject():
    subjects = np.array([f"s{i // 3}" for i in range(60)])
    train_idx, val_idx = split_by_subject(subjects, 0.25, seed=3)
    assert set(subjects[train_idx]).isdisjoint(subjects[val_idx])
    assert len(train_idx) + len(val_idx) == 60 and 12 <= len(val_idx) <= 18


def _faces(sources):
    n = len(sources)
    return {"images": np.arange(n, dtype=np.uint8).reshape(n, 1, 1, 1).repeat(4, 1).repeat(4, 2),
            "landmarks": np.full((n, 3, 2), 0.5, np.float32), "visible": np.ones((n, 3), bool),
            "source": np.array(sources)}


def test_oversample_repeats_a_source_within_each_epoch():
    from facelandmarks.data.feeding import FaceParts, LandmarkBatches

    data = _faces(["300w"] * 4 + ["youtube68"] * 8)
    batches = LandmarkBatches(FaceParts(data, None, oversample={"300w": 3}), 4, seed=5)
    assert len(batches) == (4 * 3 + 8) // 4
    seen = np.concatenate([batches[i][0][:, 0, 0, 0] for i in range(len(batches))]).astype(int)
    assert np.bincount(seen, minlength=12).tolist() == [3] * 4 + [1] * 8  # every face, 300-W ones three times
    plain = LandmarkBatches(FaceParts(data, None), 4, seed=5)
    assert len(plain) == 3
    # a worker of two takes every second face, with its own repeats
    half = FaceParts(data, None, worker_index=1, workers=2, oversample={"300w": 3})
    assert half.repeats[0].tolist() == [3, 3] + [1] * 4
    # 0 leaves a source out: a combined file trains on one of its sources
    only = LandmarkBatches(FaceParts(data, None, oversample={"youtube68": 0}), 4, seed=5)
    seen = np.concatenate([only[i][0][:, 0, 0, 0] for i in range(len(only))]).astype(int)
    assert len(only) == 1 and sorted(seen.tolist()) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="batch size 8 is larger than the 4 training faces"):
        LandmarkBatches(FaceParts(data, None, oversample={"youtube68": 0}), 8)
    with pytest.raises(ValueError, match="leaves no training face"):
        FaceParts(data, None, oversample={"youtube68": 0, "300w": 0})


def test_oversample_names_unknown_sources_and_bad_factors():
    import pytest

    from facelandmarks.data.feeding import FaceParts
    from facelandmarks.training.config import TrainConfig

    with pytest.raises(ValueError, match=r"source\(s\) afw .*they have: 300w, youtube68"):
        FaceParts(_faces(["300w", "youtube68"]), None, oversample={"afw": 2})
    for bad in ({"300w": -1}, {"300w": 1.5}, {"300w": True}):
        with pytest.raises(ValueError, match="--oversample must map source names to whole numbers >= 0"):
            TrainConfig(model="scratch", data="x.npz", run_dir="r", oversample=bad).validate()


def test_init_from_a_run_split_with_another_seed_warns(tmp_path):
    import json

    from facelandmarks.training.config import TrainConfig
    from facelandmarks.training.init import init_split_warning

    shipped = tmp_path / "shipped"
    shipped.mkdir()
    (shipped / "config.json").write_text(json.dumps({"seed": 0, "val_fraction": 0.1, "scheme": "ibug68"}))

    def config(**kw):
        return TrainConfig(**{"model": "mobilenetv2_heatmap", "data": "d.npz", "run_dir": "r", "init": str(shipped), **kw})

    message = init_split_warning(config(seed=1), "ibug68")
    assert message.startswith(f"warning: --init {shipped} held out its validation faces with split seed 0 and")
    assert "with split seed 1 and --val-fraction 0.1" in message and "--split-seed 0 --val-fraction 0.1 keep" in message
    assert init_split_warning(config(val_fraction=0.2), "ibug68") is not None
    assert init_split_warning(config(), "ibug68") is None                     # the same split
    assert init_split_warning(config(seed=1, split_seed=0), "ibug68") is None  # another seed, the same split
    assert init_split_warning(config(split_seed=2), "ibug68") is not None
    (shipped / "config.json").write_text(json.dumps({"seed": 3, "split_seed": 0, "val_fraction": 0.1, "scheme": "ibug68"}))
    assert init_split_warning(config(), "ibug68") is None                     # split seed 0 both
    assert init_split_warning(config(seed=3), "ibug68") is not None           # seed 3 splits with 3
    assert init_split_warning(config(seed=1, val="v.npz"), "ibug68") is None  # its own validation file
    assert init_split_warning(config(seed=1), "face5") is None                # another markup: other data
    (shipped / "config.json").write_text(json.dumps({"seed": 2, "val_fraction": 0.0, "scheme": "ibug68"}))
    message = init_split_warning(config(), "ibug68")  # trained on every face: any split validates on seen faces
    assert message.startswith(f"warning: --init {shipped} trained on every face of its data (--val-fraction 0)")
    assert init_split_warning(config(seed=2, val_fraction=0.0), "ibug68") is None  # no validation of its own
    assert "on the same data (if it is) with" in message
    # the shipped model names the datasets it trained on: a warning only when this run's faces share one
    (shipped / "config.json").write_text(json.dumps({"seed": 2, "val_fraction": 0.0, "scheme": "ibug68",
                                                     "trained_on": ["300w", "youtube68"]}))
    assert init_split_warning(config(), "ibug68", {"muct"}) is None
    message = init_split_warning(config(), "ibug68", {"muct", "youtube68"})
    assert "this run validates on youtube68 faces (as it did) with --val-fraction 0.1" in message
    assert "(if it is)" in init_split_warning(config(), "ibug68")  # where the faces do not say their dataset
    (shipped / "config.json").write_text(json.dumps({"seed": 0, "val_fraction": 0.1, "data": "other.npz"}))
    assert init_split_warning(config(seed=1), "ibug68") is None
    assert init_split_warning(config(seed=1, init=str(shipped / "best.weights.h5")), "ibug68") is None


def test_init_keeps_the_pixel_normalization_its_weights_were_trained_with(tmp_path):
    """The shipped config names 'torch' (the offline ImageNet file's mode); a run that names no backbone file
    would build 'tf' ('auto' without a file) and feed those weights other pixel values."""
    import json

    from facelandmarks.training.config import TrainConfig
    from facelandmarks.training.init import adopt_init_normalization

    shipped = tmp_path / "shipped"
    shipped.mkdir()
    (shipped / "config.json").write_text(json.dumps(
        {"model": "mobilenetv2_heatmap", "weights": "none", "model_options": {"head": "pip", "normalization": "torch"}}))

    def config(**kw):
        return TrainConfig(**{"model": "mobilenetv2_heatmap", "data": "d.npz", "run_dir": "r", "init": str(shipped),
                              "model_options": {"head": "pip"}, **kw})

    plain = config()
    line = adopt_init_normalization(plain)
    assert line == f"--init {shipped}: keeping its input normalization 'torch' (this run's settings alone would give 'tf')"
    assert plain.model_options == {"head": "pip", "normalization": "torch"}
    weights_file = config(init=str(shipped / "best.weights.h5"))               # a weights file beside its config
    assert adopt_init_normalization(weights_file) and weights_file.model_options["normalization"] == "torch"
    chosen = config(model_options={"head": "pip", "normalization": "unit"})   # a mode named on purpose: kept, warned
    assert adopt_init_normalization(chosen).startswith(f"warning: --init {shipped} was trained with input normalization 'torch'")
    assert chosen.model_options["normalization"] == "unit"
    assert adopt_init_normalization(config(weights="../shared/weights/mnv2.weights.h5")) is None  # a file: 'torch' too
    assert adopt_init_normalization(config(model="scratch", model_options={})) is None   # no backbone normalisation
    assert adopt_init_normalization(config(init=str(tmp_path / "bare.weights.h5"))) is None  # nothing to read
    (shipped / "config.json").write_text(json.dumps({"model": "mobilenetv2_heatmap", "weights": "x.weights.h5"}))
    implicit = config()                                   # a run from the backbone file: 'auto' resolved to 'torch'
    assert adopt_init_normalization(implicit) and implicit.model_options["normalization"] == "torch"


def test_init_keeps_the_input_zoom_its_weights_were_trained_with(tmp_path):
    """The shipped model sees the crop's centre enlarged (zoom 0.9); a run from it with the 2 Dec recipe's options
    (no zoom) built a model that sees the whole crop, and its weights met faces smaller than they learnt."""
    import json

    from facelandmarks.training.config import TrainConfig
    from facelandmarks.training.init import adopt_init_constants

    shipped = tmp_path / "shipped"
    shipped.mkdir()
    (shipped / "config.json").write_text(json.dumps({"model": "mobilenetv2_heatmap", "weights": "none", "model_options": {
        "head": "pip", "normalization": "torch", "zoom": 0.9}}))

    def config(**kw):
        return TrainConfig(**{"model": "mobilenetv2_heatmap", "data": "d.npz", "run_dir": "r", "init": str(shipped),
                              "model_options": {"head": "pip", "normalization": "torch"}, **kw})

    plain = config()
    assert adopt_init_constants(plain) == f'--init {shipped}: keeping its input zoom 0.9 (model option zoom; "zoom": 1.0 sees the whole crop)'
    assert plain.model_options == {"head": "pip", "normalization": "torch", "zoom": 0.9}
    both = config(model_options={"head": "pip"})  # the normalisation and the zoom, one line each
    assert adopt_init_constants(both).split("\n")[1].startswith(f"--init {shipped}: keeping its input zoom 0.9")
    assert both.model_options == {"head": "pip", "normalization": "torch", "zoom": 0.9}
    whole = config(model_options={"head": "pip", "normalization": "torch", "zoom": 1.0})  # asked for: kept, warned
    assert adopt_init_constants(whole).startswith(f"warning: --init {shipped} was trained with its input zoomed 0.9, this run asks for 1")
    assert whole.model_options["zoom"] == 1.0
    assert adopt_init_constants(config(model_options={"head": "pip", "normalization": "torch", "zoom": 0.9})) is None
    integral = config(model_options={"head": "integral", "normalization": "torch"})  # another head has no zoom
    assert adopt_init_constants(integral) is None and "zoom" not in integral.model_options
    regressor = config(model="mobilenetv2", model_options={"normalization": "torch"})  # another family: its backbone only
    assert adopt_init_constants(regressor) is None and "zoom" not in regressor.model_options


def test_a_jax_only_install_trains_without_tensorboard(tmp_path):
    """``pip install ".[jax]"`` has no TensorFlow: train.py says once that there are no TensorBoard logs and
    trains (a real process on the JAX backend, with TensorFlow made unimportable)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from facelandmarks.data import npz
    from tests.unit.test_train_errors import TINY, faces

    root = Path(__file__).resolve().parents[2]
    data = npz.save_npz(tmp_path / "faces.npz", faces(12))
    hide_tf = ("import sys, runpy; sys.modules['tensorflow'] = None; sys.argv = ['train.py'] + sys.argv[1:];"
               " runpy.run_path('train.py', run_name='__main__')")
    done = subprocess.run(
        [sys.executable, "-c", hide_tf, *TINY, "--batch", "4", "--data", str(data), "--run-dir", str(tmp_path / "run")],
        cwd=root, capture_output=True, text=True, env={**os.environ, "KERAS_BACKEND": "jax"}, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "no TensorBoard logs: they need TensorFlow, which is not installed" in done.stdout
    rows = (tmp_path / "run" / "history.csv").read_text().splitlines()
    assert len(rows) == 2 and (tmp_path / "run" / "best.weights.h5").exists()
    assert not (tmp_path / "run" / "logs").exists()


def test_a_jax_training_beside_tensorflow_keeps_its_start_up_lines_out(tmp_path):
    """Under JAX, Keras's seeding imports TensorFlow where it is installed: its oneDNN notice and absl's
    pre-init line reached the console in the middle of the run (twice), past the start-up filter."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from facelandmarks.data import npz
    from tests.unit.test_train_errors import TINY, faces

    root = Path(__file__).resolve().parents[2]
    data = npz.save_npz(tmp_path / "faces.npz", faces(12))
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "FACELANDMARKS_VERBOSE")}
    done = subprocess.run(
        [sys.executable, "train.py", *TINY, "--batch", "4", "--data", str(data), "--run-dir", str(tmp_path / "run")],
        cwd=root, capture_output=True, text=True, env={**env, "KERAS_BACKEND": "jax"}, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "run" / "logs").is_dir()  # TensorBoard's logs: TensorFlow was there and used
    assert "absl::InitializeLog" not in done.stderr and "oneDNN custom operations" not in done.stderr, done.stderr


def test_split_seed_keeps_the_validation_faces_whatever_the_seed(tmp_path):
    from facelandmarks.data import npz
    from facelandmarks.data.feeding import load_split
    from facelandmarks.training.config import TrainConfig

    n = 40
    rng = np.random.default_rng(0)
    path = npz.save_npz(tmp_path / "faces.npz", {
        "images": rng.integers(0, 255, (n, 8, 8, 3), dtype=np.uint8),
        "landmarks": rng.uniform(0.2, 0.8, (n, 68, 2)).astype(np.float32),
        "visible": np.ones((n, 68), bool),
        "subject": np.array([f"s{i % 20}" for i in range(n)]),
        "scheme": np.array("ibug68"),
        "box": np.tile(np.array([0, 0, 8, 8], np.float32), (n, 1)),
    })

    def val_subjects(**kw):
        _, val = load_split(TrainConfig(model="mlp", data=str(path), run_dir="r", val_fraction=0.25, **kw))
        return set(np.asarray(val["subject"]).astype(str))

    split = val_subjects(seed=0)
    assert len(split) == 5
    assert val_subjects(seed=5) != split                 # by default the seed also draws the split
    assert val_subjects(seed=5, split_seed=0) == split   # --split-seed keeps it
    assert val_subjects(seed=0, split_seed=5) == val_subjects(seed=5)


def test_seeds_out_of_numpy_range_are_named_before_anything_runs():
    from facelandmarks.training.config import TrainConfig

    for flag, key, bad in (("--seed", "seed", -1), ("--split-seed", "split_seed", -1), ("--seed", "seed", 2**32),
                           ("--split-seed", "split_seed", 1.5), ("--seed", "seed", True)):
        with pytest.raises(ValueError, match=f"^{flag} must be a whole number from 0 to 4294967295, got {bad!r}$"):
            TrainConfig(model="scratch", data="x.npz", run_dir="r", **{key: bad}).validate()
    TrainConfig(model="scratch", data="x.npz", run_dir="r", seed=2**32 - 1, split_seed=0).validate()


# -- --time-limit: the budget cut to the epochs that fit, the cosine decay reshaped to end with them --------


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class _Model:
    stop_training = False


def _epochs(limit, clock, durations, first=0, rates=None):
    """Runs ``limit`` through epochs of the given durations as Keras would; the epochs it let run (and, into
    ``rates``, the learning rate its cosine schedule gave each as it began)."""
    limit.set_model(_Model())
    limit.on_train_begin()
    ran = []
    for epoch, seconds in enumerate(durations, start=first):
        limit.on_epoch_begin(epoch)
        if rates is not None:
            rates.append(limit.schedule.rate(epoch))
        clock.now += seconds
        ran.append(epoch)
        limit.on_epoch_end(epoch)
        if limit.model.stop_training:
            break
    return ran


def test_parse_duration_reads_hours_minutes_and_seconds():
    from facelandmarks.training.values import parse_duration

    assert [parse_duration(t) for t in ("600", "90s", "45m", "2h", "1h30m", "1.5h", " 2M ")] == \
        [600, 90, 2700, 7200, 5400, 5400, 120]
    for bad in ("", "5x", "m", "1h1h", "30m1h2", "-5m"):
        with pytest.raises(ValueError, match="not a duration like 45m"):
            parse_duration(bad)


def test_a_reshaped_cosine_keeps_its_past_never_jumps_and_ends_at_its_end_rate():
    from facelandmarks.training.callbacks import CosineSchedule, cosine_lr

    schedule, plain = CosineSchedule(1.0, 100), cosine_lr(1.0, 100)
    before = [schedule.rate(e) for e in range(10)]
    np.testing.assert_allclose(before, [plain(e) for e in range(10)])
    assert plain(99) == pytest.approx(0.01) and plain(0) == 1.0
    schedule.reshape(30, 9)  # after epoch 9 (index), end at epoch 30 instead of 100
    after = [schedule.rate(e) for e in range(40)]
    assert after[9] == pytest.approx(before[9])                     # the decay goes on from the last epoch run
    assert all(a > b for a, b in zip(after[9:29], after[10:30]))    # falls every epoch from there
    assert after[29] == pytest.approx(0.01) and after[35] == pytest.approx(0.01)
    assert after[9] - after[10] < 0.1                               # a step, not a drop


def test_time_limit_cuts_the_budget_to_the_epochs_that_fit_and_anneals_by_then(capsys):
    from facelandmarks.training.callbacks import CosineSchedule, TimeLimit, cosine_lr

    clock = _Clock()
    schedule = CosineSchedule(1.0, 50)
    limit = TimeLimit(100.0, 50, schedule, started=0.0, clock=clock)
    clock.now = 5.0  # data and model before the first epoch
    rates = []
    ran = _epochs(limit, clock, [20.0] + [10.0] * 60, rates=rates)  # the first epoch compiles
    # after epoch 1 (t = 25 s) 3 more of 20 s would fit, but a compiling epoch cuts nothing; after epoch 2
    # (t = 35 s): 65 s left, a quarter epoch kept, 6 more of 10 s -> the run ends after 8 epochs
    assert ran == list(range(8)) and limit.end == 8 and limit.stopped
    assert clock.now == 95.0 <= 100.0
    assert rates[0] == 1.0 and rates[1] == pytest.approx(cosine_lr(1.0, 50)(1))  # epoch 2: the plan's rate
    assert rates[-1] == pytest.approx(0.01)                                        # annealed by its last epoch
    assert all(a > b for a, b in zip(rates, rates[1:]))
    assert "--schedule constant" not in capsys.readouterr().out  # the first cut left 6 epochs of decay


def test_a_slow_compiling_first_epoch_never_spends_the_decay(capsys):
    """The GPU session of 4 Dec: three runs side by side, a first epoch of 131 s (compiling, the teachers'
    predictions beside it), then 4 s an epoch, 7m20s in all.  Cut after the first epoch to 2 epochs, the
    cosine fell to 1 % at once and stayed there for the 40-odd epochs that then fit."""
    from facelandmarks.training.callbacks import CosineSchedule, TimeLimit, cosine_lr

    clock = _Clock()
    schedule = CosineSchedule(1e-3, 200)
    limit = TimeLimit(440.0, 200, schedule, started=0.0, clock=clock)
    clock.now = 40.0  # the teachers' predictions
    rates = []
    ran = _epochs(limit, clock, [131.0] + [4.0] * 300, rates=rates)
    # after epoch 2 (t = 175 s): 265 s left, a quarter epoch kept, 66 more of 4 s -> 68 epochs, done at 439 s
    assert limit.stopped and len(ran) == limit.end == 68 and clock.now == 439.0
    assert rates[1] == pytest.approx(cosine_lr(1e-3, 200)(1))  # nothing cut after the compiling epoch
    assert np.median(rates) > 4e-4                                # the decay spread over the epochs that fit
    assert rates[-1] == pytest.approx(1e-5)
    out = capsys.readouterr().out
    assert out.count("time limit: the run ends after epoch") == 1 and "of 200: " in out


def test_a_first_epoch_with_no_room_for_another_still_stops_the_run_and_a_short_cut_gets_the_hint(capsys):
    from facelandmarks.training.callbacks import CosineSchedule, TimeLimit

    clock = _Clock()
    limit = TimeLimit(100.0, 50, CosineSchedule(1.0, 50), started=0.0, clock=clock)
    assert _epochs(limit, clock, [60.0] * 5) == [0] and limit.stopped  # 40 s left: no 60-s epoch fits
    assert "no further epoch fits in the 40 s left; the run ends after epoch 1" in capsys.readouterr().out
    clock, rates = _Clock(), []
    limit = TimeLimit(100.0, 50, CosineSchedule(1.0, 50), started=0.0, clock=clock)
    # after epoch 2 (t = 40 s): 60 s left, 2 more of 20 s: a decay over 4 epochs, and the line saying so
    assert _epochs(limit, clock, [20.0] * 10, rates=rates) == [0, 1, 2, 3] and limit.end == 4
    assert rates[-1] == pytest.approx(0.01)
    assert capsys.readouterr().out.count("--schedule constant suits a sitting this short") == 1


def test_time_limit_moves_the_end_out_again_when_epochs_speed_up_but_not_past_the_budget(capsys):
    from facelandmarks.training.callbacks import TimeLimit

    clock = _Clock()
    limit = TimeLimit(100.0, 12, None, started=0.0, clock=clock)  # a plateau schedule: only the budget is cut
    ran = _epochs(limit, clock, [10.0, 30.0, 5.0, 5.0, 5.0] + [5.0] * 20)
    # after epoch 2 (t = 40 s) 60 s are left at 30 s an epoch: cut to 3; once the last three took 5 s, 8 more fit
    # after epoch 5 (t = 55 s): the end goes back to the budget of 12, and no further
    out = capsys.readouterr().out
    assert "the run ends after epoch 3 of 12: 1 more fit in the 60 s left" in out
    assert "--schedule constant" not in out  # the hint is for a cosine decay squeezed into a few epochs
    assert ran == list(range(12)) and limit.end == 12 and not limit.stopped and clock.now == 90.0
    resumed = TimeLimit(1000.0, 12, None, clock=clock)  # a resumed run its first sitting cut to 8: more time
    resumed.end = 8                                       # in this one does not carry it past 8
    assert _epochs(resumed, clock, [1.0] * 20, first=5) == [5, 6, 7] and resumed.stopped


def test_time_limit_stops_at_once_when_the_deadline_has_passed_and_holds_a_resumed_end(capsys):
    from facelandmarks.training.callbacks import TimeLimit

    clock = _Clock()
    limit = TimeLimit(10.0, 50, None, started=0.0, clock=clock)
    assert _epochs(limit, clock, [30.0] * 5) == [0] and limit.end == 1 and limit.stopped
    assert "no further epoch fits (epoch 1 ended 20 s past the limit); the run ends after epoch 1" in capsys.readouterr().out
    resumed = TimeLimit(None, 50, None, clock=clock)  # no time limit in this sitting, but the run was cut to 8
    resumed.end = 8
    assert _epochs(resumed, clock, [1.0] * 20, first=5) == [5, 6, 7] and resumed.stopped


def test_a_new_epoch_budget_on_resume_drops_the_cut_and_the_reshaped_cosine():
    from facelandmarks.training.fit import _budget_state

    state = {"epoch": 7, "TimeLimit": {"end": 8, "planned": 50}, "CosineSchedule": {"epochs": 8}, "files": {}}
    assert _budget_state(state, 50) == state
    assert _budget_state(state, 60) == {"epoch": 7, "files": {}}
    assert _budget_state({"epoch": 3}, 60) == {"epoch": 3}  # a run from before --time-limit


def test_train_py_time_limit_ends_the_run_annealed_and_resume_keeps_the_cut(tmp_path, capsys):
    """A real ``train.py`` process: a budget far beyond the time given ends by the time limit, its last epoch at
    (or an epoch short of) the cosine's end rate; ``--resume`` does not run past the cut; ``--resume --epochs N`` gives a new budget.
    The two resumes run train.py's ``main`` in this process: they read only the run folder the process left.

    The callbacks are the same on both backends (their logic: the tests above), so this runs on TensorFlow alone,
    whose first epoch of this mlp takes about 1 s (it traces): 12 s from the process's start leave room for several
    epochs on a loaded machine. (On JAX, whose first epoch compiles, 5 s had been too few beside another test
    process.)"""
    import csv
    import json
    import subprocess
    import sys
    from pathlib import Path

    from facelandmarks.data import npz
    from tests.unit.test_train_errors import TINY, faces

    root = Path(__file__).resolve().parents[2]
    data = npz.save_npz(tmp_path / "faces.npz", faces(12))
    run = tmp_path / "run"
    train = [sys.executable, "train.py"]
    command = train + [*TINY, "--batch", "4", "--data", str(data), "--run-dir", str(run), "--epochs", "100000",
                       "--patience", "100000", "--schedule", "cosine", "--lr", "0.002", "--time-limit", "12s"]
    done = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "time limit: the run ends after epoch" in done.stdout
    summary = json.loads((run / "summary.json").read_text())
    with open(run / "history.csv", newline="") as handle:
        rates = [float(row["learning_rate"]) for row in csv.DictReader(handle)]
    assert summary["stopped_by"] == "time limit" and 2 < summary["epochs"] == summary["epoch_budget"] == len(rates) < 100000
    # annealed, not stopped halfway down: the last rate within 1 % of the decay from its end. Not equal to the end
    # rate: an epoch slower than the callback foresaw (epochs of milliseconds on a loaded machine) can leave no room
    # for the last planned one, and the run ends an epoch early at the cosine's second-last rate (CI, 5 Dec:
    # 2.0015e-05 against 2e-05)
    base, end = 0.002, 0.002 * 0.01  # --lr and the cosine's end rate
    assert end * (1 - 1e-4) <= rates[-1] <= end + 0.01 * (base - end)
    assert all(a >= b * (1 - 1e-6) for a, b in zip(rates, rates[1:]))
    assert json.loads((run / "state.json").read_text())["TimeLimit"] == {"end": len(rates), "planned": 100000}

    from facelandmarks.cli.train import main

    capsys.readouterr()
    code = main(["--resume", "--run-dir", str(run)])
    again = capsys.readouterr()
    assert code == 0, again.err[-2000:]
    assert f"already ran the {len(rates)} epochs its time limit left of 100000" in again.out
    assert json.loads((run / "summary.json").read_text()) == summary  # nothing ran: its train_seconds stand
    code = main(["--resume", "--run-dir", str(run), "--epochs", str(len(rates) + 2)])
    assert code == 0, capsys.readouterr().err[-2000:]
    final = json.loads((run / "summary.json").read_text())
    assert final["epochs"] == len(rates) + 2
    with open(run / "history.csv", newline="") as handle:
        seconds = [float(row["epoch_seconds"]) for row in csv.DictReader(handle)]
    # the training time of both sittings (it once held the last sitting's alone); the sitting's own beside it
    assert len(seconds) == len(rates) + 2 and final["train_seconds"] == round(sum(seconds), 1) >= summary["train_seconds"]
    assert final["sitting_seconds"] > 0


def test_time_limit_is_refused_where_it_would_time_several_trainings(tmp_path):
    from facelandmarks.pipelines.train import train_kind
    from facelandmarks.training.config import TrainConfig
    from facelandmarks.training.fit import check_time_limit

    config = TrainConfig(model="scratch", data="d.npz", run_dir=str(tmp_path / "r"), time_limit="10m")
    check_time_limit(config, 1)
    with pytest.raises(ValueError, match="--time-limit needs one training process; the 2 workers"):
        check_time_limit(config, 2)
    with pytest.raises(ValueError, match="train.py regions trains its models one after another"):
        train_kind("regions", config)
    assert not (tmp_path / "r").exists()


def test_a_compiling_first_epoch_cuts_nothing_that_a_faster_second_would_undo(capsys):
    from facelandmarks.training.callbacks import TimeLimit

    clock = _Clock()
    limit = TimeLimit(100.0, 50, None, started=0.0, clock=clock)
    _epochs(limit, clock, [30.0, 1.0, 1.0])  # at 30 s an epoch 2 more would fit; at 1 s, 68: the budget stands
    assert "time limit" not in capsys.readouterr().out and limit.end == 50 and not limit.model.stop_training


def test_a_cut_and_its_reshaped_cosine_come_back_from_state_json():
    import json

    from facelandmarks.training.callbacks import CosineSchedule, TimeLimit
    from facelandmarks.training.resume import callback_state, restore_callbacks

    schedule = CosineSchedule(0.5, 100)
    limit = TimeLimit(600.0, 100, schedule)
    schedule.reshape(30, 11)
    limit.end = 30
    state = json.loads(json.dumps(callback_state({"CosineSchedule": schedule, "TimeLimit": limit})))
    again = CosineSchedule(0.5, 100)
    again_limit = TimeLimit(None, 100, again)
    restore_callbacks(state, {"CosineSchedule": again, "TimeLimit": again_limit})
    assert [again.rate(e) for e in range(11, 35)] == [schedule.rate(e) for e in range(11, 35)]
    assert (again_limit.end, again_limit.planned) == (30, 100)


def test_a_val_file_of_another_size_is_fed_at_the_training_size(tmp_path, capsys):
    """--val at 24 px beside 16-px training faces once failed after a whole epoch (the model's input is 16 px)."""
    from facelandmarks.cli.train import main
    from facelandmarks.data import npz
    from tests.unit.test_train_errors import TINY, faces

    data = npz.save_npz(tmp_path / "faces.npz", faces(12))
    val = npz.save_npz(tmp_path / "val.npz", faces(4, size=24))
    assert main([*TINY, "--batch", "4", "--data", str(data), "--val", str(val), "--run-dir", str(tmp_path / "run")]) == 0
    assert f"--val {val}: 24-px faces resized to the training faces' 16 px" in capsys.readouterr().out
    # --init from a run of another input size says what that costs (it trained on silently, and lost most of it)
    bigger = npz.save_npz(tmp_path / "bigger.npz", faces(12, size=24))
    assert main([*TINY, "--batch", "4", "--data", str(bigger), "--init", str(tmp_path / "run"),
                 "--run-dir", str(tmp_path / "run24")]) == 0
    out = capsys.readouterr().out
    assert f"warning: --init {tmp_path / 'run'} trained on 16-px faces, this run's are 24 px" in out
    assert "(--size 16 feeds these faces at its size)" in out and "--val" not in out


def test_a_mistyped_model_name_is_answered_with_the_name_it_may_mean():
    from facelandmarks.training.trainers import get_trainer

    for typed in ("mobilnetv2", "MobileNetV2"):
        with pytest.raises(ValueError, match=f"unknown model '{typed}'; did you mean mobilenetv2\\? known: scratch"):
            get_trainer(typed)
    with pytest.raises(ValueError, match=r"unknown model 'zzz'; known: scratch"):
        get_trainer("zzz")


def test_scores_without_a_scored_face_are_null_in_summary_json(tmp_path, capsys):
    """A validation set without a visible point (a refiner's patches of a tiny cascade) wrote NaN, which strict JSON
    readers refuse."""
    import json

    from facelandmarks.cli.train import main  # train.py's, in this process: one Keras start-up less
    from facelandmarks.data import npz
    from tests.unit.test_train_errors import TINY, faces

    data = npz.save_npz(tmp_path / "faces.npz", faces(12))
    hidden = faces(4)
    hidden["visible"][:] = False
    val = npz.save_npz(tmp_path / "val.npz", hidden)
    capsys.readouterr()
    code = main([*TINY, "--batch", "4", "--data", str(data), "--val", str(val), "--run-dir", str(tmp_path / "run")])
    done = capsys.readouterr()
    assert code == 0, done.err[-2000:]

    def refuse(constant):
        raise ValueError(f"{constant} in summary.json")

    summary = json.loads((tmp_path / "run" / "summary.json").read_text(), parse_constant=refuse)
    assert summary["val_mse"] is None and summary["epochs"] == 1
    json.loads(done.out[done.out.index("{"):], parse_constant=refuse)  # the summary train.py prints too


@pytest.mark.backend
@pytest.mark.parametrize("distribute, workers", [("none", 1), ("none", 2), ("mirrored", 1), ("data-parallel", 1)])
def test_a_resumed_run_with_dropout_and_augmentation_ends_with_the_weights_of_an_uninterrupted_one(
        distribute, workers, tmp_path):
    """The dropout layers' random state (Keras' SeedGenerator, which ``save_weights`` leaves out) is saved in
    ``state.json`` and restored: without it a resumed epoch 2 drew epoch 1's masks again and ended with other
    weights. Augmentation needs no saved state (each batch's draws are seeded by the seed, epoch and batch index);
    it is on here to show that too. The state.json of an older version has no random state: one line says so.
    Under a tf.distribute strategy the faces come as one stream cut into steps: a resumed run skips the faces the
    finished epochs took (it started the stream again), and the stream keeps its own epoch plans (the epoch callback
    changed them under tf.data's reading thread). With two workers, Keras on JAX drew the batch that builds the
    training step through its workers, which fetched the next ones meanwhile; it then fed those to the first epoch,
    and each epoch's look-ahead to the next, and a resumed run began with its own epoch's instead.
    The strategy's runs go in a process of their own (as in test_head_rate.py: TensorFlow's segmentation fault)."""
    import keras

    if distribute == "mirrored" and keras.backend.backend() != "tensorflow":
        pytest.skip("tf.distribute strategies are TensorFlow's")
    if distribute == "data-parallel" and keras.backend.backend() != "jax":
        pytest.skip("data-parallel is Keras's JAX distribution")
    if distribute != "mirrored":
        return resumed_dropout_check(distribute, workers, str(tmp_path))
    from tests.unit.test_head_rate import check_in_fresh_process

    check_in_fresh_process(resumed_dropout_check, distribute, workers, str(tmp_path))


def resumed_dropout_check(distribute: str, workers: int, tmp_path: str) -> None:
    """The test above in the process it runs in."""
    import contextlib
    import csv
    import io

    import h5py
    import keras

    from facelandmarks.data import npz
    from facelandmarks.models import build_model
    from facelandmarks.training import fit as fit_module
    from facelandmarks.training.config import TrainConfig
    from facelandmarks.training.resume import restore_random_state
    from tests.unit.test_train_errors import faces

    tmp_path = Path(tmp_path)
    data = npz.save_npz(tmp_path / "faces.npz", faces(40))  # 30 training faces: a strategy's epoch of 3 steps ends mid-pass

    def config(run_dir, epochs):
        return TrainConfig(model="mlp", data=str(data), run_dir=str(tmp_path / run_dir), val_fraction=0.25,
                           epochs=epochs, batch=8, schedule="constant", augment="flip=0.5,noise=5",
                           model_options={"hidden_units": [16], "dropout": 0.5}, preview_every=0, workers=workers,
                           distribute=distribute)

    def losses(run_dir):
        with open(tmp_path / run_dir / "history.csv", newline="") as handle:
            return [row["loss"] for row in csv.DictReader(handle)]

    def weights(run_dir):
        found = {}
        with h5py.File(tmp_path / run_dir / "last.weights.h5") as f:
            f["layers"].visititems(lambda name, item: found.update({name: item[()]}) if isinstance(item, h5py.Dataset) else None)
        return found

    streams, pipeline = [], fit_module.tf_input_pipeline  # the faces' stream of a strategy, and where it starts
    fit_module.tf_input_pipeline = lambda *a, **k: streams.append(k["skip"]) or pipeline(*a, **k)
    try:
        fit_module.fit(config("whole", 2), verbose=0)
        fit_module.fit(config("resumed", 1), verbose=0)
        fit_module.fit(config("resumed", 2), resume=True, verbose=0)
    finally:
        fit_module.tf_input_pipeline = pipeline
    assert losses("resumed") == losses("whole")
    assert streams == ([0, 0, 24] if distribute == "mirrored" else [])  # the resume skips epoch 1's 3 steps of 8 faces
    assert keras.distribution.distribution() is None  # data-parallel's was left set for whatever the process ran next
    whole, resumed = weights("whole"), weights("resumed")
    assert whole.keys() == resumed.keys()
    for name in whole:
        np.testing.assert_array_equal(resumed[name], whole[name], err_msg=name)

    # a state.json as the version before wrote it: no "random"
    model = build_model("mlp", input_shape=(16, 16, 3), num_points=68, weights="none", hidden_units=[16], dropout=0.5)
    with contextlib.redirect_stderr(io.StringIO()) as err:
        restore_random_state(model, tmp_path / "resumed", {"epoch": 0})
    assert err.getvalue() == (f"{tmp_path / 'resumed' / 'state.json'}: the random state of the dropout layers was "
                              "not saved (a run of an older version): from epoch 2 they drop other units than an "
                              "uninterrupted run would\n")


def _shard_set(tmp_path, counts):
    """A shard set of synthetic 16-px ibug68 faces, ``counts[i]`` faces in shard i, and a validation npz."""
    from facelandmarks.data import npz
    from tests.unit.test_train_errors import faces

    whole, shards, start = faces(sum(counts)), [], 0
    for i, count in enumerate(counts):
        path = npz.shard_path(tmp_path / "s_train", i)
        npz.save_npz(path, npz.subset(whole, np.arange(start, start + count)))
        shards.append({"file": path, "faces": count})
        start += count
    manifest = npz.write_manifest(tmp_path / "s_train.shards.json", shards, "ibug68", (16, 16, 3))
    return manifest, npz.save_npz(tmp_path / "val.npz", faces(8))


@pytest.mark.backend
def test_a_jax_shard_set_compiles_the_train_step_once_and_trains_as_it_did(tmp_path, monkeypatch):
    """Under JAX each shard's last, shorter batch had a shape of its own, and jax.jit traced and compiled the train
    step again for each: 4 compiles for batches of 4 from shards whose remainders are 3, 2, 1 and 2 (a compile costs
    seconds on a real model). Such a batch now comes padded to the batch size with rows that have no visible point:
    one compile, and the weights and validation NME of the unpadded batches."""
    import keras
    from keras.src.backend.jax import trainer as jax_trainer

    from facelandmarks.data import feeding
    from facelandmarks.training.config import TrainConfig
    from facelandmarks.training.fit import fit

    if keras.backend.backend() != "jax":
        pytest.skip("jax.jit's compiles per batch shape; TensorFlow's train function relaxes its shapes")
    manifest, val = _shard_set(tmp_path, (11, 10, 9, 10))
    traced, train_step = [], jax_trainer.JAXTrainer.train_step

    def counted(self, state, data):  # the traced function: runs once per trace, that is per compile under jax.jit
        traced.append(tuple(data[0].shape))
        return train_step(self, state, data)

    monkeypatch.setattr(jax_trainer.JAXTrainer, "train_step", counted)

    def run(name):
        traced.clear()
        config = TrainConfig(model="mlp", data=str(manifest), val=str(val), run_dir=str(tmp_path / name), epochs=2,
                             batch=4, augment="none", model_options={"hidden_units": [4]}, preview_every=0, workers=1)
        return fit(config, verbose=0), list(traced)

    padded, padded_traces = run("padded")
    assert padded_traces == [(4, 16, 16, 3)]
    monkeypatch.setattr(feeding, "pad_batch", lambda x, targets, size: (x, targets))  # as before
    unpadded, unpadded_traces = run("unpadded")
    assert sorted(shape[0] for shape in unpadded_traces) == [1, 2, 3, 4]
    assert padded["val_nme"] == pytest.approx(unpadded["val_nme"], rel=1e-5)
    model = keras.saving.load_model(tmp_path / "padded" / "model.keras", compile=False)
    before = keras.saving.load_model(tmp_path / "unpadded" / "model.keras", compile=False)
    for mine, theirs in zip(model.get_weights(), before.get_weights(), strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-7)


def test_a_padded_batch_has_the_loss_and_batch_statistics_of_its_faces():
    """``pad_batch``'s rows (the batch's faces again, no visible point) change no masked loss; where the faces'
    count divides the batch size, batch normalisation's statistics are theirs too."""
    import keras
    from keras import ops

    from facelandmarks.data.feeding import pack_targets, pad_batch
    from facelandmarks.models.losses import get_loss

    rng = np.random.default_rng(3)
    x = rng.uniform(0, 255, (3, 4, 4, 1)).astype(np.float32)
    visible = rng.uniform(size=(3, 68)) > 0.2
    targets = pack_targets(rng.uniform(0.2, 0.8, (3, 68, 2)), visible)
    big_x, big_targets = pad_batch(x, targets, 6)
    assert big_x.shape == (6, 4, 4, 1) and big_targets.shape == (6, 68, 3)
    np.testing.assert_array_equal(big_x, np.concatenate([x, x]))
    np.testing.assert_array_equal(big_targets[:3], targets)
    assert not big_targets[3:].any()  # no visible point
    assert pad_batch(x, targets, 3)[0] is x
    inputs = keras.Input((4, 4, 1))
    model = keras.Model(inputs, keras.layers.Dense(136)(keras.layers.Flatten()(keras.layers.BatchNormalization()(inputs))))
    for name in ("mse", "l1", "wing", "cgd"):
        loss = get_loss(name)
        small = loss(targets, model(x, training=True))
        big = loss(big_targets, model(big_x, training=True))
        np.testing.assert_allclose(ops.convert_to_numpy(big), ops.convert_to_numpy(small), rtol=1e-5, err_msg=name)
