"""``--init-head nearest``: a new markup's points start from the head of the init model's nearest points."""

import numpy as np
import pytest

from facelandmarks.landmarks import Scheme

FACE5 = {
    "name": "initheadfive",
    "points": ["right_eye", "left_eye", "nose", "right_mouth", "left_mouth"],
    "pairs": [["right_eye", "left_eye"], ["right_mouth", "left_mouth"]],
    "normalize": ["right_eye", "left_eye"],
}
PICKED = [36, 45, 30, 48, 54]  # face5 in ibug68


def test_nearest_points_are_measured_in_normalising_distances_and_skip_points_never_seen():
    from facelandmarks.training.init_head import nearest_points

    rng = np.random.default_rng(0)
    predicted = rng.uniform(0, 1, (6, 10, 2))
    landmarks = predicted[:, [3, 7, 1, 0, 9]] + [0.001, 0.0]
    visible = np.ones((6, 5), bool)
    visible[:, 2] = False
    nearest, distance = nearest_points(predicted, landmarks, visible, Scheme.from_dict(FACE5))
    assert nearest[[0, 1, 3, 4]].tolist() == [3, 7, 0, 9]
    eyes = np.linalg.norm(landmarks[:, 0] - landmarks[:, 1], axis=-1)
    np.testing.assert_allclose(distance[0], np.mean(0.001 / eyes))
    assert np.isinf(distance[2])


def test_a_pip_head_copies_each_points_score_map_and_both_offsets():
    """PIP's offsets interleave x and y per point: the copy takes the pair (a copy of channels 2i and 2i + 1)."""
    from facelandmarks.models import build_model
    from facelandmarks.training.init_head import copy_point_channels

    rng = np.random.default_rng(1)
    old = build_model("mobilenetv2_heatmap", (64, 64, 3), 3, weights="none")
    for variable in old.weights:
        if variable.path.startswith(("pip_scores", "pip_offsets")):
            variable.assign(rng.normal(0, 0.3, variable.shape).astype(np.float32))
    new = build_model("mobilenetv2_heatmap", (64, 64, 3), 2, weights="none")
    for mine, theirs in zip(new.weights, old.weights):
        if tuple(mine.shape) == tuple(theirs.shape):
            mine.assign(np.asarray(theirs))
    copy_point_channels(new, old, ("pip_scores", "pip_offsets"), {0: 2, 1: 0})
    x = rng.uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    np.testing.assert_allclose(new.predict(x, verbose=0), old.predict(x, verbose=0)[:, [2, 0]], atol=1e-5)


def test_init_head_nearest_starts_a_new_markup_where_the_init_model_finds_its_points(tmp_path):
    """A five-point markup picked from a 68-point run: after --init, each point predicts what the run predicted for
    its point (the head restarted fresh before: 9.34 % test NME after 5 epochs on face5, 2.81 % from the nearest);
    a point never seen keeps its fresh start."""
    from facelandmarks.models import build_model
    from facelandmarks.training.init import init_weights
    from facelandmarks.training.init_head import NEAREST_FACES, head, start_from_nearest

    options = {"hidden_units": [16]}
    old, before, config = _init_run(tmp_path, options, 16)
    scheme = Scheme.from_dict(FACE5)
    images = np.random.default_rng(2).uniform(0, 255, (12, 16, 16, 3)).astype(np.float32)
    landmarks = old.predict(images, verbose=0)[:, PICKED]
    visible = np.ones((12, 5), bool)
    visible[:, 2] = False  # the nose: nowhere to measure it, no point to start it from
    model = build_model("mlp", (16, 16, 3), 5, weights="none", **options)
    layers = head(config, scheme, model)
    init_weights(model, config.init)
    fresh = {v.path: np.asarray(v) for v in model.weights if v.path.rsplit("/", 1)[0] in layers}
    line, fresh_points = start_from_nearest(model, config, before, scheme, (images, landmarks, visible))
    assert fresh_points == 1  # the nose: --head-lr-scale's default speeds the head up for it
    assert line.startswith("--init-head nearest: 4 of 5 points start from the head of ibug68's point nearest them on "
                           "12 training faces")
    assert "right_eye <- ibug68 36 (0.0 %)" in line and "nose fresh (never visible)" in line and 12 <= NEAREST_FACES
    predicted = model.predict(images, verbose=0)
    np.testing.assert_allclose(predicted[:, [0, 1, 3, 4]], landmarks[:, [0, 1, 3, 4]], atol=1e-5)
    kernel = next(v for v in model.weights if v.path in fresh and len(v.shape) == 2)
    np.testing.assert_array_equal(np.asarray(kernel)[:, 4:6], fresh[kernel.path][:, 4:6])  # the nose's x, y


