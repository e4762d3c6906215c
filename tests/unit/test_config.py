"""train.py's settings: flags derived from TrainConfig, --config files, --resume, the trainer registry.

Pure configuration: no face data, no training.  ``resolve_config`` is what ``main`` runs before it
trains, so these tests see exactly the TrainConfig a command line would train.
"""

import dataclasses
import json
import re
from pathlib import Path

import pytest

from facelandmarks.cli.train import build_parser, main, resolve_config
from facelandmarks.pipelines.config import PipelineOptions
from facelandmarks.training.config import ConfigError, TrainConfig, flag_name
from facelandmarks.training.trainers import get_trainer

ROOT = Path(__file__).resolve().parents[2]

# the flags the README's commands use: they must keep working
README_FLAGS = ("--data --val --val-fraction --run-dir --resume --size --epochs --batch --optimizer --lr --schedule "
                "--patience --min-delta --loss --loss-options --weights --init --train-blocks --model-options --augment "
                "--seed --mixed-precision --pretrain-epochs --preview-every --workers --distribute --jit-compile "
                "--stage1 --boxes --refiner --box-model --patch-size --margin --regions --copies --config --verbose").split()

DERIVED = ("scheme", "num_points", "input_shape", "input_kind")


def option_strings(parser) -> set:
    return {s for action in parser._actions for s in action.option_strings}


def write(path: Path, values: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(values))
    return path


def test_the_parser_has_a_flag_for_every_setting_and_none_for_the_data_derived_ones():
    parser = build_parser()
    flags = option_strings(parser)
    for f in dataclasses.fields(TrainConfig):
        if f.name == "model":
            assert any(action.dest == "model" and not action.option_strings for action in parser._actions)
        elif f.name in DERIVED or f.name == "pipeline":
            assert flag_name(f.name) not in flags
        else:
            assert flag_name(f.name) in flags, f.name
    for f in dataclasses.fields(PipelineOptions):
        assert flag_name(f.name) in flags, f.name
    assert set(README_FLAGS) <= flags
    assert "--no-mixed-precision" in flags  # a file's true can be switched off from the command line
    assert vars(parser.parse_args([])) == {"config": None, "resume": False, "verbose": False}  # no setting unless typed


def test_untyped_settings_are_the_dataclass_defaults():
    config, resume = resolve_config(["scratch", "--data", "train.npz", "--run-dir", "runs/r"])
    assert not resume
    assert config == TrainConfig(model="scratch", data="train.npz", run_dir="runs/r")
    assert config.workers == 2 and "(default: 2)" in build_parser().format_help()
    cascade, _ = resolve_config(["cascade", "--stage1", "runs/s1", "--run-dir", "runs/c"])
    assert cascade.data is None  # a pipeline may take its data from the stage-1 run
    assert cascade.pipeline == dataclasses.asdict(PipelineOptions(stage1="runs/s1"))


def test_flags_are_typed_like_their_fields():
    config, _ = resolve_config(["scratch", "--data", "d", "--run-dir", "r", "--size", "64", "--lr", "5e-4",
                                "--train-blocks", "-1", "--mixed-precision", "--model-options", '{"dropout": 0.0}'])
    assert (config.size, config.lr, config.train_blocks, config.mixed_precision) == (64, 5e-4, -1, True)
    assert config.model_options == {"dropout": 0.0}
    regions, _ = resolve_config(["regions", "--stage1", "s", "--run-dir", "r", "--regions", "left_eye, mouth,",
                                 "--margin", "0.3"])
    assert regions.pipeline["regions"] == ["left_eye", "mouth"] and regions.pipeline["margin"] == 0.3


