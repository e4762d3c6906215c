"""``--head-lr-scale``: the layers ``--init`` restarted learn at a multiple of the schedule's rate."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from facelandmarks.landmarks import Scheme
from tests.unit.test_init_head import FACE5, PICKED


def _tiny(name_of_head="head"):
    import keras

    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(3, name="body")(inputs)
    return keras.Model(inputs, keras.layers.Dense(2, name=name_of_head)(hidden))


@pytest.mark.backend
@pytest.mark.parametrize("name", ["adam", "sgd"])
@pytest.mark.parametrize("loss_scaled", [False, True])
def test_the_chosen_layers_move_x_times_as_far_on_the_first_step(name, loss_scaled):
    """Adam's first step is the rate times the gradient's sign, whatever the gradient's size, so only a scaled rate
    moves a layer further: the head 10 x as far as with scale 1, the body as far. Also inside the loss-scale
    optimizer that mixed precision wraps around it (dynamic scaling; float32 here, as on a CPU)."""
    import keras

    from facelandmarks.models.optimizers import make_optimizer

    def moves(scale):
        keras.utils.set_random_seed(0)
        model = _tiny()
        before = [np.array(v) for v in model.trainable_variables]
        optimizer = make_optimizer(name, 1e-3, ("head",), scale)
        if loss_scaled:
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        model.compile(optimizer=optimizer, loss="mse")
        model.train_on_batch(np.ones((2, 4), np.float32), np.full((2, 2), 5.0, np.float32))
        return {v.path: np.abs(np.array(v) - b) for v, b in zip(model.trainable_variables, before)}

    plain, scaled = moves(1.0), moves(10.0)
    assert sorted(plain) == ["body/bias", "body/kernel", "head/bias", "head/kernel"]
    for path in plain:
        assert plain[path].max() > 0, path
        np.testing.assert_allclose(scaled[path], plain[path] * (10.0 if path.startswith("head/") else 1.0),
                                   rtol=1e-3, atol=1e-9, err_msg=path)


def test_a_scaled_optimizer_round_trips_its_config():
    from facelandmarks.models.optimizers import make_optimizer

    optimizer = make_optimizer("adam", 1e-3, ("pip_scores", "pip_offsets"), 10)
    again = type(optimizer).from_config(optimizer.get_config())
    assert (again.scaled_layers, again.rate_scale) == (("pip_scores", "pip_offsets"), 10.0)
    assert type(make_optimizer("adam", 1e-3, ("pip_scores",), 1.0)).__name__ == "Adam"  # the flag unused: plain Keras


def test_the_flag_is_a_config_key_and_is_refused_without_init(tmp_path):
    from facelandmarks.cli.train import main, resolve_config
    from facelandmarks.training.config import ConfigError

    config, _ = resolve_config(["mlp", "--data", "d.npz", "--run-dir", "r", "--init", "x", "--head-lr-scale", "10"])
    assert config.head_lr_scale == 10.0
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"model": "mlp", "data": "d", "run_dir": "r", "head_lr_scale": "fast"}))
    with pytest.raises(ConfigError, match="head_lr_scale must be float"):
        resolve_config(["--config", str(path)])
    assert main(["mlp", "--data", str(tmp_path / "d.npz"), "--run-dir", str(tmp_path / "r"),
                 "--head-lr-scale", "10"]) == 2
    with pytest.raises(ValueError, match="must be positive"):
        resolve_config(["mlp", "--data", "d", "--run-dir", "r", "--init", "x", "--head-lr-scale", "0"])[0].validate()


def test_the_flag_without_init_or_with_nothing_restarted_says_so_in_one_line(tmp_path, capsys):
    """No --init: refused before the data loads. --init from a run of the same markup: every layer is kept, and the
    run stops with one line instead of training at one rate for all while the flag says otherwise."""
    from facelandmarks.cli.train import main
    from facelandmarks.data import npz
    from tests.unit.test_train_errors import faces

    data = npz.save_npz(tmp_path / "faces.npz", faces(24))
    common = ["mlp", "--data", str(data), "--epochs", "1", "--batch", "8", "--val-fraction", "0.25", "--augment", "none",
              "--schedule", "constant", "--model-options", '{"hidden_units": [8]}', "--preview-every", "0"]
    assert main([*common, "--run-dir", str(tmp_path / "alone"), "--head-lr-scale", "10"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["train.py: --head-lr-scale 10 speeds up the layers --init restarts; without --init every layer "
                   "starts alike (give --init RUN, or leave --head-lr-scale at 1)"]
    assert main([*common, "--run-dir", str(tmp_path / "first")]) == 0
    assert main([*common, "--run-dir", str(tmp_path / "again"), "--init", str(tmp_path / "first"),
                 "--head-lr-scale", "10"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"train.py: --head-lr-scale 10: --init {tmp_path / 'first'} restarted no layer (same point count and "
                   "markup: every layer was kept), so there is no head to give another rate; leave --head-lr-scale at 1"]


def last_weights(run_dir) -> dict:
    """Every array of a run's last.weights.h5 (the model's and the optimizer's), by its place in the file."""
    import h5py

    found = {}
    with h5py.File(run_dir / "last.weights.h5") as f:
        f.visititems(lambda name, item: found.update({name: item[()]}) if isinstance(item, h5py.Dataset) else None)
    return found


