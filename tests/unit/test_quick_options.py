"""``--max-faces`` and ``--steps-per-epoch`` (a recipe tried quickly on a few faces and steps), and ``train.py --config
FILE --help`` with the plugins FILE names (synthetic faces, no face data)."""

import csv
import json

import numpy as np
import pytest

from facelandmarks.cli import train as train_cli
from facelandmarks.data import npz
from facelandmarks.data.feeding import FaceParts, LandmarkBatches
from facelandmarks.training.config import TrainConfig
from tests.unit.test_plugins import registries  # noqa: F401 (a fixture: the registries as they were after each test)
from tests.unit.test_train_errors import TINY, assert_one_line, faces, run_cli


def _paired(originals: int, subjects: int = 5) -> dict:
    """Faces as ``datagen.py prepare --mirror`` writes them: each original followed by its mirrored copy (the same
    subject, name and box), and one face of another box in the same photo as the first, without a copy."""
    data = faces(2 * originals + 1, subjects=subjects)
    rows = [i // 2 for i in range(2 * originals)] + [0]
    data["subject"] = np.array([f"s{i % subjects}" for i in rows])
    data["name"] = np.array([f"img{i}.jpg" for i in rows])
    data["box"] = np.array([[i, 0, i + 16, 16] for i in rows[:-1]] + [[50, 50, 66, 66]], np.float32)
    data["mirrored"] = np.array([i % 2 == 1 for i in range(2 * originals)] + [False])
    return data


def test_max_faces_draws_whole_mirror_pairs_by_the_seed():
    from facelandmarks.data.feeding import keep_faces

    data = _paired(20)
    kept, line = keep_faces(data, 9, seed=3, where="d.npz")
    names = [(n, tuple(b)) for n, b in zip(kept["name"], kept["box"])]
    assert len(kept["landmarks"]) == 9 and all(names.count(key) == 2 for key in names if key[0] != "img0.jpg" or
                                                 key[1][0] != 50)  # every original with its copy
    assert kept["mirrored"].sum() == 4  # four pairs and the face without a copy: 9
    assert line == "--max-faces 9: training on 9 of the 41 training faces (a face and its mirrored copies kept " \
                   "together), drawn with --seed 3; the validation faces stay as they were"
    again, _ = keep_faces(data, 9, seed=3, where="d.npz")
    other, _ = keep_faces(data, 9, seed=4, where="d.npz")
    assert np.array_equal(again["images"], kept["images"]) and not np.array_equal(other["images"], kept["images"])
    for seed in range(4):  # at most 8: whole pairs, and the face without a copy where the draw met it first
        eight = keep_faces(data, 8, seed=seed, where="d.npz")[0]
        assert len(eight["landmarks"]) - eight["mirrored"].sum() == eight["mirrored"].sum() + (len(eight["landmarks"]) == 7)
    plain, line = keep_faces(faces(12), 5, seed=0, where="d.npz")  # no names: each face alone
    assert len(plain["landmarks"]) == 5 and "mirrored" not in line
    assert keep_faces(faces(12), 12, seed=0, where="d.npz")[0]["landmarks"].shape[0] == 12  # all of them
    with pytest.raises(ValueError, match=r"^d.npz: --max-faces 13 is more than its 12 training faces$"):
        keep_faces(faces(12), 13, seed=0, where="d.npz")
    only_pairs = {k: v[:-1] if k in npz.PER_FACE else v for k, v in data.items()}
    with pytest.raises(ValueError, match=r"^d.npz: --max-faces 1 keeps no face: its training faces come with their "
                                         r"mirrored copies, 2 at least together \(--max-faces 2\)$"):
        keep_faces(only_pairs, 1, seed=0, where="d.npz")


@pytest.mark.parametrize("name", ["max_faces", "steps_per_epoch"])
def test_bad_values_of_the_quick_options_are_one_line(name, tmp_path, capsys):
    flag = "--" + name.replace("_", "-")
    for bad in (0, -2):
        with pytest.raises(ValueError, match=f"^{flag} must be a whole number >= 1, got {bad}$"):
            TrainConfig(model="mlp", data="d.npz", run_dir="r", **{name: bad}).validate()
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"model": "mlp", name: 0}))
    code, lines = run_cli(train_cli.main, ["--config", recipe, "--data", "d.npz", "--run-dir", tmp_path / "r"], capsys)
    assert_one_line(code, lines, "train.py", recipe, f"{flag} must be a whole number >= 1, got 0")
    recipe.write_text(json.dumps({"model": "mlp", name: 3}))
    config, _ = train_cli.resolve_config(["--config", str(recipe), "--data", "d.npz", "--run-dir", "r"])
    assert getattr(config, name) == 3  # a --config key like every other setting


