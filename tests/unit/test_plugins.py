"""A plugin (train.py / models.py --plugins, FACELANDMARKS_PLUGINS) that cannot be used is one line and exit status 2,
before any data is read, and leaves the registries as they were; one that can registers its family and loss."""

import json

import pytest

from facelandmarks.cli import models as models_cli
from facelandmarks.cli import train as train_cli
from facelandmarks.models import REGISTRY, losses, plugins

FAMILY = '''
import keras
from facelandmarks.models import ModelSpec, register
from facelandmarks.models.heads import landmark_output, pixel_input


def build_flat(input_shape, num_points, width=4):
    pixels = pixel_input(input_shape)
    x = keras.layers.Flatten(name="flat")(pixels)
    return keras.Model(pixels, landmark_output(keras.layers.Dense(width, name="hidden")(x), num_points))


register(ModelSpec("{name}", build_flat, "a flattened test family", (16, 16, 3)))
'''


@pytest.fixture
def registries(monkeypatch):
    """Whatever a test's plugins register is gone after it: the families, the losses, the plugins imported."""
    monkeypatch.setattr(plugins, "_LOADED", {})
    monkeypatch.delenv(plugins.ENV, raising=False)
    families, table = dict(REGISTRY), dict(losses.LOSSES)
    yield
    for current, saved in ((REGISTRY, families), (losses.LOSSES, table)):
        current.clear()
        current.update(saved)


pytestmark = pytest.mark.usefixtures("registries")  # every test here


def train(argv, capsys, tmp_path) -> tuple[int, list[str]]:
    capsys.readouterr()
    code = train_cli.main([str(a) for a in [*argv, "--data", tmp_path / "nowhere.npz", "--run-dir", tmp_path / "run"]])
    return code, capsys.readouterr().err.strip().splitlines()


def test_a_plugin_registers_its_family_and_its_option_checks_run_before_the_data(tmp_path, capsys):
    (tmp_path / "flat.py").write_text(FAMILY.replace("{name}", "flat_test"))
    code, lines = train(["flat_test", "--plugins", tmp_path / "flat.py", "--model-options", '{"widht": 2}'], capsys,
                        tmp_path)
    assert code == 2 and lines == ["train.py: --model-options: model 'flat_test' has no option(s) widht; its options: "
                                   "width"]
    assert REGISTRY["flat_test"].description == "a flattened test family"
    assert not (tmp_path / "run").exists()


PROBLEMS = {
    "missing file": (None, "{p}: no such plugin file (--plugins)"),
    "a folder": ("folder", "{p}: a folder, not a .py file (--plugins)"),
    "failing import": ("import os\nimport no_such_module_here\n", "{p}: the plugin failed to import (--plugins), "
                       "line {at}: ModuleNotFoundError: No module named 'no_such_module_here'"),
    "syntax error": ("x = 1\ndef f(:\n", "{p}: the plugin failed to import (--plugins), line {at}: SyntaxError: "),
    "a family's name taken": (FAMILY.replace("{name}", "mlp"), "{p}: model 'mlp' is registered already (by "
                              "facelandmarks.models.mlp); give yours another name (--plugins)"),
    "a loss's name taken": ("from facelandmarks.models import losses\nlosses.register_loss('wing', "
                            "losses.LOSSES['l1'])\n", "{p}: loss 'wing' is registered already (by "
                            "facelandmarks.models.losses); give yours another name (--plugins)"),
    "LOSSES overwritten": ("from facelandmarks.models import losses\nlosses.LOSSES['wing'] = losses.LOSSES['l1']\n",
                           "{p}: replaces loss 'wing', registered already; give yours another name (--plugins)"),
}