ROOT = str(Path(__file__).resolve().parents[2])  # this checkout's package, not another one's editable install


def in_fresh_python(code: str, *args: str) -> subprocess.CompletedProcess:
    """``python -c code args`` in this checkout, its output captured."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT, env=env)


def check_in_fresh_process(check, *args) -> None:
    """``check(*args)`` (a module-level function; str and int arguments) in a process of its own, as a user's
    training runs: an assertion or a crash there fails the caller, with the process's output."""
    # tests.unit.NAME from its file: pytest may have imported the module under another name ('unit.NAME')
    module = ".".join(Path(sys.modules[check.__module__].__file__).relative_to(ROOT).with_suffix("").parts)
    code = (f"import json, sys; from {module} import {check.__name__} as check; "
            "check(*json.loads(sys.argv[1])); print('checked')")
    done = in_fresh_python(code, json.dumps(args))
    assert done.returncode == 0 and done.stdout.split()[-1:] == ["checked"], \
        f"exit {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"


@pytest.mark.backend
@pytest.mark.parametrize("distribute", ["none", "mirrored"])
def test_a_resumed_run_keeps_the_scaled_head_without_its_init_run(distribute, tmp_path):
    """A five-point run from a 68-point one with the head at 10 x: killed after epoch 1 and resumed, it ends with the
    weights and optimizer state of an uninterrupted run, though the run it started from is gone by then (the layers come from its
    config.json); at 1 x the weights end elsewhere. Also under a tf.distribute strategy, where each replica's
    update_step gets its own copy of a variable. Its model.keras loads where the package is imported.

    The strategy's runs go in a process of their own, as a user's training does: in a test process that had run
    hundreds of tests before it, TensorFlow died of a segmentation fault freeing the previous epoch's validation
    iterator (Keras's epoch_iterator.reset under MirroredStrategy) in two full runs of 6 Dec; 40 runs of this test in
    a fresh process passed (docs/results.md#test-suite-timings)."""
    import keras

    if distribute == "mirrored" and keras.backend.backend() != "tensorflow":
        pytest.skip("tf.distribute strategies are TensorFlow's")
    if distribute == "none":
        return resumed_run_check(distribute, str(tmp_path))
    check_in_fresh_process(resumed_run_check, distribute, str(tmp_path))


def resumed_run_check(distribute: str, tmp_path: str) -> None:
    """The test above in the process it runs in."""
    from facelandmarks.data import npz
    from facelandmarks.training.config import TrainConfig
    from facelandmarks.training.fit import fit
    from facelandmarks.training.resume import SAVED_MODEL
    from tests.unit.test_train_errors import faces

    tmp_path = Path(tmp_path)
    arrays = faces(40)
    ibug = npz.save_npz(tmp_path / "ibug.npz", arrays)
    five = npz.save_npz(tmp_path / "five.npz", npz.select_points(arrays, Scheme.from_dict(FACE5), PICKED))
    common = dict(model="mlp", batch=8, val_fraction=0.25, schedule="cosine", augment="none",
                  model_options={"hidden_units": [16]}, preview_every=0)
    fit(TrainConfig(data=str(ibug), run_dir=str(tmp_path / "ibug"), epochs=1, **common), verbose=0)

    def run(name, epochs, scale=10.0, resume=False):
        return fit(TrainConfig(data=str(five), run_dir=str(tmp_path / name), init=str(tmp_path / "ibug"), epochs=epochs,
                               head_lr_scale=scale, distribute=distribute, **common), resume=resume, verbose=0)

    run("whole", 2), run("plain", 2, scale=1.0)
    run("resumed", 1)
    recorded = json.loads((tmp_path / "resumed" / "config.json").read_text())
    assert recorded["head_lr_scale"] == 10.0 and len(recorded["head_lr_layers"]) == 1  # the mlp's last dense layer
    shutil.rmtree(tmp_path / "ibug")
    run("resumed", 2, resume=True)
    ends = {name: last_weights(tmp_path / name) for name in ("whole", "resumed", "plain")}
    assert ends["whole"].keys() == ends["resumed"].keys() and any("optimizer" in key for key in ends["whole"])
    for key, value in ends["whole"].items():  # the model's weights and Adam's moments
        np.testing.assert_array_equal(ends["resumed"][key], value, err_msg=key)
    assert any(not np.array_equal(ends["plain"][key], value) for key, value in ends["whole"].items())
    code = (f"import facelandmarks.models, keras; m = keras.models.load_model({str(tmp_path / 'whole' / SAVED_MODEL)!r}); "
            "print(type(m.optimizer).__name__, m.optimizer.rate_scale)")
    done = in_fresh_python(code)
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.split() == ["HeadRateAdam", "10.0"]