def test_typed_flags_override_the_file_and_the_file_overrides_the_defaults(tmp_path):
    path = write(tmp_path / "recipe.json", {"_comment": "a note", "model": "scratch", "data": "d.npz", "run_dir": "runs/a",
                                             "epochs": 10, "lr": 0.01, "mixed_precision": True, "model_options": {"dropout": 0.1}})
    config, _ = resolve_config(["--config", str(path), "--epochs", "3", "--no-mixed-precision"])
    assert (config.epochs, config.lr, config.mixed_precision, config.model_options) == (3, 0.01, False, {"dropout": 0.1})
    assert config.run_dir == "runs/a" and config.batch == 32
    other, _ = resolve_config(["resnet_scratch", "--config", str(path), "--run-dir", "runs/b"])
    assert other.model == "resnet_scratch" and other.run_dir == "runs/b" and other.lr == 0.01


def test_pipeline_settings_come_from_a_pipeline_object_in_the_file(tmp_path):
    path = write(tmp_path / "cascade.json", {"model": "cascade", "run_dir": "runs/c",
                                              "pipeline": {"stage1": "runs/s1", "regions": ["nose"], "copies": 2}})
    config, _ = resolve_config(["--config", str(path), "--copies", "1"])
    assert config.pipeline == dataclasses.asdict(PipelineOptions(stage1="runs/s1", regions=["nose"], copies=1))


@pytest.mark.parametrize("values, named", [
    ({"model": "scratch", "epocs": 3}, "'epocs'"),
    ({"model": "cascade", "pipeline": {"stage": "runs/s1"}}, "'pipeline.stage'"),
])
def test_an_unknown_key_names_the_file_and_the_key(tmp_path, values, named):
    path = write(tmp_path / "typo.json", values)
    with pytest.raises(ConfigError, match="unknown key") as error:
        resolve_config(["--config", str(path)])
    message = str(error.value)
    assert str(path) in message and named in message and "known keys:" in message and "\n" not in message


@pytest.mark.parametrize("values, named", [
    ({"epochs": "10"}, "epochs must be int"),
    ({"mixed_precision": "yes"}, "mixed_precision must be bool"),
    ({"model_options": "{}"}, "model_options must be a JSON object"),
    ({"distribute": "everywhere"}, "distribute must be one of"),
    ({"pipeline": {"stage1": "s"}}, '"pipeline" settings are for cascade, regions, boxes'),
])
def test_a_wrong_value_in_a_file_names_the_file_and_the_key(tmp_path, values, named):
    path = write(tmp_path / "bad.json", {"model": "scratch", "data": "d", "run_dir": "r", **values})
    with pytest.raises(ConfigError, match=named) as error:
        resolve_config(["--config", str(path)])
    assert str(error.value).startswith(str(path))