def test_steps_per_epoch_takes_the_next_batches_of_the_stream_each_epoch():
    """Keras' steps_per_epoch on a repeating dataset: epoch e trains on the batches after epoch e-1's, through the
    passes over the faces, each pass shuffled by the seed as an epoch was; what each batch holds depends on its
    place in that stream alone (a resumed run sees the same)."""
    parts = FaceParts(faces(10), None)
    whole = LandmarkBatches(parts, 3, seed=7)  # a pass: 4 batches, the last of 1 face
    stream = [whole.batch(planned, epoch, i) for epoch in range(3) for i, planned in enumerate(whole.plan_of(epoch))]
    capped = LandmarkBatches(parts, 3, seed=7, steps_per_epoch=3)
    seen = []
    for epoch in range(4):
        capped.set_epoch(epoch)
        assert len(capped) == 3
        seen += [capped[i] for i in range(3)]
    assert len(seen) == 12 == len(stream)
    for (x, y), (x0, y0) in zip(seen, stream):
        assert np.array_equal(x, x0) and np.array_equal(y, y0)
    assert len(LandmarkBatches(parts, 3, seed=7, steps_per_epoch=9)) == 4  # a cap above a pass: the pass


def test_a_quick_run_trains_the_faces_and_steps_it_was_given_and_resumes_with_them(tmp_path, capsys, monkeypatch):
    """A real run of the smallest model: 12 faces, 9 of them training faces after the split, --max-faces 8 in batches
    of 2 (4 batches a pass), --steps-per-epoch 3: epoch 1 takes the first 3 batches of pass 1, epoch 2 its last and
    the first 2 of pass 2, resumed as well as run at once; config.json records both settings."""
    data = npz.save_npz(tmp_path / "faces.npz", faces(12))
    taken = []
    batch = LandmarkBatches.batch
    monkeypatch.setattr(LandmarkBatches, "batch", lambda self, planned, epoch, index, pad=None: (  # Keras also draws
        taken.append((self.epoch, epoch, index, len(planned[1]))), batch(self, planned, epoch, index, pad))[1])
    # two batches to learn their shapes before the first epoch begins: the epoch trained is the one it set
    run = tmp_path / "run"
    tiny = [*TINY, "--batch", "2", "--data", data, "--max-faces", "8", "--steps-per-epoch", "3", "--schedule", "cosine"]
    code, lines = run_cli(train_cli.main, [*tiny, "--run-dir", run], capsys)
    assert code == 0, lines
    saved = json.loads((run / "config.json").read_text())
    assert (saved["max_faces"], saved["steps_per_epoch"]) == (8, 3)
    assert set(taken) == {(0, 0, 0, 2), (0, 0, 1, 2), (0, 0, 2, 2)}
    taken.clear()
    capsys.readouterr()
    assert train_cli.main(["--resume", "--run-dir", str(run), "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert "--max-faces 8: training on 8 of the 9 training faces, drawn with --seed 0" in out
    assert {tuple(place) for epoch, *place in taken if epoch == 1} == {(0, 3, 2), (1, 0, 2), (1, 1, 2)}
    assert "--steps-per-epoch 3: each epoch takes the next 3 of the 4 batches of a pass over the training faces" in out
    assert train_cli.main([*map(str, tiny), "--epochs", "2", "--run-dir", str(tmp_path / "whole")]) == 0
    whole, resumed = ([row.split(",")[1:] for row in (folder / "history.csv").read_text().splitlines()]
                      for folder in (tmp_path / "whole", run))
    columns = whole[0]
    assert len(whole) == len(resumed) == 3 and whole[0] == resumed[0]
    for name in ("loss", "learning_rate", "val_loss"):  # the cosine over the 2 epochs, the same faces and batches
        at = columns.index(name)
        assert [row[at] for row in resumed] == [row[at] for row in whole], name
    code, lines = run_cli(train_cli.main, ["--resume", "--run-dir", run, "--epochs", "3", "--max-faces", "6"], capsys)
    assert_one_line(code, lines, "train.py", run / "config.json", "not --max-faces")


def test_max_faces_is_refused_for_a_pipelines_refiners(tmp_path):
    from facelandmarks.pipelines.train import check_refiner_settings

    config = TrainConfig(model="cascade", data="d.npz", run_dir=str(tmp_path / "r"), max_faces=100)
    with pytest.raises(ValueError, match="^--max-faces 100: train.py cascade trains its refiners on patches"):
        check_refiner_settings("cascade", config)


def test_steps_per_epoch_under_a_tf_distribute_strategy_resumes_where_the_stream_was(tmp_path, monkeypatch):
    """Under ``--distribute mirrored`` the faces come as one stream cut into steps: an epoch takes the next
    ``--steps-per-epoch`` of them, and a resumed run skips the faces the finished epochs' capped steps took."""
    import keras

    from facelandmarks.training import fit as fit_module

    if keras.backend.backend() != "tensorflow":
        pytest.skip("tf.distribute strategies are TensorFlow's")
    data = npz.save_npz(tmp_path / "faces.npz", faces(12))
    streams, pipeline = [], fit_module.tf_input_pipeline
    monkeypatch.setattr(fit_module, "tf_input_pipeline", lambda *a, **k: streams.append(k["skip"]) or pipeline(*a, **k))

    def config(run_dir, epochs):
        return TrainConfig(model="mlp", data=str(data), run_dir=str(tmp_path / run_dir), epochs=epochs, batch=2,
                           steps_per_epoch=3, max_faces=8, augment="none", model_options={"hidden_units": [4]},
                           preview_every=0, workers=1, distribute="mirrored", schedule="constant")

    fit_module.fit(config("whole", 2), verbose=0)
    fit_module.fit(config("resumed", 1), verbose=0)
    fit_module.fit(config("resumed", 2), resume=True, verbose=0)
    assert streams == [0, 0, 3 * 2]  # the resume skips epoch 1's 3 steps of 2 faces (4 steps a pass)
    losses = []
    for run in ("whole", "resumed"):
        with open(tmp_path / run / "history.csv", newline="") as handle:
            losses.append([row["loss"] for row in csv.DictReader(handle)])
    assert losses[0] == losses[1] and len(losses[0]) == 2


FAMILY = '''
import keras
from facelandmarks.models import ModelSpec, register
from facelandmarks.models.heads import landmark_output, pixel_input
from facelandmarks.models import losses


def build_flat(input_shape, num_points):
    pixels = pixel_input(input_shape)
    return keras.Model(pixels, landmark_output(keras.layers.Flatten()(pixels), num_points))


register(ModelSpec("config_flat", build_flat, "a test family", (16, 16, 3)))
losses.register_loss("config_l1", type("L1", (losses.MaskedMeanAbsoluteError,), {}))
'''


def _help(argv, capsys):
    with pytest.raises(SystemExit) as ended:
        train_cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return ended.value.code, " ".join(captured.out.split()), captured.err.strip().splitlines()


@pytest.mark.usefixtures("registries")
def test_help_with_a_config_file_lists_the_plugins_it_names(tmp_path, capsys):
    (tmp_path / "mine.py").write_text(FAMILY)
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"model": "config_flat", "plugins": [str(tmp_path / "mine.py")]}))
    code, out, err = _help(["--config", recipe, "--help"], capsys)
    assert code == 0 and err == []
    assert "one of mse, l1, wing, cgd, config_l1 (" in out and "; yours (--plugins): config_flat" in out