def test_init_alone_into_another_markup_starts_from_the_nearest_points_with_the_head_at_10x(tmp_path, capsys):
    """What `python train.py --init --data other-markup.npz` gets without naming either flag (docs/own-landmarks.md,
    5 epochs from the shipped model: 2.81 % test NME on face5, every point copied, and 3.01 % on mixed9, two points
    fresh, against 9.34 and 7.94 % with the fresh head at one rate that was the default): --init-head nearest, and
    where points start fresh (here all: a barely trained init run finds none of them) the layers --init restarted at
    10 x the rate, recorded in config.json so the run's config repeats it. The same markup, no --init, and the old
    defaults spelled out in a recipe keep one rate for all."""
    from facelandmarks.cli.train import main, resolve_config
    from facelandmarks.data import npz
    from facelandmarks.training.config import HEAD_LR_SCALE_NEW_MARKUP
    from tests.unit.test_train_errors import TINY, faces

    config, _ = resolve_config(["--init", "--data", "other-markup.npz", "--run-dir", str(tmp_path / "r")])
    assert (config.init_head, config.head_lr_scale, HEAD_LR_SCALE_NEW_MARKUP) == ("nearest", None, 10.0)
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"model": "mlp", "data": "d", "init": "x", "init_head": "fresh", "head_lr_scale": 1.0}))
    assert (lambda c: (c.init_head, c.head_lr_scale))(resolve_config(["--config", str(recipe), "--run-dir", "r"])[0]) \
        == ("fresh", 1.0)

    arrays = faces(40)
    ibug = npz.save_npz(tmp_path / "ibug.npz", arrays)
    five = npz.save_npz(tmp_path / "five.npz", npz.select_points(arrays, Scheme.from_dict(FACE5), PICKED))
    common = [*TINY, "--batch", "8", "--val-fraction", "0.25", "--schedule", "constant"]
    assert main([*common, "--data", str(ibug), "--run-dir", str(tmp_path / "ibug")]) == 0
    recorded = json.loads((tmp_path / "ibug" / "config.json").read_text())
    assert recorded["head_lr_scale"] == 1.0 and "head_lr_layers" not in recorded  # no --init: one rate
    capsys.readouterr()
    assert main([*common, "--data", str(five), "--run-dir", str(tmp_path / "five"), "--init", str(tmp_path / "ibug")]) == 0
    out = capsys.readouterr().out
    assert "--init-head nearest: " in out
    assert "--head-lr-scale 10 (the default where points of another markup start fresh): " in out
    recorded = json.loads((tmp_path / "five" / "config.json").read_text())
    assert (recorded["init_head"], recorded["head_lr_scale"], len(recorded["head_lr_layers"])) == ("nearest", 10.0, 1)
    assert recorded["head_lr_scale_default"] == 10.0  # the default chose it: as a --config, the file lets it choose again
    assert main([*common, "--data", str(ibug), "--run-dir", str(tmp_path / "same"), "--init", str(tmp_path / "ibug")]) == 0
    assert "--head-lr-scale" not in capsys.readouterr().out  # the same markup: every layer kept, one rate
    assert json.loads((tmp_path / "same" / "config.json").read_text())["head_lr_scale"] == 1.0
    assert main([*common, "--data", str(five), "--run-dir", str(tmp_path / "one"), "--init", str(tmp_path / "ibug"),
                 "--head-lr-scale", "1"]) == 0
    assert "--head-lr-scale 10" not in capsys.readouterr().out
    assert json.loads((tmp_path / "one" / "config.json").read_text())["head_lr_scale"] == 1.0