def test_a_file_that_is_not_a_settings_object_is_named(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('{"model": "scratch",}')
    with pytest.raises(ConfigError, match="broken.json: not valid JSON"):
        resolve_config(["--config", str(broken)])
    with pytest.raises(ConfigError, match="missing.json: cannot read"):
        resolve_config(["--config", str(tmp_path / "missing.json")])
    listed = write(tmp_path / "list.json", ["scratch"])
    with pytest.raises(ConfigError, match="list.json: expected an object"):
        resolve_config(["--config", str(listed)])


def test_a_yaml_file_without_pyyaml_says_it_is_needed(tmp_path, monkeypatch):
    path = tmp_path / "recipe.yaml"
    path.write_text("model: scratch\n")
    monkeypatch.setitem(__import__("sys").modules, "yaml", None)  # as if PyYAML were not installed
    with pytest.raises(ConfigError, match="recipe.yaml: a YAML config file needs PyYAML"):
        resolve_config(["--config", str(path)])


def test_a_saved_config_is_a_config_file_that_repeats_the_run(tmp_path):
    original = TrainConfig(
        model="mobilenetv2", data="dataset/ibug128_train.npz", run_dir=str(tmp_path / "X"), val=None, val_fraction=0.2,
        size=96, epochs=12, batch=16, optimizer="adamw", lr=5e-4, schedule="cosine", loss="cgd", loss_options={"alpha": 0.01},
        weights="imagenet", train_blocks=3, model_options={"dropout": 0.0}, augment="light", seed=7, mixed_precision=True,
        patience=3, min_delta=0.0, preview_every=0, pretrain_epochs=2, workers=1, distribute="data-parallel",
        jit_compile="off", init="runs/earlier", scheme="ibug68", num_points=68, input_shape=[96, 96, 3], input_kind="image",
    )
    Path(original.run_dir).mkdir()
    original.save(Path(original.run_dir) / "config.json")
    again, resume = resolve_config(["--config", str(tmp_path / "X" / "config.json"), "--run-dir", str(tmp_path / "Y")])
    assert not resume and again.run_dir == str(tmp_path / "Y")
    for f in dataclasses.fields(TrainConfig):
        if f.name != "run_dir":
            assert getattr(again, f.name) == getattr(original, f.name), f.name
    same, _ = resolve_config(["--config", str(tmp_path / "X" / "config.json")])  # run_dir left to the file
    assert same == original


def test_the_config_of_a_run_of_your_own_markup_and_the_shipped_models_are_config_files(tmp_path):
    """Both carry records beside the settings (the scheme's definition, the run shipped): once refused as unknown keys."""
    from facelandmarks import landmarks

    definition = {"name": "config-own3", "points": ["r", "l", "n"], "pairs": [["r", "l"]], "normalize": ["r", "l"]}
    original = TrainConfig(model="scratch", data="own_train.npz", run_dir=str(tmp_path / "X"), scheme="config-own3",
                           num_points=3, input_shape=[64, 64, 3], input_kind="image")
    Path(original.run_dir).mkdir()
    original.save(Path(original.run_dir) / "config.json", scheme_definition=definition)
    again, _ = resolve_config(["--config", str(tmp_path / "X" / "config.json"), "--run-dir", str(tmp_path / "Y")])
    assert again.scheme == "config-own3" and landmarks.get_scheme("config-own3").num_points == 3
    shipped = Path(__file__).resolve().parents[2] / "weights" / "mobilenetv2-pip-128" / "config.json"
    assert "shipped_from" in json.loads(shipped.read_text())
    from_shipped, _ = resolve_config(["--config", str(shipped), "--data", "d.npz", "--run-dir", str(tmp_path / "Z")])
    assert from_shipped.model == "mobilenetv2_heatmap" and from_shipped.scheme == "ibug68"
    landmarks._REGISTERED.pop("config-own3")


def test_a_saved_pipeline_config_repeats_its_pipeline_settings(tmp_path):
    original, _ = resolve_config(["regions", "--stage1", "runs/s1", "--boxes", "runs/b", "--run-dir", str(tmp_path / "X"),
                                  "--regions", "nose,mouth", "--patch-size", "24", "--epochs", "2"])
    (tmp_path / "X").mkdir()
    original.save(tmp_path / "X" / "config.json")
    again, _ = resolve_config(["--config", str(tmp_path / "X" / "config.json"), "--run-dir", str(tmp_path / "Y")])
    assert dataclasses.replace(again, run_dir=original.run_dir) == original


@pytest.fixture
def saved_run(tmp_path) -> Path:
    """A run folder moved after training: its config.json still names the old place."""
    run = tmp_path / "moved"
    run.mkdir()
    TrainConfig(model="scratch", data="d.npz", run_dir="somewhere/else", lr=2e-3, epochs=5, scheme="ibug68",
                num_points=68).save(run / "config.json")
    return run


def test_resume_continues_the_saved_run_in_the_directory_given(saved_run):
    config, resume = resolve_config(["--resume", "--run-dir", str(saved_run)])
    assert resume and config.run_dir == str(saved_run)
    assert config == dataclasses.replace(TrainConfig.load(saved_run / "config.json"), run_dir=str(saved_run))
    longer, _ = resolve_config(["--resume", "--run-dir", str(saved_run), "--epochs", "9", "scratch", "--lr", "0.002"])
    assert longer.epochs == 9 and longer.lr == 2e-3  # a repeated setting is fine
    timed, _ = resolve_config(["--resume", "--run-dir", str(saved_run), "--time-limit", "1h30m"])
    assert timed.time_limit == "1h30m" and timed.epochs == 5  # each sitting may have its own time limit


def test_resume_refuses_any_other_change_naming_the_flags(saved_run):
    with pytest.raises(ConfigError) as error:
        resolve_config(["--resume", "--run-dir", str(saved_run), "--epochs", "9", "--lr", "0.1", "--batch", "8"])
    message = str(error.value)
    assert message.endswith("may change, not --lr, --batch") and "only --epochs, --time-limit, --workers" in message
    assert "\n" not in message
    with pytest.raises(ConfigError, match="may change, not the model name"):
        resolve_config(["resnet_scratch", "--resume", "--run-dir", str(saved_run)])
    with pytest.raises(ConfigError, match="nothing to resume"):
        resolve_config(["--resume", "--run-dir", str(saved_run.parent)])
    with pytest.raises(ConfigError, match="--resume needs --run-dir"):
        resolve_config(["--resume"])


def test_a_bad_saved_or_config_file_value_names_the_file_and_a_flag_may_replace_it(saved_run, tmp_path):
    path = saved_run / "config.json"
    values = json.loads(path.read_text())
    path.write_text(json.dumps({**values, "lr": "fast"}))
    with pytest.raises(ConfigError, match=f"^{re.escape(str(path))}: lr must be float, got 'fast'$"):
        resolve_config(["--resume", "--run-dir", str(saved_run)])
    path.write_text(json.dumps({**values, "batch": -3, "old_setting": 1}))  # a key of an older version is dropped
    with pytest.raises(ConfigError, match=f"^{re.escape(str(path))}: --epochs and --batch must be >= 1"):
        resolve_config(["--resume", "--run-dir", str(saved_run)])
    path.write_text(json.dumps([1, 2]))
    with pytest.raises(ConfigError, match="not a run config"):
        resolve_config(["--resume", "--run-dir", str(saved_run)])
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"model": "scratch", "data": "d.npz", "batch": 0}))
    with pytest.raises(ConfigError, match=f"^{re.escape(str(config))}: --epochs and --batch must be >= 1"):
        resolve_config(["--config", str(config), "--run-dir", "r"])
    assert resolve_config(["--config", str(config), "--run-dir", "r", "--batch", "4"])[0].batch == 4