@pytest.mark.parametrize("case", PROBLEMS)
def test_a_plugin_that_cannot_be_used_is_one_line_and_changes_no_registry(case, tmp_path, capsys):
    content, expected = PROBLEMS[case]
    path = tmp_path / "mine.py"
    if content == "folder":
        path.mkdir()
    elif content is not None:
        path.write_text(FAMILY.replace("{name}", "before_failing") + content)  # a family registered, then the fault
    families, table = dict(REGISTRY), dict(losses.LOSSES)
    code, lines = train(["mlp", "--plugins", path], capsys, tmp_path)
    assert code == 2, lines
    assert len(lines) == 1 and lines[0].startswith("train.py: " + expected.format(p=path, at=FAMILY.count("\n") + 2)), lines
    assert (REGISTRY, losses.LOSSES) == (families, table)  # what it had registered is taken out again
    assert not (tmp_path / "run").exists()


def test_a_module_name_that_is_not_there_and_models_py_say_so(tmp_path, capsys, monkeypatch):
    code, lines = train(["mlp", "--plugins", "no_such_lab.models"], capsys, tmp_path)
    assert code == 2 and lines == ["train.py: no_such_lab.models: no such module to import (--plugins: a .py file, or a "
                                   "module on the Python path)"]
    monkeypatch.setenv(plugins.ENV, str(tmp_path / "gone.py"))
    assert models_cli.main(["--list"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"models.py: {tmp_path / 'gone.py'}: no such plugin file (FACELANDMARKS_PLUGINS)"]


def test_a_plugin_is_imported_once_and_a_module_name_imports_it(tmp_path, monkeypatch):
    (tmp_path / "lab_family.py").write_text(FAMILY.replace("{name}", "lab_flat"))
    monkeypatch.syspath_prepend(str(tmp_path))
    assert plugins.load_plugins(["lab_family"]) == ["lab_flat"]
    assert plugins.load_plugins(["lab_family"]) == []  # once: not 'registered already' by itself
    # the same file named by its path (FACELANDMARKS_PLUGINS=lab_family, a run's recorded lab_family.py) is that plugin
    assert plugins.load_plugins([str(tmp_path / "lab_family.py")]) == []
    (tmp_path / "lab_other.py").write_text(FAMILY.replace("{name}", "other_lab_flat"))
    assert plugins.load_plugins([str(tmp_path / "lab_other.py"), "lab_other"]) == ["other_lab_flat"]  # path, then name
    assert plugins.is_file("lab/family") and plugins.is_file("family.py") and not plugins.is_file("lab.family")


def test_a_run_read_back_imports_its_recorded_plugins_and_those_of_the_environment(tmp_path, monkeypatch):
    """``read_run_config`` (Predictor.load, evaluate.py, export.py, --teachers, --ship): the run's ``plugins``, and
    FACELANDMARKS_PLUGINS' for a run whose config.json does not name the file (trained before, or moved)."""
    from facelandmarks.training.runs import read_run_config

    config = {"model": "env_flat", "scheme": "ibug68", "input_shape": [16, 16, 3], "num_points": 68}
    for name, recorded in (("run_flat", True), ("env_flat", False)):
        (tmp_path / f"{name}.py").write_text(FAMILY.replace("{name}", name))
        run = tmp_path / f"run_{name}"
        run.mkdir()
        plugins_of = {"plugins": [str(tmp_path / f"{name}.py")]} if recorded else {}
        (run / "config.json").write_text(json.dumps({**config, "model": name, **plugins_of}))
        if not recorded:
            monkeypatch.setenv(plugins.ENV, str(tmp_path / f"{name}.py"))
        assert name not in REGISTRY
        read_run_config(run)
        assert name in REGISTRY


def test_the_environment_names_where_a_runs_recorded_plugin_is_now(tmp_path, monkeypatch):
    """A run trained in lab/ with ``--plugins flat.py`` records that relative path: read from another folder (or with
    the file moved) it is not there, and FACELANDMARKS_PLUGINS naming where it is now must do (evaluate.py, export.py
    and Predictor.load have no --plugins); without the variable, the recorded file missing is one line naming it."""
    from facelandmarks.training.runs import read_run_config

    (tmp_path / "lab").mkdir()
    (tmp_path / "lab" / "flat.py").write_text(FAMILY.replace("{name}", "moved_flat"))
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": "moved_flat", "scheme": "ibug68", "input_shape": [16, 16, 3],
                                                 "num_points": 68, "plugins": ["flat.py"]}))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(plugins.PluginError, match=r"^flat\.py: no such plugin file \(plugins of .*config\.json; "
                       r"FACELANDMARKS_PLUGINS=PATH: where it is now\)$"):
        read_run_config(run)
    (tmp_path / "lab" / "other.py").write_text(FAMILY.replace("{name}", "other_flat"))
    monkeypatch.setenv(plugins.ENV, " lab/other.py, ")  # a plugin, but not the run's
    with pytest.raises(plugins.PluginError, match=r"^flat\.py: no such plugin file \(plugins of .*config\.json; "
                       r"FACELANDMARKS_PLUGINS=PATH: where it is now\), and FACELANDMARKS_PLUGINS's plugins register "
                       r"no model 'moved_flat'$"):
        read_run_config(run)
    monkeypatch.setenv(plugins.ENV, "lab/other.py,lab/flat.py,")
    read_run_config(run)
    assert "moved_flat" in REGISTRY