def test_a_runs_config_reused_repeats_its_head_rate_and_lets_the_default_choose_for_other_data(tmp_path, capsys):
    """The scale the default chose was written into config.json as if typed: the file reused for data of the init's
    own markup was refused (--head-lr-scale 10: restarted no layer; leave --head-lr-scale at 1, a flag nobody gave),
    and a run's config given an --init into another markup held it to 1. Now the default chooses again; the same
    --init and data choose what the run had. A scale that was given stays."""
    from facelandmarks.cli.train import main, resolve_config
    from facelandmarks.data import npz
    from tests.unit.test_train_errors import TINY, faces

    arrays = faces(24)
    ibug = npz.save_npz(tmp_path / "ibug.npz", arrays)
    five = npz.save_npz(tmp_path / "five.npz", npz.select_points(arrays, Scheme.from_dict(FACE5), PICKED))
    common = [*TINY, "--batch", "8", "--val-fraction", "0.25", "--schedule", "constant"]
    assert main([*common, "--data", str(ibug), "--run-dir", str(tmp_path / "ibug")]) == 0
    assert main([*common, "--data", str(five), "--run-dir", str(tmp_path / "five"), "--init", str(tmp_path / "ibug"),
                 "--init-head", "fresh"]) == 0
    capsys.readouterr()

    def rerun(name, *argv):
        assert main(["--config", str(tmp_path / argv[0] / "config.json"), *argv[1:], "--run-dir", str(tmp_path / name)]) == 0
        said = "--head-lr-scale 10 (the default where points of another markup start fresh)" in capsys.readouterr().out
        recorded = json.loads((tmp_path / name / "config.json").read_text())
        return said, recorded["head_lr_scale"], recorded.get("head_lr_scale_default"), recorded.get("head_lr_layers")

    assert rerun("again", "five") == (True, 10.0, 10.0, ["landmark_coordinates"])  # the same settings as "five"
    assert rerun("ibug-data", "five", "--data", str(ibug)) == (False, 1.0, 1.0, None)  # once refused
    assert rerun("init-added", "ibug", "--data", str(five), "--init", str(tmp_path / "ibug")) == (
        True, 10.0, 10.0, ["landmark_coordinates"])  # once held to 1
    assert rerun("given", "five", "--head-lr-scale", "3") == (False, 3.0, None, ["landmark_coordinates"])
    assert resolve_config(["--config", str(tmp_path / "given" / "config.json"), "--run-dir", "r"])[0].head_lr_scale == 3.0


def test_the_default_head_rate_is_10x_only_where_points_of_another_markup_start_fresh():
    """Every point copied by --init-head nearest (face5 from the shipped model: 2.81 % at 1 x, 2.87 % at 10 x): one
    rate. A resumed run from before the default: one rate. A value given: kept, no line."""
    from facelandmarks.training.config import TrainConfig
    from facelandmarks.training.head_rate import settle_head_lr_scale

    def settled(fresh_points, resume=False, restarted=("pip_scores", "pip_offsets"), **given):
        config = TrainConfig(model="mlp", data="d", run_dir="r", init="x", **given)
        return settle_head_lr_scale(config, resume, restarted, fresh_points), config.head_lr_scale

    line, scale = settled(True)
    assert scale == 10.0 and line.startswith("--head-lr-scale 10 (the default where points of another markup start "
                                             "fresh): pip_scores, pip_offsets learn at 10 x the schedule's rate")
    assert settled(False) == (None, 1.0)                  # nearest copied every point
    assert settled(True, restarted=()) == (None, 1.0)     # nothing restarted
    assert settled(True, resume=True) == (None, 1.0)      # a run that recorded no scale
    assert settled(True, head_lr_scale=1.0) == (None, 1.0) and settled(False, head_lr_scale=3.0) == (None, 3.0)


def test_a_run_from_before_the_flag_resumes_with_it_spelled_at_1_and_refuses_another(tmp_path):
    """Its config.json has no head_lr_scale: it trained every layer at the rate and goes on so, and --head-lr-scale 1
    says just that; a run stopped before --init settled the scale (null) keeps it open for its new start."""
    from facelandmarks.cli.train import resolve_config
    from facelandmarks.training.config import ConfigError

    old = {"model": "mlp", "data": "d.npz", "run_dir": "r", "init": "x", "init_head": "fresh"}
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "config.json").write_text(json.dumps(old))
    config, resume = resolve_config(["--resume", "--run-dir", str(tmp_path / "old"), "--head-lr-scale", "1"])
    assert resume and config.head_lr_scale == 1.0
    assert resolve_config(["--resume", "--run-dir", str(tmp_path / "old")])[0].head_lr_scale == 1.0
    with pytest.raises(ConfigError, match="not --head-lr-scale"):
        resolve_config(["--resume", "--run-dir", str(tmp_path / "old"), "--head-lr-scale", "10"])
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "config.json").write_text(json.dumps({**old, "head_lr_scale": None}))
    assert resolve_config(["--resume", "--run-dir", str(tmp_path / "new")])[0].head_lr_scale is None
