"""Coarse-to-fine pipelines without face data: box geometry on synthetic points, stage-1 jitter, the regions.

Pipelines trained and evaluated on real faces: ``tests/data/test_refine.py``.
"""

import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from facelandmarks.data import npz
from facelandmarks.landmarks import REFINED_REGIONS, Scheme, get_scheme
from facelandmarks.pipelines.boxes import boxes_from_centres, boxes_to_centres_sides, region_boxes
from facelandmarks.pipelines.train import _stage1_config, check_regions, jittered_boxes, train_boxes
from facelandmarks.training.config import TrainConfig


def test_region_without_visible_points_gets_no_box():
    scheme = get_scheme("ibug68")
    points = np.random.default_rng(0).uniform(0.2, 0.8, (2, 68, 2)).astype(np.float32)
    visible = np.ones((2, 68), bool)
    visible[1, list(scheme.regions["mouth"])] = False
    boxes = region_boxes(points, visible, scheme, ["nose", "mouth"], margin=0.1)
    assert np.isfinite(boxes[0]).all() and np.isfinite(boxes[1, 0]).all() and np.isnan(boxes[1, 1]).all()


def test_jittered_boxes_follow_the_measured_stage1_errors():
    rng = np.random.default_rng(0)
    true = boxes_from_centres(np.full((4000, 1, 2), 0.5, np.float32), np.full((4000, 1), 0.2, np.float32))
    jitter = {"offset": np.array([[[0.1, -0.2]], [[0.1, -0.2]]], np.float32), "log_scale": np.log([[1.5], [1.5]]).astype(np.float32)}
    moved = jittered_boxes(true, jitter, rng)
    centres, sides = boxes_to_centres_sides(moved)
    np.testing.assert_allclose(centres[:, 0], [[0.52, 0.46]] * 4000, atol=1e-6)  # offset in units of the true side
    np.testing.assert_allclose(sides, 0.3, atol=1e-6)
    fixed = jittered_boxes(true, jitter, rng, fixed_sides=[0.25])
    np.testing.assert_allclose(boxes_to_centres_sides(fixed)[1], 0.25, atol=1e-6)


def test_muct76_has_every_refined_region():
    scheme = get_scheme("muct76")
    for region in REFINED_REGIONS:
        idx = list(scheme.regions[region])
        assert idx and max(idx) < 76
    # left and right regions are mirror images of each other under the scheme's permutation
    perm = np.asarray(scheme.mirror)
    assert sorted(perm[list(scheme.regions["left_eye"])]) == sorted(scheme.regions["right_eye"])



def test_regions_a_scheme_lacks_are_one_line_errors(tmp_path):
    """A scheme without regions took any --regions (then a KeyError deep in the box code), and the box
    network, which predicts the iBUG regions, took data of any markup (the same KeyError)."""
    plain = Scheme.from_dict({"name": "unitplain", "points": 3, "pairs": [[0, 1]], "normalize": [0, 1]})
    with pytest.raises(ValueError, match=r"^--regions: scheme unitplain has no region eyes \(it has none: a scheme file "
                                         r"names them under regions\)$"):
        check_regions(["eyes"], plain)
    check_regions(["nose", "mouth"], get_scheme("kaggle15"))
    points = np.random.default_rng(0).uniform(0.2, 0.8, (4, 5, 2)).astype(np.float32)
    arrays = {"images": np.zeros((4, 32, 32, 3), np.uint8), "landmarks": points, "visible": np.ones((4, 5), bool),
              "subject": np.array(["a", "b", "c", "d"]), "box": np.zeros((4, 4), np.float32), "scheme": np.array("unitfive"),
              "scheme_json": np.array(json.dumps({"name": "unitfive", "points": 5, "pairs": [[0, 1], [3, 4]],
                                                  "normalize": [0, 1], "regions": {"eyes": [0, 1], "mouth": [3, 4]}}))}
    npz.save_npz(tmp_path / "five.npz", arrays)
    with pytest.raises(ValueError, match=rf"^{tmp_path / 'five.npz'}: the box network predicts the boxes of right_brow, "
                                         "left_brow, right_eye, left_eye, nose, mouth; scheme unitfive has no region "
                                         "right_brow, left_brow, right_eye, left_eye, nose$"):
        train_boxes(TrainConfig(model="resnet_scratch", data=str(tmp_path / "five.npz"), run_dir=str(tmp_path / "run")))


