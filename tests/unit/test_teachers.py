"""Distillation (``train.py --teachers``): teachers' flip-test points, averaged and blended into the training
targets; validation keeps the annotations (tiny synthetic runs, no face data)."""

import json

import numpy as np
import pytest

from facelandmarks.cli import train as train_cli
from facelandmarks.data import npz
from facelandmarks.data.feeding import split_by_subject
from facelandmarks.inference.predictor import Predictor
from facelandmarks.training.config import ConfigError, TrainConfig
from facelandmarks.training.runs import read_run_config
from facelandmarks.training.teachers import blend_targets, held_out_by, teacher_points, with_teacher_targets
from tests.unit.test_train_errors import TINY, faces, run_cli


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    """Two tiny trained runs of different seeds and input sizes, and the faces they trained on."""
    root = tmp_path_factory.mktemp("teachers")
    data = npz.save_npz(root / "faces.npz", faces(12))
    runs = []
    for seed, size in ((0, 16), (1, 12)):
        run = root / f"teacher{seed}"
        code = train_cli.main([*TINY, "--batch", "4", "--data", str(data), "--run-dir", str(run), "--seed", str(seed),
                               "--size", str(size)])
        assert code == 0
        runs.append(run)
    return data, runs


@pytest.mark.backend
def test_teacher_points_are_the_teachers_flip_test_points_averaged(teachers):
    data, runs = teachers
    images = npz.load_npz(data)["images"]
    each = [Predictor.load(run, runtime="keras", flip_test=True).predict_crops(images) for run in runs]
    assert np.abs(each[0] - each[1]).max() > 1e-3  # two different teachers: the average is not either one
    np.testing.assert_allclose(teacher_points([str(r) for r in runs], images, "ibug68"), (each[0] + each[1]) / 2,
                               atol=1e-5)



@pytest.mark.backend
def test_recrop_teachers_give_the_predictors_recropped_points(teachers, capsys):
    """--teacher-recrop: each teacher's flip-test points averaged with its second look, as ``--recrop`` makes them
    (the two teachers take 16- and 12-px crops of the same faces)."""
    data, runs = teachers
    images = npz.load_npz(data)["images"]
    each = [Predictor.load(run, runtime="keras", flip_test=True, recrop=True).predict_crops(images) for run in runs]
    plain = teacher_points([str(r) for r in runs], images, "ibug68")
    recropped = teacher_points([str(r) for r in runs], images, "ibug68", recrop=True)
    assert np.abs(recropped - plain).max() > 1e-3  # the second look moved them
    np.testing.assert_allclose(recropped, (each[0] + each[1]) / 2, atol=1e-5)
    assert "predicted with the flip test and recrop in" in capsys.readouterr().out
    config = TrainConfig(model="mlp", data=str(data), run_dir="r", teachers=[str(runs[0])], teacher_weight=1.0,
                         teacher_recrop=True)
    train = npz.load_npz(data)
    held_out = held_out_by(read_run_config(runs[0]), str(runs[0]), str(data), train["subject"])
    taught = ~held_out
    np.testing.assert_allclose(with_teacher_targets(config, train)["landmarks"][taught], each[0][taught], atol=1e-5)

def test_blend_moves_visible_points_only():
    train = faces(3)
    train["visible"][0, :5] = False
    target = np.full_like(train["landmarks"], 0.5)
    out = blend_targets(train, target, 0.25)
    expected = 0.75 * train["landmarks"] + 0.25 * 0.5
    np.testing.assert_allclose(out["landmarks"][1:], expected[1:], atol=1e-6)
    np.testing.assert_array_equal(out["landmarks"][0, :5], train["landmarks"][0, :5])  # hidden: annotation kept
    np.testing.assert_allclose(out["landmarks"][0, 5:], expected[0, 5:], atol=1e-6)
    assert out["images"] is train["images"] and train["landmarks"][1, 0, 0] != out["landmarks"][1, 0, 0]
    np.testing.assert_array_equal(blend_targets(train, target, 0.0)["landmarks"], train["landmarks"])
    np.testing.assert_allclose(blend_targets(train, target, 1.0)["landmarks"][1:], 0.5)


def test_with_teacher_targets_blends_the_training_faces(teachers, capsys):
    data, runs = teachers
    train_idx, _ = split_by_subject(npz.load_npz(data)["subject"], 0.1, 0)  # the student's split: teacher 0's
    train = npz.subset(npz.load_npz(data), train_idx)
    config = TrainConfig(model="mlp", data=str(data), run_dir="r", teachers=[str(runs[0])], teacher_weight=0.3)
    out = with_teacher_targets(config, train)
    points = teacher_points(config.teachers, train["images"], "ibug68")
    np.testing.assert_allclose(out["landmarks"], 0.7 * train["landmarks"] + 0.3 * points, atol=1e-5)
    assert "0.7 x annotation + 0.3 x the mean of 1 teacher(s), which is NME" in capsys.readouterr().out
    assert with_teacher_targets(TrainConfig(model="mlp", data=str(data), run_dir="r"), train) is train