def test_resume_takes_settings_that_leave_the_restored_state_alone(saved_run, tmp_path, capsys):
    """A run copied to another machine: fewer workers, no previews, its data and weights file elsewhere (they once
    had to be given exactly as on the first machine, so a moved run could not resume)."""
    weights = tmp_path / "imagenet.weights.h5"
    config, _ = resolve_config(["--resume", "--run-dir", str(saved_run), "--workers", "1", "--preview-every", "0",
                                "--data", str(tmp_path / "d.npz")])
    assert (config.workers, config.preview_every, config.data) == (1, 0, str(tmp_path / "d.npz"))
    assert f"resuming with --data {tmp_path / 'd.npz'} (the run was started with d.npz): the same file, moved" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="may change, not --weights"):  # none -> a file: another start, other blocks
        resolve_config(["--resume", "--run-dir", str(saved_run), "--weights", str(weights)])


def test_main_reports_a_refused_resume_in_one_line_without_training(saved_run, capsys):
    assert main(["--resume", "--run-dir", str(saved_run), "--seed", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("train.py: ") and "--seed" in err and "\n" not in err


def test_bad_json_for_a_dict_flag_names_the_flag(capsys):
    for text in ('{"dropout": 0.3', "[0.3]"):
        with pytest.raises(SystemExit) as exit_info:
            resolve_config(["scratch", "--data", "d", "--run-dir", "r", "--model-options", text])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert "argument --model-options:" in err and "JSON object" in err and "\n" not in err


def test_missing_settings_and_misplaced_pipeline_flags_are_named():
    with pytest.raises(ConfigError, match="a model name is required"):
        resolve_config(["--data", "d", "--run-dir", "r"])
    with pytest.raises(ConfigError, match="needs --data"):
        resolve_config(["scratch", "--run-dir", "r"])
    with pytest.raises(ConfigError, match="needs --data"):
        resolve_config(["boxes", "--run-dir", "r"])
    with pytest.raises(ConfigError, match="needs --run-dir"):
        resolve_config(["scratch", "--data", "d"])
    with pytest.raises(ConfigError, match="--stage1, --copies: only for cascade, regions, boxes, not for model 'scratch'"):
        resolve_config(["scratch", "--data", "d", "--run-dir", "r", "--stage1", "s", "--copies", "2"])


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.json")), ids=lambda p: p.name)
def test_every_recipe_in_configs_is_a_valid_train_config(path):
    config, resume = resolve_config(["--config", str(path)])
    config.validate()
    assert not resume and config.run_dir.startswith("runs/")
    assert isinstance(json.loads(path.read_text()).get("_comment"), str), "say what the recipe is for"


def test_the_recipes_are_the_documented_runs():
    best, _ = resolve_config(["--config", str(ROOT / "configs" / "mobilenetv2-128.json")])
    assert best == TrainConfig(
        model="mobilenetv2", data="dataset/ibug128_train.npz", val_fraction=0.1, run_dir="runs/mobilenetv2-128",
        weights="../shared/weights/mobilenet_v2_imagenet_notop.weights.h5", model_options={"dropout": 0.0},
        augment="light", schedule="plateau", lr=5e-4, loss="wing", patience=3, epochs=60,
    )
    demo, _ = resolve_config(["--config", str(ROOT / "configs" / "demo.json")])
    assert demo == dataclasses.replace(best, run_dir="runs/demo-128", epochs=4, schedule="cosine", patience=4)
    scratch, _ = resolve_config(["--config", str(ROOT / "configs" / "scratch-128.json")])
    assert scratch == dataclasses.replace(best, model="scratch", run_dir="runs/scratch-128", weights="none", lr=1e-3,
                                          mixed_precision=True)


def test_trainers_are_found_by_name_and_the_training_layer_imports_no_pipeline():
    from facelandmarks.training.trainers import _fit

    assert get_trainer("cascade").options is PipelineOptions and not get_trainer("cascade").needs_data
    assert get_trainer("scratch").fn is _fit
    with pytest.raises(ValueError, match="unknown model 'vgg16'; known: .*cascade"):
        get_trainer("vgg16")
    for module in (ROOT / "facelandmarks" / "training").glob("*.py"):  # a lower layer never imports a higher one
        assert not re.search(r"^\s*(from|import) facelandmarks\.pipelines", module.read_text(), re.M), module.name


def test_init_alone_or_shipped_starts_from_the_shipped_model_and_records_its_folder(tmp_path, monkeypatch):
    from facelandmarks.inference.shipped import WEIGHTS_ENV, default_model_dir

    base = ["mobilenetv2_heatmap", "--data", "train.npz", "--run-dir", str(tmp_path / "r")]
    shipped = str(default_model_dir())
    assert resolve_config([*base, "--init"])[0].init == shipped
    assert resolve_config(["mobilenetv2_heatmap", "--init", "--data", "train.npz", "--run-dir", "r"])[0].init == shipped
    assert resolve_config([*base, "--init", "shipped"])[0].init == shipped
    assert resolve_config([*base, "--init", "runs/a"])[0].init == "runs/a"
    assert resolve_config(base)[0].init is None
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"model": "mobilenetv2_heatmap", "data": "train.npz", "init": "shipped"}))
    assert resolve_config(["--config", str(recipe), "--run-dir", "r"])[0].init == shipped
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path / "nothing"))
    with pytest.raises(ConfigError, match=rf"^--init shipped: {re.escape(str(tmp_path / 'nothing'))}: "):
        resolve_config([*base, "--init"])