def test_a_stage1_folder_whose_settings_name_no_data_is_named():
    """train.py cascade --stage1 weights/mobilenetv2-pip-128 (a shipped model, which loads like a run) stopped in a
    TypeError traceback from TrainConfig.load."""
    shipped = Path(__file__).resolve().parents[2] / "weights" / "mobilenetv2-pip-128"
    with pytest.raises(ValueError, match=rf"^{re.escape(str(shipped / 'config.json'))}: no data or run_dir: not the "
                                         "config.json of a training run$"):
        _stage1_config(shipped)


def test_a_refiner_is_built_with_the_runs_weights_and_train_blocks_and_checked_before_stage1_runs(tmp_path, monkeypatch):
    """train.py cascade|regions gave every refiner weights 'none' and train_blocks None whatever --weights and
    --train-blocks said (a file that did not exist included), while the run's config.json recorded them; a refiner
    or box model that cannot take the run's weights or options was refused by build_model only after stage 1 had
    predicted and the patches were cut. Both now reach the refiner, and a bad one is refused first, in one line."""
    from facelandmarks.cli import train as train_cli
    from facelandmarks.pipelines import train as pipeline_train
    from facelandmarks.pipelines.train import train_kind
    from tests.unit.test_train_errors import faces

    weights = str(tmp_path / "backbone.weights.h5")

    def pipeline(kind, run, **pipeline_options):
        return TrainConfig(model=kind, data=str(tmp_path / "faces.npz"), run_dir=str(tmp_path / run), epochs=1,
                           weights=weights, pipeline={"stage1": str(tmp_path / "stage1"), **pipeline_options})

    with pytest.raises(ValueError, match=r"^--refiner scratch: model 'scratch' has no pretrained backbone: weights must "
                                         r"be 'none', got '.*backbone.weights.h5'$"):
        train_kind("cascade", pipeline("cascade", "cascade"))
    with pytest.raises(ValueError, match=r"^--refiner mlp: model 'mlp' has no option\(s\) hiden_units; its options: "
                                         r"hidden_units, dropout$"):
        train_kind("regions", replace(pipeline("regions", "regions", refiner="mlp"), weights="none",
                                      model_options={"hiden_units": [4]}))
    with pytest.raises(ValueError, match=r"^--box-model resnet_scratch: model 'resnet_scratch' has no pretrained backbone"):
        train_kind("boxes", pipeline("boxes", "boxes"))
    with pytest.raises(ValueError, match=r"^--refiner inception_bottleneck: the model takes features, and the pipelines "
                                         r"train on images$"):
        train_kind("cascade", replace(pipeline("cascade", "cascade", refiner="inception_bottleneck"), weights="none"))
    assert not any((tmp_path / run).exists() for run in ("cascade", "regions", "boxes"))  # refused before any work

    npz.save_npz(tmp_path / "faces.npz", faces(16, size=16))
    assert train_cli.main(["mlp", "--data", str(tmp_path / "faces.npz"), "--run-dir", str(tmp_path / "stage1"),
                           "--model-options", '{"hidden_units": [4]}', "--epochs", "1", "--batch", "4", "--augment",
                           "none", "--preview-every", "0", "--workers", "1"]) == 0
    built = []
    monkeypatch.setattr(pipeline_train, "fit", lambda config, resume=False: built.append(config) or {})
    train_kind("cascade", replace(pipeline("cascade", "cascade", refiner="mobilenetv2", regions=["nose"], copies=1),
                                  train_blocks=3))
    assert [(c.model, c.weights, c.train_blocks) for c in built] == [("mobilenetv2", weights, 3)]