def test_a_run_of_a_built_in_family_reads_back_without_a_plugin_it_recorded_but_does_not_need(tmp_path, capsys,
                                                                                                 monkeypatch):
    """A run trained while FACELANDMARKS_PLUGINS named a plugin records it (a new run takes the variable's plugins).
    Read back where that file is not (a colleague's machine, the variable unset), a run of a built-in family with a
    built-in loss needs nothing of it: a note, not 'no such plugin file' (it was refused). One whose loss is not
    registered still is."""
    from facelandmarks.training.runs import read_run_config

    run = tmp_path / "run"
    run.mkdir()
    config = {"model": "mlp", "scheme": "ibug68", "input_shape": [16, 16, 1], "num_points": 68,
              "plugins": [str(tmp_path / "gone.py")]}
    (run / "config.json").write_text(json.dumps({**config, "loss": "wing"}))
    monkeypatch.delenv(plugins.ENV, raising=False)
    assert read_run_config(run)["model"] == "mlp"
    assert capsys.readouterr().err.strip() == (
        f"note: {tmp_path / 'gone.py'}: no such plugin file (plugins of {run / 'config.json'}; FACELANDMARKS_PLUGINS="
        "PATH: where it is now); the run's model 'mlp' and loss 'wing' are registered without it")
    (run / "config.json").write_text(json.dumps({**config, "loss": "lab_loss"}))
    with pytest.raises(plugins.PluginError, match=r"gone\.py: no such plugin file \(plugins of "):
        read_run_config(run)


@pytest.mark.parametrize("script", ["export", "models", "train"])
def test_the_note_of_a_plugin_a_run_does_not_need_names_the_script(tmp_path, capsys, script):
    """Read back by a script, the note above is one of the script's lines and names it, as its others do ('export.py:
    RUN: no usable weights' came after a bare 'note: gone.py: ...'); train.py reads a --config file's plugins so."""
    import importlib

    run = tmp_path / "run"
    run.mkdir()
    config = {"model": "mlp", "scheme": "ibug68", "input_shape": [16, 16, 1], "num_points": 68, "loss": "wing",
              "plugins": [str(tmp_path / "gone.py")]}
    (run / "config.json").write_text(json.dumps(config))
    argv = {"export": [run], "models": ["--ship", run, "--to", tmp_path / "shipped"],
            "train": ["--config", run / "config.json", "--help"]}[script]
    main = importlib.import_module(f"facelandmarks.cli.{script}").main
    if script == "train":
        with pytest.raises(SystemExit):  # the help, after the note
            main([str(a) for a in argv])
        where = f"plugins of {run / 'config.json'}; --plugins PATH or FACELANDMARKS_PLUGINS=PATH: where it is now"
    else:
        assert main([str(a) for a in argv]) == 2
        where = f"plugins of {run / 'config.json'}; FACELANDMARKS_PLUGINS=PATH: where it is now"
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0] == (f"{script}.py: note: {tmp_path / 'gone.py'}: no such plugin file ({where}); the run's model "
                        "'mlp' and loss 'wing' are registered without it"), lines
    assert len(lines) == (1 if script == "train" else 2) and lines[-1].startswith(f"{script}.py: "), lines