def test_a_teacher_left_out_of_a_face_leaves_it_to_the_others(teachers):
    data, runs = teachers
    images = npz.load_npz(data)["images"]
    sources = [str(r) for r in runs]
    each = [teacher_points([source], images, "ibug68") for source in sources]
    taught = [np.ones(12, bool), np.ones(12, bool)]
    taught[0][:2], taught[1][1:3] = False, False  # face 0: the second teacher only; 1: neither; 2: the first only
    points = teacher_points(sources, images, "ibug68", taught=taught)
    np.testing.assert_allclose(points[0], each[1][0], atol=1e-6)
    assert np.isnan(points[1]).all()
    np.testing.assert_allclose(points[2], each[0][2], atol=1e-6)
    np.testing.assert_allclose(points[3:], (each[0][3:] + each[1][3:]) / 2, atol=1e-5)
    train = npz.load_npz(data)  # a face no teacher trained on keeps its annotation
    blended = blend_targets(train, points, 0.5)["landmarks"]
    np.testing.assert_array_equal(blended[1], train["landmarks"][1])
    np.testing.assert_allclose(blended[0], 0.5 * train["landmarks"][0] + 0.5 * each[1][0], atol=1e-6)


def test_the_teachers_validation_people_keep_their_annotations(teachers, capsys):
    """A student on every face (--val-fraction 0) is taught only where a teacher trained: each teacher's
    validation subject, drawn again from its seed and fraction over the same file, is left to the others."""
    data, runs = teachers
    train = npz.load_npz(data)
    sources = [str(r) for r in runs]
    held = [split_by_subject(train["subject"], 0.1, seed)[1] for seed in (0, 1)]  # the teachers' seeds
    np.testing.assert_array_equal(held[0], [2, 6, 10])  # 12 faces of 4 subjects: each teacher held one out,
    np.testing.assert_array_equal(held[1], [0, 4, 8])   # not the same one
    each = [teacher_points([source], train["images"], "ibug68") for source in sources]

    both = with_teacher_targets(TrainConfig(model="mlp", data=str(data), run_dir="r", teachers=sources,
                                            teacher_weight=0.3, val_fraction=0.0), train)["landmarks"]
    text = capsys.readouterr().out
    for teacher, (mine, other) in enumerate(((0, 1), (1, 0))):
        assert f"teacher {sources[teacher]} held out 3 of these faces (its validation people)" in text
        np.testing.assert_allclose(both[held[mine]], 0.7 * train["landmarks"][held[mine]]
                                   + 0.3 * each[other][held[mine]], atol=1e-5)  # the other teacher alone
    rest = np.setdiff1d(np.arange(12), np.concatenate(held))
    np.testing.assert_allclose(both[rest], 0.7 * train["landmarks"][rest] + 0.3 * (each[0][rest] + each[1][rest]) / 2,
                               atol=1e-5)
    assert "no teacher trained on" not in text

    alone = with_teacher_targets(TrainConfig(model="mlp", data=str(data), run_dir="r", teachers=sources[:1],
                                             teacher_weight=0.3, val_fraction=0.0), train)["landmarks"]
    np.testing.assert_array_equal(alone[held[0]], train["landmarks"][held[0]])  # untaught: the annotation
    others = np.setdiff1d(np.arange(12), held[0])
    np.testing.assert_allclose(alone[others], 0.7 * train["landmarks"][others] + 0.3 * each[0][others], atol=1e-5)
    assert "; 3 faces no teacher trained on keep their annotation" in capsys.readouterr().out

    # a student with the teacher's own split never sees those faces: nothing is held out of its training faces
    train_idx, _ = split_by_subject(train["subject"], 0.1, 0)
    assert not held_out_by(read_run_config(runs[0]), sources[0], str(data), train["subject"][train_idx]).any()
    with_teacher_targets(TrainConfig(model="mlp", data=str(data), run_dir="r", teachers=sources[:1]),
                         npz.subset(train, train_idx))
    assert "held out" not in capsys.readouterr().out