def test_a_pipelines_val_measures_stage1_when_stage1_had_no_validation_faces(tmp_path, monkeypatch):
    """A stage 1 trained with --val-fraction 0: train.py cascade said 'give --val or --val-fraction > 0', and gave
    the same line again with either, since the split was always stage 1's. The pipeline's --val now replaces stage
    1's validation faces, and the line says what works."""
    from facelandmarks.cli import train as train_cli
    from facelandmarks.pipelines import train as pipeline_train
    from facelandmarks.pipelines.train import train_kind
    from tests.unit.test_train_errors import faces

    npz.save_npz(tmp_path / "faces.npz", faces(16, size=16))
    npz.save_npz(tmp_path / "unseen.npz", faces(8, size=16))
    assert train_cli.main(["mlp", "--data", str(tmp_path / "faces.npz"), "--run-dir", str(tmp_path / "stage1"),
                           "--val-fraction", "0", "--model-options", '{"hidden_units": [4]}', "--epochs", "1",
                           "--batch", "4", "--augment", "none", "--preview-every", "0", "--workers", "1"]) == 0
    built = []
    monkeypatch.setattr(pipeline_train, "fit", lambda config, resume=False: built.append(config) or {})

    def cascade(run, **settings):
        return TrainConfig(model="cascade", data=None, run_dir=str(tmp_path / run), epochs=1, **settings,
                           pipeline={"stage1": str(tmp_path / "stage1"), "regions": ["nose"], "copies": 1})

    with pytest.raises(ValueError, match=rf"^a pipeline measures stage 1's errors on faces it did not train on, and "
                                         rf"{re.escape(str(tmp_path / 'stage1'))} was trained without validation faces "
                                         r"\(--val-fraction 0, no --val\): give the pipeline --val NPZ"):
        train_kind("cascade", cascade("fraction"))
    # a split of stage 1's training faces: no (it was taken in silence, then this line said to give --val)
    with pytest.raises(ValueError, match=r"^--val-fraction 0.25, --split-seed 3: train.py cascade measures stage 1's "
                                         r"errors, and validates its refiners, on stage 1's own validation faces \(the "
                                         r"split it trained with\) or on --val NPZ, faces stage 1 did not see$"):
        train_kind("cascade", cascade("split", val_fraction=0.25, split_seed=3))
    train_kind("cascade", cascade("with-val", val=str(tmp_path / "unseen.npz")))
    with np.load(tmp_path / "with-val" / "jitter.npz") as jitter:
        assert len(jitter["offset"]) == 8  # stage 1's errors on the 8 faces of --val
    assert len(npz.load_npz(built[0].val)["images"]) == 8 and len(npz.load_npz(built[0].data)["images"]) == 16


def test_a_pipeline_whose_stage1_is_not_where_its_relative_path_points_says_so(tmp_path, monkeypatch):
    """pipeline.json keeps --stage1 and --boxes as typed, relative to the folder train.py ran in; loaded from another
    folder, the pipeline ended with 'runs/stage1: no such run directory', naming neither the pipeline nor why."""
    from facelandmarks.inference.predictor import Predictor
    from facelandmarks.pipelines.config import PipelineConfig

    run = tmp_path / "cascade"
    run.mkdir()
    PipelineConfig(kind="cascade", run_dir=str(run), stage1=str(tmp_path / "runs" / "stage1"), regions=["nose"]).save()
    assert json.loads((run / "pipeline.json").read_text())["stage1"] == "../runs/stage1"
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=rf"^{re.escape(str(run))}: its stage 1, \.\./runs/stage1 in pipeline.json, "
                                                r"is not there, relative to the pipeline's folder or to the folder "
                                                r"train.py ran in \(move it back, or export the pipeline where it loads: "
                                                r"an export holds every stage\)$"):
        Predictor.load(run, runtime="keras")