def run_whose_plugin_moved(tmp_path, family: str, folder: str, monkeypatch):
    """A run folder ``tmp_path/folder`` whose config.json records plugin ``flat.py`` (registering ``family``), which
    now lies in ``tmp_path/lab``; the working folder is ``tmp_path``, where ``flat.py`` is not."""
    from facelandmarks.training.config import TrainConfig

    (tmp_path / "lab").mkdir()
    (tmp_path / "lab" / "flat.py").write_text(FAMILY.replace("{name}", family))
    run = tmp_path / folder
    run.mkdir()
    TrainConfig(model=family, data=str(tmp_path / "nowhere.npz"), run_dir=str(run),
                plugins=["flat.py"]).save(run / "config.json")
    monkeypatch.chdir(tmp_path)
    return run


def test_train_resume_takes_a_moved_plugin_from_the_environment(tmp_path, capsys, monkeypatch):
    """``train.py --resume`` of a run whose recorded plugin is not where it was: FACELANDMARKS_PLUGINS naming where it
    is now loads it (as for evaluate.py), and the run goes on to its data (here missing: the line after the plugins)."""
    run = run_whose_plugin_moved(tmp_path, "resumed_flat", "run", monkeypatch)
    argv = ["--resume", "--run-dir", str(run)]
    assert train_cli.main(argv) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"train.py: flat.py: no such plugin file (plugins of {run / 'config.json'}; --resume --plugins PATH: where it "
        "is now)"]
    monkeypatch.setenv(plugins.ENV, "lab/flat.py")
    assert train_cli.main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "nowhere.npz" in lines[0] and "plugin" not in lines[0], lines
    assert "resumed_flat" in REGISTRY


def test_a_name_taken_by_another_plugin_file_names_that_file(tmp_path):
    """Two copies of a plugin (a recorded path and FACELANDMARKS_PLUGINS' other copy): the line names the file that
    registered the name first, not the made-up module name a file is imported under."""
    loss = "\nfrom facelandmarks.models import losses\nlosses.register_loss('copied_l1', type('L1', (losses.MaskedMeanAbsoluteError,), {}))\n"
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "flat.py").write_text(FAMILY.replace("{name}", "copied_flat") + loss)
    plugins.load_plugins([str(tmp_path / "a" / "flat.py")])
    with pytest.raises(plugins.PluginError, match=f"model 'copied_flat' is registered already \\(by {tmp_path / 'a' / 'flat.py'}\\)"):
        plugins.load_plugins([str(tmp_path / "b" / "flat.py")])
    (tmp_path / "b" / "flat.py").write_text(loss)
    with pytest.raises(plugins.PluginError, match=f"loss 'copied_l1' is registered already \\(by {tmp_path / 'a' / 'flat.py'}\\)"):
        plugins.load_plugins([str(tmp_path / "b" / "flat.py")])


def test_a_module_whose_package_fails_to_import_is_one_line(tmp_path, capsys, monkeypatch):
    """``--plugins lab.models`` where ``lab/__init__.py`` raises: finding the module imports the package, and that
    failure is the plugin's line, not a traceback."""
    (tmp_path / "broken_lab").mkdir()
    (tmp_path / "broken_lab" / "__init__.py").write_text("x = 1\nraise RuntimeError('no licence file')\n")
    (tmp_path / "broken_lab" / "models.py").write_text(FAMILY.replace("{name}", "never_flat"))
    monkeypatch.syspath_prepend(str(tmp_path))
    code, lines = train(["mlp", "--plugins", "broken_lab.models"], capsys, tmp_path)
    assert code == 2 and lines == [f"train.py: broken_lab.models: the plugin failed to import (--plugins), "
                                   f"{tmp_path / 'broken_lab' / '__init__.py'}, line 2: RuntimeError: no licence file"], lines