def _init_run(tmp_path, options, size):
    """A random 16-px mlp run of 68 points (its model and config.json) and the ``--init-head nearest`` config of a run
    from it at ``size`` px."""
    from facelandmarks.models import build_model
    from facelandmarks.training.config import TrainConfig

    old = build_model("mlp", (16, 16, 3), 68, weights="none", **options)
    old.save_weights(tmp_path / "run.weights.h5")
    before = {"model": "mlp", "num_points": 68, "input_shape": [16, 16, 3], "scheme": "ibug68", "weights": "none",
              "model_options": options}
    config = TrainConfig(model="mlp", data="unused.npz", run_dir="unused", input_shape=[size, size, 3], batch=8,
                         init=str(tmp_path / "run.weights.h5"), init_head="nearest", model_options=options)
    return old, before, config


def test_init_head_nearest_predicts_with_the_init_model_at_the_size_it_trained_at(tmp_path):
    """--init from a 16-px mlp run into 32-px faces: the init model was rebuilt at the new size to find the nearest
    points, and its first dense layer (on the flattened image) did not take its weights: the run ended in Keras' long
    'A total of 1 objects could not be loaded' line. It predicts at its own size now, on the faces resized to it."""
    from facelandmarks.data.feeding import model_inputs
    from facelandmarks.models import build_model
    from facelandmarks.training.init import init_weights
    from facelandmarks.training.init_head import start_from_nearest

    options = {"hidden_units": [16, 16]}  # the second fits at any input size, so --init keeps it
    old, before, config = _init_run(tmp_path, options, 32)
    images = np.random.default_rng(3).uniform(0, 255, (12, 32, 32, 3)).astype(np.uint8)
    landmarks = old.predict(model_inputs({"images": images}, 16).astype(np.float32), verbose=0)[:, PICKED]
    model = build_model("mlp", (32, 32, 3), 5, weights="none", **options)
    init_weights(model, config.init)
    line, fresh_points = start_from_nearest(model, config, before, Scheme.from_dict(FACE5),
                                            (images, landmarks, np.ones((12, 5), bool)))
    assert fresh_points == 0 and line.startswith("--init-head nearest: 5 of 5 points start from the head of ibug68's")
    assert "right_eye <- ibug68 36 (0.0 %)" in line

def test_init_head_is_a_flag_and_a_config_key_with_two_choices(tmp_path):
    import json

    from facelandmarks.cli.train import resolve_config
    from facelandmarks.training.config import ConfigError

    config, _ = resolve_config(["mlp", "--data", "d.npz", "--run-dir", "r", "--init", "x", "--init-head", "nearest"])
    assert config.init_head == "nearest"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"model": "mlp", "data": "d", "run_dir": "r", "init_head": "nearby"}))
    with pytest.raises(ConfigError, match="init_head must be one of"):
        resolve_config(["--config", str(path)])