def _tiny_cascade(root: Path, run_dir: str = "runs/cascade") -> None:
    """A stage 1 (an MLP on 16 random faces) and a one-region cascade of it, trained with ``root`` as the working
    directory and the paths typed relative to it, as a user types them."""
    from facelandmarks.cli import train as train_cli
    from tests.unit.test_train_errors import faces

    common = ["--epochs", "1", "--batch", "4", "--augment", "none", "--preview-every", "0", "--workers", "1",
              "--model-options", '{"hidden_units": [4]}']
    npz.save_npz(root / "faces.npz", faces(16, size=16))
    assert train_cli.main(["mlp", "--data", "faces.npz", "--run-dir", "runs/stage1", *common]) == 0
    assert train_cli.main(["cascade", "--stage1", "runs/stage1", "--run-dir", run_dir, "--refiner", "mlp",
                           "--regions", "nose", "--copies", "1", "--patch-size", "8", *common]) == 0


def test_a_pipeline_loads_from_any_folder_and_after_its_runs_move(tmp_path, monkeypatch):
    """pipeline.json named stage 1 as typed, relative to the folder train.py ran in: from any other working directory,
    or once runs/ had moved, the pipeline did not load ('its stage 1, runs/stage1 in pipeline.json, is not there').
    It now names it relative to the pipeline's folder; an older pipeline.json loads from any folder too."""
    import shutil

    from facelandmarks.inference.predictor import Predictor

    monkeypatch.chdir(tmp_path)
    _tiny_cascade(tmp_path)
    saved = json.loads((tmp_path / "runs" / "cascade" / "pipeline.json").read_text())
    assert saved["stage1"] == "../stage1"
    crops = npz.load_npz(tmp_path / "faces.npz")["images"]
    expected = Predictor.load("runs/cascade").predict_crops(crops)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    np.testing.assert_allclose(Predictor.load(tmp_path / "runs" / "cascade").predict_crops(crops), expected, atol=1e-6)
    shutil.move(tmp_path / "runs", elsewhere / "moved")
    loaded = Predictor.load("moved/cascade")
    assert loaded.stage1_dir.resolve() == (elsewhere / "moved" / "stage1").resolve() and loaded.name == "cascade"
    np.testing.assert_allclose(loaded.predict_crops(crops), expected, atol=1e-6)
    # a pipeline.json of an older version: stage 1 relative to the folder train.py ran in, found from any folder
    shutil.move(elsewhere / "moved", tmp_path / "runs")
    (tmp_path / "runs" / "cascade" / "pipeline.json").write_text(json.dumps({**saved, "stage1": "runs/stage1"}))
    np.testing.assert_allclose(Predictor.load(tmp_path / "runs" / "cascade").predict_crops(crops), expected, atol=1e-6)
    # a refiner stopped before it finished: the line says how to finish it (it said only 'has not finished training')
    from facelandmarks.runtime import script_command

    (tmp_path / "runs" / "cascade" / "nose" / "run" / "model.keras").unlink()
    with pytest.raises(FileNotFoundError, match=rf"^{re.escape(str(tmp_path / 'runs' / 'cascade' / 'nose' / 'run'))}: the "
                                                rf"nose refiner has not finished training \(continue the pipeline: "
                                                rf"{re.escape(script_command('train'))} --resume --run-dir "
                                                rf"{re.escape(str(tmp_path / 'runs' / 'cascade'))}\)$"):
        Predictor.load(tmp_path / "runs" / "cascade")