def test_a_new_run_from_python_records_the_environments_plugins(tmp_path, monkeypatch):
    """``training.fit.fit`` (train.py's trainer, and the pipelines' stages) records FACELANDMARKS_PLUGINS' plugins in
    a new run's settings as train.py does, so the run reads back without the variable."""
    from facelandmarks.data.errors import DatasetError
    from facelandmarks.training.config import TrainConfig
    from facelandmarks.training.fit import fit

    (tmp_path / "flat.py").write_text(FAMILY.replace("{name}", "python_flat"))
    monkeypatch.setenv(plugins.ENV, str(tmp_path / "flat.py"))
    config = TrainConfig(model="python_flat", data=str(tmp_path / "nowhere.npz"), run_dir=str(tmp_path / "run"))
    with pytest.raises(DatasetError, match="nowhere.npz: no such dataset file"):  # after the plugins and the checks
        fit(config)
    assert config.plugins == [str(tmp_path / "flat.py")]


LOSS = "\nfrom facelandmarks.models import losses\nlosses.register_loss('{name}', type('L1', (losses.MaskedMeanAbsoluteError,), {{}}))\n"


@pytest.mark.parametrize("given", ["--plugins", "variable"])
def test_train_help_lists_the_families_and_losses_of_your_plugins(given, tmp_path, capsys, monkeypatch):
    """``train.py --plugins FILE --help`` (or with FACELANDMARKS_PLUGINS): the parser was built before any plugin was
    imported, so --help named the toolkit's losses alone and no family of the plugin's; the plugin is imported first."""
    path = tmp_path / "mine.py"
    path.write_text(FAMILY.replace("{name}", "help_flat") + LOSS.format(name="help_l1"))
    argv = ["--help"]
    if given == "variable":
        monkeypatch.setenv(plugins.ENV, str(path))
    else:
        argv = ["--plugins", str(path), *argv]
    with pytest.raises(SystemExit) as ended:
        train_cli.main(argv)
    assert ended.value.code == 0
    help_lines = {}  # option -> its help, on one line
    for line in capsys.readouterr().out.splitlines():
        if line.startswith("  ") and not line.startswith("   "):
            option = line.split()[0]
            help_lines[option] = line
        elif line.startswith("   ") and help_lines:
            help_lines[option] += " " + line.strip()
    assert "one of mse, l1, wing, cgd, help_l1 (" in help_lines["--loss"]
    for option in ("model", "--refiner", "--box-model"):
        assert "; yours (--plugins): help_flat" in help_lines[option], help_lines[option]


def test_train_refusals_name_your_plugins_families_and_losses(tmp_path, capsys):
    """An unknown model, refiner or loss is refused in one line naming the plugin's family or loss among the valid
    ones, before the data load (and a plugin that is not there before anything else, as --help with it is)."""
    path = tmp_path / "mine.py"
    path.write_text(FAMILY.replace("{name}", "named_flat") + LOSS.format(name="named_l1"))
    for argv, known in ((["no_such_model"], "named_flat"), (["cascade", "--stage1", tmp_path, "--refiner", "nope"],
                                                            "named_flat"), (["mlp", "--loss", "nope"], "named_l1")):
        code, lines = train([*argv, "--plugins", path], capsys, tmp_path)
        assert code == 2 and len(lines) == 1 and lines[0].startswith("train.py: ") and f", {known}" in lines[0], lines
    code, lines = train(["--plugins", tmp_path / "gone.py", "--help"], capsys, tmp_path)
    assert code == 2 and lines == [f"train.py: {tmp_path / 'gone.py'}: no such plugin file (--plugins)"]
    assert not (tmp_path / "run").exists()