@pytest.mark.usefixtures("registries")
@pytest.mark.parametrize("problem", ["missing", "not json", "bad plugin", "bad key"])
def test_help_with_a_bad_config_file_still_helps_and_says_what_is_wrong(problem, tmp_path, capsys):
    recipe = tmp_path / "recipe.json"
    if problem == "not json":
        recipe.write_text('{"model": ')
    elif problem == "bad plugin":
        recipe.write_text(json.dumps({"plugins": [str(tmp_path / "gone.py")]}))
    elif problem == "bad key":
        recipe.write_text(json.dumps({"plugins": ["x.py"], "epoch": 3}))
    code, out, err = _help(["--config", recipe, "--help"], capsys)
    assert code == 0 and out.startswith("usage: train.py") and "--max-faces" in out
    assert len(err) == 1 and err[0].startswith(f"train.py: {tmp_path / 'gone.py' if problem == 'bad plugin' else recipe}")
    assert err[0].endswith(f"(--help without the plugins of --config {recipe})"), err


@pytest.mark.usefixtures("registries")
def test_help_with_a_config_file_whose_plugin_moved_takes_it_from_the_environment(tmp_path, capsys, monkeypatch):
    """A run with that file takes FACELANDMARKS_PLUGINS for a plugin it names that is not there (read as a run's
    plugins are); its --help refused it ('gone.py: no such plugin file') and listed the families without it."""
    from facelandmarks.models import plugins

    (tmp_path / "mine.py").write_text(FAMILY)
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"model": "config_flat", "plugins": [str(tmp_path / "gone.py")]}))
    monkeypatch.setenv(plugins.ENV, str(tmp_path / "mine.py"))
    code, out, err = _help(["--config", recipe, "--help"], capsys)
    assert code == 0 and err == []
    assert "config_flat" in out