def test_settings_of_one_models_training_are_refused_by_a_pipeline_before_it_writes(tmp_path, capsys):
    """--init and --teachers reached every refiner: --init started it from stage 1's weights (a whole face's, at
    another scale), --teachers failed there ('the teacher marks scheme ibug68, the training data ibug68/mouth') after
    stage 1 had run and the patches were cut; --size was ignored. Each is now refused in one line, nothing written."""
    from facelandmarks.cli import train as train_cli

    argv = ["cascade", "--stage1", str(tmp_path / "stage1"), "--run-dir", str(tmp_path / "cascade"), "--epochs", "1"]
    for extra, line in ((["--init", str(tmp_path / "stage1")], rf"--init {re.escape(str(tmp_path / 'stage1'))}: train.py "
                         r"cascade starts a new refiner per region \(from --weights\); --init starts one model from "
                         r"another's weights: fine-tune stage 1 with it, then refine that run"),
                        (["--teachers", str(tmp_path / "stage1")], r"--teachers: train.py cascade trains its refiners on "
                         r"region patches, which the teachers \(models of whole faces\) do not mark"),
                        (["--size", "64"], r"--size 64: train.py cascade cuts the refiners' patches \(--patch-size\) "
                         r"from the faces at the size stage 1 was trained on")):
        assert train_cli.main([*argv, *extra]) == 2
        assert re.fullmatch(rf"train.py: {line}.*\n", capsys.readouterr().err)
        assert not (tmp_path / "cascade").exists()
    # a setting of another trainer was ignored: train.py boxes --stage1 ... --copies 2, train.py cascade --boxes B
    for kind, extra, line in ((["boxes", "--data", str(tmp_path / "faces.npz")], ["--copies", "2"],
                               r"--stage1 \(cascade, regions\), --copies \(cascade, regions\): not a setting of "
                               r"train.py boxes"),
                              (["cascade"], ["--boxes", str(tmp_path / "boxes")],
                               r"--boxes \(regions\): not a setting of train.py cascade")):
        assert train_cli.main([*kind, *argv[1:], *extra]) == 2
        assert re.fullmatch(rf"train.py: {line}\n", capsys.readouterr().err)
        assert not (tmp_path / "cascade").exists()
    # and --help says so in the pipelines' group (its description was the first line of a docstring)
    assert ("train each refiner (the box network); cascade and regions refuse --init, --teachers, --size,\n"
            "  --val-fraction and --split-seed.\n" in train_cli.build_parser().format_help())


def test_a_pipeline_oversamples_its_refiners_patches_by_their_faces_source(tmp_path, monkeypatch):
    """--oversample reached the refiners, whose patches had no 'source' column: the first refiner stopped with
    "--oversample needs the npz's 'source' column" after stage 1 had run and the patches were cut. The patches now
    keep their faces' source, so the refiners weight them as a single model weights its faces; a source the data
    lacks is refused before stage 1 runs."""
    from facelandmarks.cli import train as train_cli
    from tests.unit.test_train_errors import faces

    monkeypatch.chdir(tmp_path)
    common = ["--epochs", "1", "--batch", "4", "--augment", "none", "--preview-every", "0", "--workers", "1",
              "--model-options", '{"hidden_units": [4]}']
    arrays = faces(16, size=16)
    npz.save_npz(tmp_path / "faces.npz", {**arrays, "source": np.array(["a", "b"] * 8)})
    assert train_cli.main(["mlp", "--data", "faces.npz", "--run-dir", "stage1", *common]) == 0
    cascade = ["cascade", "--stage1", "stage1", "--refiner", "mlp", "--regions", "nose", "--copies", "1",
               "--patch-size", "8", *common]
    assert train_cli.main([*cascade, "--run-dir", "wrong", "--oversample", '{"c": 2}']) == 2
    assert not (tmp_path / "wrong" / "jitter.npz").exists()
    assert train_cli.main([*cascade, "--run-dir", "cascade", "--oversample", '{"a": 3}']) == 0
    patches = npz.load_npz(tmp_path / "cascade" / "nose" / "patches_train.npz")
    assert sorted(set(patches["source"].tolist())) == ["a", "b"] and len(patches["source"]) == len(patches["images"])
    refiner = json.loads((tmp_path / "cascade" / "nose" / "run" / "config.json").read_text())
    assert refiner["oversample"] == {"a": 3}