def test_models_py_lists_the_families_of_your_plugins(tmp_path, capsys, monkeypatch):
    """``models.py --plugins FILE`` (and FACELANDMARKS_PLUGINS): --summary takes the plugin's family, and refuses an
    unknown name naming it among the valid ones."""
    path = tmp_path / "mine.py"
    path.write_text(FAMILY.replace("{name}", "listed_flat"))
    with pytest.raises(SystemExit):
        models_cli.main(["--summary", "nope", "--plugins", str(path)])
    err = capsys.readouterr().err
    assert err.startswith("models.py: --summary: 'nope' is not a model; choose from scratch, ") and ", listed_flat " in err
    monkeypatch.setenv(plugins.ENV, str(path))
    assert models_cli.main(["--summary", "listed_flat"]) == 0
    assert "hidden (Dense)" in capsys.readouterr().out  # the layers of the plugin's family


def test_a_pipeline_resumes_with_its_refiners_plugin_from_the_environment(tmp_path, capsys, monkeypatch):
    """``train.py --resume`` of a cascade whose refiner is a plugin's family, the recorded plugin moved: the variable
    naming where it is now must register the refiner (it was refused as registering 'no model None'), and the run goes
    on to its stage 1 (here missing: the line after the plugins). The pipeline's config.json then records where the
    plugin is now, as its refiners' do (it kept the path it started with: each later reader needed the variable)."""
    from facelandmarks.pipelines.config import PipelineOptions
    from facelandmarks.training.config import TrainConfig

    (tmp_path / "lab").mkdir()
    (tmp_path / "lab" / "flat.py").write_text(FAMILY.replace("{name}", "refiner_flat"))
    run = tmp_path / "run"
    run.mkdir()
    options = {**vars(PipelineOptions(stage1=str(tmp_path / "stage1"), refiner="refiner_flat"))}
    TrainConfig(model="cascade", data=None, run_dir=str(run), plugins=["flat.py"],
                pipeline=options).save(run / "config.json")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(plugins.ENV, "lab/other.py")
    (tmp_path / "lab" / "other.py").write_text(FAMILY.replace("{name}", "other_flat"))
    assert train_cli.main(["--resume", "--run-dir", str(run)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"train.py: flat.py: no such plugin file (plugins of {run / 'config.json'}; --resume --plugins PATH: where it "
        "is now), and FACELANDMARKS_PLUGINS's plugins register no model 'refiner_flat'"]
    monkeypatch.setenv(plugins.ENV, "lab/flat.py")
    assert train_cli.main(["--resume", "--run-dir", str(run)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"train.py: --stage1 {tmp_path / 'stage1'}: no such run directory (in {run / 'config.json'}: relative to the "
        "folder train.py started the run in, and not where its pipeline.json leads)"]
    assert "refiner_flat" in REGISTRY
    (tmp_path / "stage1").mkdir()  # empty: refused once the resumed pipeline's config.json is recorded
    assert train_cli.main(["--resume", "--run-dir", str(run)]) == 2
    assert json.loads((run / "config.json").read_text())["plugins"] == ["lab/flat.py"]  # it kept "flat.py"


@pytest.mark.parametrize("flag", ["--verbose=1", "--verb=yes"])
def test_a_wrong_verbose_is_refused_in_the_full_parsers_one_line(flag, capsys):
    """train.py's early read of --verbose (before the parser that knows the plugins) ended a wrong one itself: a
    'usage: train.py [--verbose]' line, as if that were the only flag, then its error without the --help hint."""
    with pytest.raises(SystemExit) as exited:
        train_cli.main(["scratch", flag])
    value = flag.split("=")[1]
    assert (exited.value.code, capsys.readouterr().err.splitlines()) == (2, [
        f"train.py: argument --verbose: ignored explicit argument '{value}' (train.py --help lists the options)"])



def test_a_new_pipeline_from_a_runs_config_takes_its_moved_plugin_from_the_environment(tmp_path, capsys, monkeypatch):
    """``train.py --config RUN/config.json --run-dir NEW`` (a pipeline's, its refiner a plugin's family) after the
    plugin moved: the recorded file was refused as if typed ('flat.py: no such plugin file (--plugins)') even with
    FACELANDMARKS_PLUGINS naming where it is now, which ``--resume`` takes. A file's plugins are read back as a run's
    are: the variable must register the refiner, the line names the file and what to do, and the new run's config.json
    records where the plugin is now (its stage 1, an empty folder here, is refused after config.json is written)."""
    from facelandmarks.pipelines.config import PipelineOptions
    from facelandmarks.training.config import TrainConfig

    (tmp_path / "lab").mkdir()
    (tmp_path / "lab" / "flat.py").write_text(FAMILY.replace("{name}", "again_flat"))
    (tmp_path / "lab" / "other.py").write_text(FAMILY.replace("{name}", "other_flat"))
    (tmp_path / "stage1").mkdir()
    run, again = tmp_path / "run", tmp_path / "again"
    run.mkdir()
    options = {**vars(PipelineOptions(stage1=str(tmp_path / "stage1"), refiner="again_flat"))}
    TrainConfig(model="cascade", data=None, run_dir=str(run), plugins=["flat.py"],
                pipeline=options).save(run / "config.json")
    monkeypatch.chdir(tmp_path)
    argv = ["cascade", "--config", str(run / "config.json"), "--run-dir", str(again)]
    assert train_cli.main(argv) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"train.py: flat.py: no such plugin file (plugins of {run / 'config.json'}; --plugins PATH or "
        "FACELANDMARKS_PLUGINS=PATH: where it is now)"]
    monkeypatch.setenv(plugins.ENV, "lab/other.py")
    assert train_cli.main(argv) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"train.py: flat.py: no such plugin file (plugins of {run / 'config.json'}; --plugins PATH or "
        "FACELANDMARKS_PLUGINS=PATH: where it is now), and FACELANDMARKS_PLUGINS's plugins register no model 'again_flat'"]
    assert not again.exists()
    monkeypatch.setenv(plugins.ENV, "lab/flat.py")
    assert train_cli.main(argv) == 2
    out, err = capsys.readouterr()
    assert "plugin" not in err and str(tmp_path / "stage1") in err, err  # past the plugins, to stage 1
    assert "again_flat" in REGISTRY
    assert json.loads((again / "config.json").read_text())["plugins"] == ["lab/flat.py"]
    assert "plugins lab/flat.py (FACELANDMARKS_PLUGINS) in place of flat.py" in out, out


def test_init_from_a_run_whose_plugin_moved_takes_it_from_the_environment(tmp_path, capsys, monkeypatch):
    """``train.py --init RUN`` (no model named: RUN's, with its plugins) after RUN's plugin moved: refused as a typed
    --plugins was ('flat.py: no such plugin file (--plugins)'); read back as RUN's, the variable stands in for it, and
    the run goes on to its data (here missing: the line after the plugins)."""
    run = run_whose_plugin_moved(tmp_path, "init_flat", "run0", monkeypatch)
    code, lines = train(["--init", run], capsys, tmp_path)
    assert (code, lines[-1:]) == (2, [f"train.py: flat.py: no such plugin file (plugins of {run / 'config.json'}; "
                                      "--plugins PATH or FACELANDMARKS_PLUGINS=PATH: where it is now)"])
    monkeypatch.setenv(plugins.ENV, "lab/flat.py")
    code, lines = train(["--init", run], capsys, tmp_path)
    assert code == 2 and len(lines) == 1 and "nowhere.npz" in lines[0] and "plugin" not in lines[0], lines
    assert "init_flat" in REGISTRY