def test_train_py_init_head_nearest_says_where_each_point_starts(tmp_path, capsys):
    """The setting reaches fit: a run of a five-point markup from a 68-point run prints the pairs; 'fresh' does not."""
    from facelandmarks.data import npz
    from facelandmarks.training.config import TrainConfig
    from facelandmarks.training.fit import fit
    from tests.unit.test_train_errors import faces

    arrays = faces(40)
    ibug = npz.save_npz(tmp_path / "ibug.npz", arrays)
    five = npz.save_npz(tmp_path / "five.npz", npz.select_points(arrays, Scheme.from_dict(FACE5), PICKED))
    common = dict(model="mlp", epochs=1, batch=8, val_fraction=0.25, schedule="constant", augment="none",
                  model_options={"hidden_units": [16]}, preview_every=0)
    fit(TrainConfig(data=str(ibug), run_dir=str(tmp_path / "ibug"), **common), verbose=0)
    for init_head in ("fresh", "nearest"):
        capsys.readouterr()
        fit(TrainConfig(data=str(five), run_dir=str(tmp_path / init_head), init=str(tmp_path / "ibug"),
                        init_head=init_head, **common), verbose=0)
        said = [line for line in capsys.readouterr().out.splitlines() if line.startswith("--init-head nearest")]
        assert len(said) == (init_head == "nearest")
    assert said[0].startswith("--init-head nearest: ") and "points start from the head of ibug68's point nearest them " \
                                                         "on 30 training faces" in said[0] and "right_eye " in said[0]


def test_a_head_that_cannot_start_from_nearest_points_says_so_without_naming_a_flag_not_given(tmp_path, capsys):
    """With --init-head nearest the default, --init from a run of another model printed '--init-head nearest: ... is a
    scratch run: the head starts fresh' to users who never named the flag: the line says what happens instead."""
    import shutil

    from facelandmarks.data import npz
    from facelandmarks.training.config import TrainConfig
    from facelandmarks.training.fit import fit
    from tests.unit.test_train_errors import faces

    arrays = faces(40)
    ibug = npz.save_npz(tmp_path / "ibug.npz", arrays)
    five = npz.save_npz(tmp_path / "five.npz", npz.select_points(arrays, Scheme.from_dict(FACE5), PICKED))
    common = dict(epochs=1, batch=8, val_fraction=0.25, schedule="constant", augment="none", preview_every=0)
    fit(TrainConfig(model="scratch", data=str(ibug), run_dir=str(tmp_path / "scratch"),
                    model_options={"filters": [8], "kernel_sizes": [3], "dense_units": [8]}, **common), verbose=0)
    capsys.readouterr()
    # another model: its layers named alike (head_dense1) carry over, the head sized by the points cannot
    fit(TrainConfig(model="autoencoder", data=str(five), run_dir=str(tmp_path / "other"), init=str(tmp_path / "scratch"),
                    model_options={"filters": [8], "dense_units": [8]}, **common), verbose=0)
    printed = capsys.readouterr().out
    assert "--init-head" not in printed, printed
    assert f"the head of autoencoder starts fresh (--init {tmp_path / 'scratch'} is a scratch run, whose head does " \
           "not fit)" in printed
    # a weights file with no config.json beside it: no model to find the nearest points with
    (tmp_path / "bare").mkdir()
    weights = next((tmp_path / "scratch").glob("best*.weights.h5"))
    shutil.copy(weights, tmp_path / "bare" / weights.name)
    fit(TrainConfig(model="scratch", data=str(five), run_dir=str(tmp_path / "bare_run"), init=str(tmp_path / "bare" / weights.name),
                    model_options={"filters": [8], "kernel_sizes": [3], "dense_units": [8]}, **common), verbose=0)
    printed = capsys.readouterr().out
    assert "--init-head" not in printed, printed
    assert f"the head starts fresh: {tmp_path / 'bare' / weights.name} has no config.json to rebuild its model from, " \
           "so no point of this markup can start from its nearest one" in printed