def test_a_shard_set_is_refused_by_the_pipelines_in_one_line(tmp_path, capsys):
    """--data X.shards.json: cascade and regions stopped in a TypeError traceback ('ShardSet' is not iterable) after
    writing config.json, boxes said 'not an npz file' after making its run folder; so did a pipeline of a stage 1
    trained on shards, without --data."""
    from facelandmarks.cli import train as train_cli
    from tests.unit.test_train_errors import faces

    shard = npz.save_npz(npz.shard_path(tmp_path / "set_train", 0), faces(12, size=16))
    manifest = npz.write_manifest(tmp_path / "set_train.shards.json", [{"file": shard, "faces": 12}], "ibug68", (16, 16, 3))
    npz.save_npz(tmp_path / "val.npz", faces(8, size=16))
    common = ["--val", str(tmp_path / "val.npz"), "--epochs", "1", "--batch", "4", "--augment", "none",
              "--preview-every", "0", "--workers", "1"]
    said = rf"train.py: {re.escape(str(manifest))}: a shard set; train.py (\w+) works on the training faces in memory: " \
           r"give it one npz \(datagen.py prepare without --shard-size, or a smaller set\)\n"
    for kind in (["boxes"], ["cascade", "--stage1", str(tmp_path / "stage1")]):
        assert train_cli.main([*kind, "--data", str(manifest), "--run-dir", str(tmp_path / "run"), *common]) == 2
        assert re.fullmatch(said, capsys.readouterr().err)[1] == kind[0]
        assert not (tmp_path / "run").exists()
    assert train_cli.main(["mlp", "--data", str(manifest), "--run-dir", str(tmp_path / "stage1"), *common,
                           "--model-options", '{"hidden_units": [4]}']) == 0
    capsys.readouterr()
    assert train_cli.main(["regions", "--stage1", str(tmp_path / "stage1"), "--run-dir", str(tmp_path / "run"),
                           "--epochs", "1"]) == 2
    assert re.fullmatch(said, capsys.readouterr().err)[1] == "regions"


def test_a_pipeline_resumes_from_another_folder(tmp_path, monkeypatch, capsys):
    """--resume from another folder: config.json keeps --stage1 as typed, so it said 'runs/stage1: no such run
    directory', and then 'faces.npz: no such dataset file', naming neither whose path it was nor why. Stage 1 is now
    found where pipeline.json leads, and stage 1's data is named as such; a --stage1 that is not there is refused
    before the run folder is made (it was found only after config.json was written)."""
    from facelandmarks.cli import train as train_cli

    monkeypatch.chdir(tmp_path)
    assert train_cli.main(["cascade", "--stage1", "runs/none", "--run-dir", "runs/nothing"]) == 2
    assert capsys.readouterr().err == "train.py: --stage1 runs/none: no such run directory\n"
    assert not (tmp_path / "runs").exists()
    _tiny_cascade(tmp_path)
    capsys.readouterr()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    run = tmp_path / "runs" / "cascade"
    assert train_cli.main(["--resume", "--run-dir", str(run), "--epochs", "2"]) == 2
    assert capsys.readouterr().err == (f"train.py: faces.npz: no such dataset file (stage 1's --data, in "
                                       f"{(tmp_path / 'runs' / 'stage1' / 'config.json').resolve()}, relative to the "
                                       "folder it trained in: give the pipeline --data)\n")
    assert train_cli.main(["--resume", "--run-dir", str(run), "--epochs", "2", "--data", str(tmp_path / "faces.npz")]) == 0
    assert len((run / "nose" / "run" / "history.csv").read_text().splitlines()) == 3  # a header, two epochs
    # the pipeline's config.json records the --data it found (it kept none, so the next --resume asked again)
    assert json.loads((run / "config.json").read_text())["data"] == str(tmp_path / "faces.npz")
    assert train_cli.main(["--resume", "--run-dir", str(run), "--epochs", "3"]) == 0
    assert len((run / "nose" / "run" / "history.csv").read_text().splitlines()) == 4