def test_init_without_a_model_name_trains_the_inits_model_with_its_options(tmp_path, capsys):
    """README: `train.py --init` alone fine-tunes from the shipped model; it once stopped at 'a model name is required'."""
    from facelandmarks.inference.shipped import default_model_dir

    shipped = json.loads((default_model_dir() / "config.json").read_text())
    config, _ = resolve_config(["--init", "--data", "train.npz", "--run-dir", str(tmp_path / "r")])
    assert config.model == shipped["model"] and config.model_options == shipped["model_options"]
    assert f"model {shipped['model']} from --init {default_model_dir()} (its config.json)" in capsys.readouterr().out
    mine, _ = resolve_config(["--init", "--data", "train.npz", "--run-dir", "r", "--model-options", '{"head": "pip"}'])
    assert mine.model_options == {"head": "pip"}  # options given are kept
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "best.weights.h5").write_bytes(b"")
    with pytest.raises(ConfigError, match=rf"^--init {re.escape(str(bare))}: no config.json naming its model"):
        resolve_config(["--init", str(bare), "--data", "train.npz", "--run-dir", "r"])
    (bare / "config.json").write_text("[1]")  # JSON, no object of settings: an AttributeError traceback
    with pytest.raises(ConfigError, match=rf"^--init {re.escape(str(bare))}: no config.json naming its model"):
        resolve_config(["--init", str(bare), "--data", "train.npz", "--run-dir", "r"])
    (bare / "config.json").write_text(json.dumps({"model": "regions"}))
    with pytest.raises(ConfigError, match=rf"^--init {re.escape(str(bare))}: a regions pipeline; --init starts one model"):
        resolve_config(["--init", str(bare), "--data", "train.npz", "--run-dir", "r"])
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(tmp_path / 'typo'))}: no such run directory or weights "
                                          r"file \(--init\)$"):  # it said to name the model
        resolve_config(["--init", str(tmp_path / "typo"), "--data", "train.npz", "--run-dir", "r"])