def test_every_process_of_a_job_finds_the_nearest_points_on_process_0s_faces(tmp_path):
    """Each process of a JAX job matched the points on its own faces: they could restart the head unalike."""
    from facelandmarks.data import npz
    from facelandmarks.data.feeding import FaceParts
    from facelandmarks.training.init_head import nearest_faces
    from tests.unit.test_train_errors import faces

    arrays = faces(10)
    own = FaceParts(arrays, None, worker_index=1, workers=2)
    np.testing.assert_array_equal(nearest_faces(FaceParts(arrays, None), arrays)[1], arrays["landmarks"])  # one process
    for workers in (2, 3):
        inputs, landmarks, visible = nearest_faces(own, arrays, workers)
        np.testing.assert_array_equal(landmarks, arrays["landmarks"][::workers])
        np.testing.assert_array_equal(inputs, arrays["images"][::workers])
    shards = []
    for i, rows in enumerate((np.arange(6), np.arange(6, 10))):
        npz.save_npz(npz.shard_path(tmp_path / "s_train", i), npz.subset(arrays, rows))
        shards.append({"file": npz.shard_path(tmp_path / "s_train", i), "faces": len(rows)})
    train = npz.ShardSet(npz.write_manifest(tmp_path / "s_train.shards.json", shards, "ibug68", (16, 16, 3)))
    second = FaceParts(train, None, worker_index=1, workers=2)  # shard 1
    np.testing.assert_array_equal(nearest_faces(second, train, 2)[1], arrays["landmarks"][:6])


def shaped_faces(count: int) -> dict:
    """Random faces whose 68 points lie near one shape (eye corners 0.4 apart), which a tiny model learns in a few
    epochs: the points of FACE5 then lie near their ibug68 ones in its predictions."""
    from tests.unit.test_train_errors import faces

    arrays = faces(count)
    shape = arrays["landmarks"][:1].copy()
    shape[0, [36, 45]] = [[0.3, 0.4], [0.7, 0.4]]  # eye corners apart: the normalising distance
    noise = np.random.default_rng(0).normal(0, 0.002, arrays["landmarks"].shape)
    arrays["landmarks"] = (shape + noise).astype(np.float32)
    return arrays


@pytest.mark.backend
def test_init_head_nearest_matches_the_annotations_with_teachers_too(tmp_path, capsys):
    """With --teachers, --init-head nearest matched the init model's points against the teacher-blended targets, not
    the annotations: a teacher of 1 epoch (its points far off) left points starting fresh that start from their nearest
    without it. The same --init run now picks the same points, at the same distances, with and without teachers."""
    from facelandmarks.data import npz
    from facelandmarks.training.config import TrainConfig
    from facelandmarks.training.fit import fit

    arrays = shaped_faces(32)
    ibug = npz.save_npz(tmp_path / "ibug.npz", arrays)
    five = npz.save_npz(tmp_path / "five.npz", npz.select_points(arrays, Scheme.from_dict(FACE5), PICKED))
    common = dict(model="mlp", batch=4, val_fraction=0.0, schedule="constant", augment="none", preview_every=0,
                  model_options={"hidden_units": [16]}, workers=1)
    fit(TrainConfig(data=str(ibug), run_dir=str(tmp_path / "ibug"), epochs=8, lr=0.01, **common), verbose=0)
    fit(TrainConfig(data=str(five), run_dir=str(tmp_path / "teacher"), epochs=1, **common), verbose=0)
    said = {}
    for teachers in ([], [str(tmp_path / "teacher")]):
        capsys.readouterr()
        fit(TrainConfig(data=str(five), run_dir=str(tmp_path / f"run{len(teachers)}"), epochs=1, init=str(tmp_path / "ibug"),
                        init_head="nearest", teachers=teachers, **common), verbose=0)
        out = capsys.readouterr().out
        assert ("distillation: " in out) == bool(teachers)
        (said[len(teachers)],) = [line for line in out.splitlines() if line.startswith("--init-head nearest: ")]
    assert said[0].startswith("--init-head nearest: 5 of 5 points start from the head of ibug68's point nearest them "
                              "on 32 training faces"), said[0]
    assert said[1] == said[0]