def test_max_faces_draws_among_the_faces_oversample_trains_on():
    """With --oversample, the faces drawn are faces trained on: those of a source it leaves out (0) stay beside them,
    untrained (drawn too, 8 faces were 1 trained on); a source it repeats that the draw missed is one line naming the
    file (the draw of --seed 1 failed at the first batch: 'names source(s) b that the training faces do not have')."""
    from facelandmarks.data.feeding import repeat_counts, with_max_faces

    data = faces(40)
    data["source"] = np.array(["a"] * 30 + ["b"] * 10)
    config = TrainConfig(model="mlp", data="d.npz", run_dir="r", val="v.npz", max_faces=8, oversample={"a": 0})
    kept, line = with_max_faces(config, data)
    assert (repeat_counts(kept, config.oversample) > 0).sum() == 8 and len(kept["landmarks"]) == 38
    assert line.startswith("--max-faces 8: training on 8 of the 10 training faces (those --oversample trains on)")
    with pytest.raises(ValueError, match=r"^d.npz: --max-faces 11 is more than its 10 training faces \(those "):
        with_max_faces(TrainConfig(model="mlp", data="d.npz", run_dir="r", val="v.npz", max_faces=11,
                                   oversample={"a": 0}), data)
    outcomes = set()
    for seed in range(6):
        config = TrainConfig(model="mlp", data="d.npz", run_dir="r", val="v.npz", max_faces=3, oversample={"b": 2},
                             seed=seed)
        try:
            kept, _ = with_max_faces(config, data)
        except ValueError as err:
            assert str(err) == (f"d.npz: --max-faces 3 drew no face of source b, which --oversample names (--seed "
                                f"{seed}): give a larger --max-faces or another --seed"), str(err)
            outcomes.add("refused")
        else:
            assert repeat_counts(kept, config.oversample).sum() > 3  # b's faces twice
            outcomes.add("drawn")
    assert outcomes == {"refused", "drawn"}