def test_a_yaml_rate_written_as_in_the_json_recipes_is_a_number(tmp_path):
    """PyYAML reads 5e-4 (no dot) as a string: lr must be float, got '5e-4' refused the JSON recipes' notation."""
    path = tmp_path / "recipe.yaml"
    path.write_text("model: scratch\ndata: d.npz\nrun_dir: r\nlr: 5e-4\nmin_delta: 1E-5\n")
    config, _ = resolve_config(["--config", str(path)])
    assert config.lr == 5e-4 and config.min_delta == 1e-5
    path.write_text("model: scratch\ndata: d.npz\nrun_dir: r\nlr: fast\n")
    with pytest.raises(ConfigError, match="lr must be float, got 'fast'"):
        resolve_config(["--config", str(path)])


def test_workers_below_one_are_refused_and_an_empty_default_is_not_shown(capsys):
    # --workers 0 and -1 were taken and meant 1; --teachers' help ended "(default: )"
    for workers in (0, -1):
        with pytest.raises(ValueError, match=f"--patience and --workers must be >= 1 .*got 15, {workers} and"):
            TrainConfig(model="scratch", data="d.npz", run_dir="r", workers=workers).validate()
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "(default: )" not in out and "distillation: trained runs" in out


def test_a_time_limit_in_seconds_may_be_a_number_in_a_file(tmp_path):
    # the flag takes --time-limit 600; a file's "time_limit": 600 was refused as "must be str"
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"model": "scratch", "data": "d.npz", "time_limit": 600}))
    config, _ = resolve_config(["--config", str(path), "--run-dir", "r"])
    assert config.time_limit == "600"
    config.validate()
    path.write_text(json.dumps({"model": "scratch", "data": "d.npz", "epochs": "600"}))
    with pytest.raises(ConfigError, match="epochs must be int, got '600'"):  # other settings keep their types
        resolve_config(["--config", str(path), "--run-dir", "r"])