@pytest.mark.backend
def test_a_distilled_run_trains_and_records_its_teachers(teachers, tmp_path, capsys):
    data, runs = teachers
    run = tmp_path / "student"
    code = train_cli.main([*TINY, "--batch", "4", "--data", str(data), "--run-dir", str(run),
                           "--teachers", f"{runs[0]},{runs[1]}", "--teacher-weight", "0.5"])
    assert code == 0
    out = capsys.readouterr().out
    assert f"teacher {runs[1]}: 9 training faces predicted" in out  # 12 faces of 4 subjects, one held out
    saved = json.loads((run / "config.json").read_text())
    assert saved["teachers"] == [str(r) for r in runs] and saved["teacher_weight"] == 0.5
    assert len((run / "history.csv").read_text().splitlines()) == 2
    # shipped, it keeps what rebuilds it, not the teachers' paths (they do not travel, like --data and --init)
    from facelandmarks.inference.ship import ship

    shipped = json.loads((ship(run, tmp_path / "shipped") / "config.json").read_text())
    assert "teachers" not in shipped and shipped["teacher_weight"] == 0.5 and shipped["model"] == "mlp"


@pytest.mark.parametrize("case", ["missing", "other scheme", "bad weight", "bad val_fraction"])
def test_bad_teachers_are_named_in_one_line(case, teachers, tmp_path, capsys):
    data, runs = teachers
    teacher, words, extra = str(tmp_path / "nowhere"), "no such run or shipped-model folder", []
    if case == "bad val_fraction":  # read unchecked: "could not convert string to float: 'lots'", no file named
        teacher = tmp_path / "typo"
        teacher.mkdir()
        config = json.loads((runs[0] / "config.json").read_text())
        (teacher / "config.json").write_text(json.dumps({**config, "val_fraction": "lots"}))
        words = f"{teacher / 'config.json'}: val_fraction must be float, got 'lots'"
    if case == "other scheme":
        teacher = tmp_path / "muct"
        teacher.mkdir()
        config = json.loads((runs[0] / "config.json").read_text())
        (teacher / "config.json").write_text(json.dumps({**config, "scheme": "muct76", "num_points": 76}))
        words = "the teacher marks scheme muct76, the training data ibug68"
    if case == "bad weight":
        teacher, words, extra = str(runs[0]), "--teacher-weight must be in [0, 1], got 1.5", ["--teacher-weight", "1.5"]
    code, lines = run_cli(train_cli.main, [*TINY, "--batch", "4", "--data", data, "--run-dir", tmp_path / "r",
                                           "--teachers", teacher, *extra], capsys)
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("train.py: ") and words in lines[0], lines[0]
    if case not in ("bad weight", "bad val_fraction"):
        assert lines[0].startswith(f"train.py: {teacher}: "), lines[0]


def test_teacher_recrop_typed_without_teachers_is_refused_in_one_line(tmp_path, capsys):
    """--teacher-recrop without --teachers trained on the annotations alone, saying nothing: refused before the data
    loads or the run folder is made. A config file may carry it without teachers (a shipped model's: --ship drops the
    teachers), and so may a --config of one."""
    code, lines = run_cli(train_cli.main, [*TINY, "--data", tmp_path / "none.npz", "--run-dir", tmp_path / "r",
                                           "--teacher-recrop"], capsys)
    assert (code, lines) == (2, ["train.py: --teacher-recrop is the teachers' second look: give --teachers A,B,... "
                                 "(or leave it off)"])
    assert not (tmp_path / "r").exists()
    path = tmp_path / "shipped-like.json"
    path.write_text(json.dumps({"model": "mlp", "data": "d.npz", "run_dir": "r", "teacher_recrop": True}))
    config, _ = train_cli.resolve_config(["--config", str(path)])
    assert config.teacher_recrop and not config.teachers


def test_a_shipped_teachers_split_settings_are_checked_and_named(tmp_path):
    """A shipped model's config.json (no data, no run_dir) is no run's for TrainConfig.load: its split keys are
    checked alone, a bad one named with the file (a list was a TypeError traceback, a word a ValueError)."""
    teacher = tmp_path / "shipped"
    teacher.mkdir()
    shipped = {"model": "mlp", "scheme": "ibug68", "input_shape": [16, 16, 3], "num_points": 68, "seed": 3}
    subjects = np.array(["a", "b"])
    assert not held_out_by({**shipped, "val_fraction": 0.0}, str(teacher), "faces.npz", subjects).any()
    for value, line in (([0.1], "val_fraction must be float, got [0.1]"), (1.5, "val_fraction must be in [0, 1), got 1.5")):
        with pytest.raises(ConfigError) as err:
            held_out_by({**shipped, "val_fraction": value}, str(teacher), "faces.npz", subjects)
        assert str(err.value) == f"{teacher / 'config.json'}: {line}"