def test_a_pipeline_leaves_a_run_folder_of_another_run_or_setting_alone(tmp_path, monkeypatch, capsys):
    """train.py cascade --run-dir RUN over a finished run (stage 1's, say) overwrote its config.json and trained in it;
    train.py boxes resumed it as the box network (a wall of Keras loading errors, boxes_train.npz left in it); a rerun
    of a pipeline with other settings (--patch-size) rewrote config.json and pipeline.json beside refiners trained
    with the old ones, which it skipped. Each is now refused in one line, nothing written; the same command reruns."""
    from facelandmarks.cli import train as train_cli

    monkeypatch.chdir(tmp_path)
    _tiny_cascade(tmp_path)
    capsys.readouterr()
    stage1, pipeline = (tmp_path / "runs" / name for name in ("stage1", "cascade"))
    before = {path: path.read_bytes() for path in (stage1 / "config.json", pipeline / "config.json", pipeline / "pipeline.json")}
    held = sorted(path.name for path in stage1.iterdir())
    common = ["--epochs", "1", "--batch", "4", "--augment", "none", "--preview-every", "0", "--workers", "1",
              "--model-options", '{"hidden_units": [4]}']
    cascade = ["cascade", "--stage1", "runs/stage1", "--refiner", "mlp", "--regions", "nose", "--copies", "1", *common]
    for argv, line in (([*cascade, "--patch-size", "8", "--run-dir", "runs/stage1"],
                        "runs/stage1 already holds a run (mlp), not a train.py cascade run: choose another --run-dir"),
                       (["boxes", "--data", "faces.npz", "--run-dir", "runs/stage1", *common[:-2]],
                        "runs/stage1 already holds a run (mlp), not a train.py boxes run: choose another --run-dir"),
                       ([*cascade, "--patch-size", "6", "--run-dir", "runs/cascade"],
                        "runs/cascade already holds a cascade pipeline trained with other --patch-size: rerun it as it "
                        "was started, continue it with --resume, or choose another --run-dir")):
        assert train_cli.main(argv) == 2
        assert capsys.readouterr().err == f"train.py: {line}\n"
    assert {path: path.read_bytes() for path in before} == before and sorted(p.name for p in stage1.iterdir()) == held
    # a pipeline as stage 1 (a TypeError traceback after config.json), a run of one model as the box network
    for argv, line in (([*cascade, "--stage1", "runs/cascade", "--run-dir", "runs/again"],
                        "--stage1 runs/cascade: a pipeline; stage 1 is one model's run (this one's is in its pipeline.json)"),
                       ([*cascade, "--stage1", "runs/stage1", "--run-dir", "runs/again", "--boxes", "runs/stage1"],
                        "--boxes runs/stage1: not a box network (a run of train.py boxes, whose config.json names a "
                        "scheme ending in /boxes)")):
        assert train_cli.main([("regions" if "--boxes" in argv else "cascade"), *argv[1:]]) == 2
        assert capsys.readouterr().err == f"train.py: {line}\n"
        assert not (tmp_path / "runs" / "again").exists()
    assert train_cli.main([*cascade, "--patch-size", "8", "--run-dir", "runs/cascade"]) == 0  # the command it ran
    assert "nose: already trained, skipping" in capsys.readouterr().out


def test_a_torn_or_newer_pipeline_json_is_named_or_loads(tmp_path):
    """A pipeline.json cut short said only 'Expecting value: line 1 column 1 (char 0)'; one with a key of another
    version, or without its kind, stopped in a TypeError traceback. The first two name the file in one line; a key this
    version does not know is dropped, as a run's config.json drops it."""
    from facelandmarks.pipelines.config import PipelineConfig

    path = tmp_path / "pipeline.json"
    PipelineConfig(kind="cascade", run_dir=str(tmp_path), stage1=str(tmp_path / "stage1"), regions=["nose"]).save()
    whole = json.loads(path.read_text())
    path.write_text(json.dumps({**whole, "from_a_later_version": 1}))
    assert PipelineConfig.load(tmp_path).regions == ["nose"]
    path.write_text(path.read_text()[:40])
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}: not a readable pipeline.json \(.+\)$"):
        PipelineConfig.load(tmp_path)
    path.write_text(json.dumps({k: v for k, v in whole.items() if k != "kind"}))
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}: not a readable pipeline.json \(.*'kind'\)$"):
        PipelineConfig.load(tmp_path)
