"""Train a registered landmark model, or a registered trainer (a coarse-to-fine pipeline), on a prepared npz.

Every setting is a field of TrainConfig (facelandmarks/training/config.py); the flags below are derived
from it.  Settings come from, in increasing precedence: the defaults, a --config FILE (a JSON object
of settings, or YAML with PyYAML installed; "_comment" and other keys starting with "_" are notes),
and the flags typed on the command line.  A run's config.json is such a file:

  train.py --config configs/demo.json                           # a recipe from configs/
  train.py --config runs/X/config.json --run-dir runs/Y         # run X again, into runs/Y
  train.py --resume --run-dir runs/X [--epochs N]               # continue X; --epochs, --time-limit may change
  train.py --config configs/demo.json --time-limit 20m          # end (annealed) within 20 minutes
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import inspect
import json
import shlex
import sys
from pathlib import Path

from facelandmarks.cli.common import (
    USER_ERRORS,
    OneLineParser,
    complain,
    error_line,
    script_as_started,
    script_main,
    stopped,
    stops_as_raised,
)
from facelandmarks.cli.wind_down import STOP_TIMEOUT_ENV, bounded_wind_down, stop_timeout
from facelandmarks.data.fileset import test_side_of
from facelandmarks.runtime import comma_list, env_plugins, startup
from facelandmarks.training.checks import load_plugins_for_run
from facelandmarks.training.config import (
    SHIPPED,
    ConfigError,
    TrainConfig,
    add_arguments,
    check_values,
    flag_name,
    read_config_file,
    validated,
)
from facelandmarks.training.trainers import get_trainer, option_groups, registered_trainer, trained_model

# run_dir: a copied or moved run folder resumes into itself; workers and previews leave the restored state alone;
# data, val and a weights file may have moved with it (a line names the change)
RESUME_MAY_CHANGE = ("epochs", "time_limit", "run_dir", "workers", "preview_every", "data", "val", "weights", "plugins")

EPILOG = """exit status:
  0    the run finished (a line says where it is, what ended it and its best epoch; then its summary as JSON)
  2    a usage or input error, reported in one line on stderr, "train.py: PATH: what is wrong": a bad
       flag or setting (--size 0), a missing, truncated or corrupt file (npz, json, weights), an empty
       training or validation set, a run folder that cannot be written, --resume on a folder without a run, a
       --plugins file that is not there, fails to import or registers a name taken
  130  interrupted (Ctrl-C); the line printed gives the command that continues the run
  143  terminated (SIGTERM: kill, timeout, a job scheduler): as Ctrl-C. Not wound down 20 s after either
       (FACELANDMARKS_STOP_TIMEOUT), the run ends by itself with one line; its last committed epoch stays
"""

ENDED_BY = {"epoch budget": "its epoch budget (--epochs)", "time limit": "--time-limit"}  # summary.json's stopped_by


def _load_trainers() -> None:
    """Register the trainers of the layers above training (the CLI is the top layer: it may import them)."""
    import facelandmarks.pipelines  # noqa: F401  (registers cascade, regions, boxes)


def build_parser() -> argparse.ArgumentParser:
    """``train.py``'s flags: TrainConfig's fields, then one group per registered trainer's options."""
    _load_trainers()
    parser = OneLineParser(prog="train.py", description=__doc__, epilog=EPILOG,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", metavar="FILE", help="settings file (JSON; YAML with PyYAML); typed flags override it")
    parser.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its last epoch")
    parser.add_argument("--verbose", action="store_true", help="show the backend's start-up INFO lines")
    add_arguments(parser, TrainConfig)
    for options, names in option_groups():
        summary = inspect.cleandoc(options.__doc__ or "").split("\n\n")[0]  # its first paragraph
        add_arguments(parser.add_argument_group(f"{', '.join(names)} settings", summary), options)
    return parser


def resolve_config(argv) -> tuple[TrainConfig, bool]:
    """The ``TrainConfig`` that ``train.py ARGV`` trains, and whether it resumes; no Keras, no training.

    Raises ``ConfigError`` (one line naming the file or flags) when the settings cannot be used, and
    ``SystemExit`` for what argparse rejects (a malformed flag value).
    """
    config, resume, _ = _resolved(argv)
    return config, resume


def _resolved(argv) -> tuple[TrainConfig, bool, str | None]:
    """``resolve_config``'s, and the file a new run's plugins were read from: the ``--config`` file, or ``--init
    RUN``'s config.json (None: typed, or none); they are then read back as a run's are (``load_plugins_for_run``)."""
    args = vars(build_parser().parse_args(argv))
    path, resume = args.pop("config", None), args.pop("resume")
    args.pop("verbose")
    option_fields = {f.name for options, _ in option_groups() for f in dataclasses.fields(options)}
    typed = {k: v for k, v in args.items() if k not in option_fields}
    typed_options = {k: v for k, v in args.items() if k in option_fields}
    from_file = read_config_file(path) if path else {}
    file_options = from_file.pop("pipeline", {})
    if path:  # the file's values no flag replaces first, so a bad one names the file (the flags' are checked after)
        kept = {k: v for k, v in from_file.items() if k not in typed}
        validated(TrainConfig(**{"model": "-", "data": None, "run_dir": "-", **kept}), path)
    requested = {**from_file, **typed}

    saved = _saved_run(requested) if resume else None
    read_from = str(path) if path and "plugins" in from_file and "plugins" not in typed else None
    if not saved and not requested.get("model") and requested.get("init"):
        typed_plugins = "plugins" in requested
        _model_of_init(requested)  # before the trainer is looked up by the model's name
        if not typed_plugins and "plugins" in requested:
            read_from = str(Path(requested["init"]) / "config.json")
    model = saved.model if saved else requested.get("model")
    trainer = registered_trainer(model)
    options_class = trainer.options if trainer else None
    if file_options:
        if options_class is None:
            raise ConfigError(f"{path}: \"pipeline\" settings are for {_option_users()}, not for model {model!r}")
        file_options = check_values(options_class, file_options, str(path), prefix="pipeline.")
    if typed_options and options_class is None:
        flags = ", ".join(map(flag_name, typed_options))
        raise ConfigError(f"{flags}: only for {_option_users()}, not for model {model!r}")
    requested_options = {**file_options, **typed_options}
    if saved:
        return _resumed(saved, requested, requested_options), True, None
    if typed.get("teacher_recrop") and not requested.get("teachers"):  # typed: a shipped config.json keeps it, teachers gone
        raise ConfigError("--teacher-recrop is the teachers' second look: give --teachers A,B,... (or leave it off)")
    return _new_run(requested, requested_options, trainer, options_class), False, read_from


def _option_users() -> str:
    return ", ".join(name for _, names in option_groups() for name in names) or "registered trainers"


def _new_run(requested: dict, requested_options: dict, trainer, options_class) -> TrainConfig:
    _shipped_init(requested)
    model = requested.get("model")
    if not model:
        raise ConfigError("a model name is required: train.py MODEL --data TRAIN.npz --run-dir DIR, "
                          "\"model\" in a --config file, --init RUN (its model), or --resume --run-dir DIR")
    if (trainer is None or trainer.needs_data) and not requested.get("data"):
        raise ConfigError(f"train.py {model} needs --data TRAIN.npz (on the command line or in the --config file)")
    if not requested.get("run_dir"):
        raise ConfigError(f"train.py {model} needs --run-dir DIR (on the command line or in the --config file)")
    pipeline = dataclasses.asdict(options_class(**requested_options)) if options_class else {}
    return TrainConfig(**{"data": None, **requested, "pipeline": pipeline})


def _shipped_init(requested: dict) -> None:
    """``--init`` alone or ``--init shipped``: the shipped model's folder, which goes into config.json (a rerun
    starts from the same model)."""
    if requested.get("init") == SHIPPED:
        from facelandmarks.inference.shipped import default_model_dir

        try:
            requested["init"] = str(default_model_dir())
        except FileNotFoundError as err:
            raise ConfigError(f"--init {SHIPPED}: {err}") from None


def _model_of_init(requested: dict) -> None:
    """No model named, ``--init RUN`` given: the model of RUN's ``config.json`` and, unless given, its options."""
    from facelandmarks.training.runs import run_config_of

    _shipped_init(requested)
    if not Path(requested["init"]).exists():  # as with a model named, not 'name the model' for a mistyped path
        raise ConfigError(f"{requested['init']}: no such run directory or weights file (--init)")
    before = run_config_of(requested["init"])
    if not before or not before.get("model"):
        raise ConfigError(f"--init {requested['init']}: no config.json naming its model beside the weights; "
                          "name the model: train.py MODEL --init ...")
    if registered_trainer(before["model"]) is not None:
        raise ConfigError(f"--init {requested['init']}: a {before['model']} pipeline; --init starts one model "
                          "from another's weights (name the model: train.py MODEL --init ...)")
    requested["model"] = before["model"]
    for name in ("model_options", "plugins"):  # a family of your own comes with the plugin that registers it
        if name not in requested and before.get(name):
            requested[name] = before[name]
    print(f"model {before['model']} from --init {requested['init']} (its config.json)")


def _saved_run(requested: dict) -> TrainConfig:
    """The run ``--resume`` continues, from its ``config.json``, with ``run_dir`` where it is now."""
    run_dir = requested.get("run_dir")
    if not run_dir:
        raise ConfigError("--resume needs --run-dir DIR (the run to continue)")
    if not Path(run_dir).is_dir():
        raise ConfigError(f"{run_dir}: no such folder, so nothing to resume")
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise ConfigError(f"{run_dir}: nothing to resume (no config.json: not a run folder)")
    try:
        values = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path}: cannot read run config ({err})") from None
    if isinstance(values, dict) and "data" not in values and "run_dir" not in values:  # a shipped model's settings
        raise ConfigError(f"{run_dir}: a shipped model (its config.json names no data and no run_dir), not a run to "
                          f"resume; train.py --init {shlex.quote(str(run_dir))} --data TRAIN.npz --run-dir DIR starts a new run from it")
    # the one reader of a run's settings (the pipelines' and benchmarks' too): each value checked as a --config file's
    # is, naming this file and the key; keys this version no longer knows are dropped, so old runs still load
    return dataclasses.replace(TrainConfig.load(path), run_dir=str(run_dir))


def _resumed(saved: TrainConfig, requested: dict, requested_options: dict) -> TrainConfig:
    """``saved`` with the new epoch budget; any other requested setting must equal the saved one.

    A resumed run restores weights, optimizer and schedule state that only make sense with the
    settings they were trained under, so a silent change (a new --lr) would mix two runs.
    """
    derived = {f.name for f in dataclasses.fields(TrainConfig) if f.metadata.get("derived")}
    changed = [name for name, value in requested.items()
               if name not in RESUME_MAY_CHANGE and name not in derived and getattr(saved, name) != value]
    if "weights" in requested and requested["weights"] != saved.weights and not (
            _is_file_path(saved.weights) and _is_file_path(requested["weights"])):
        changed.append("weights")  # from or to 'none' / 'imagenet': another start, other trainable blocks
    # another validation set, not a file moved (a pipeline's --val or --data may name its stage 1's, which has moved)
    if "val" in requested and bool(requested["val"]) != bool(saved.val) and registered_trainer(saved.model) is None:
        raise ConfigError(f"{Path(saved.run_dir) / 'config.json'}: --resume --val {requested['val'] or 'none'}: "
                          f"the run was started validating on {_validation_of(saved)}; --resume goes on as it began " +
                          ("(give --val where that file is now)" if saved.val else
                           f"(train.py --init {shlex.quote(saved.run_dir)} --val FILE starts a new run from its weights)"))
    moved = {name: requested[name] for name in ("data", "val", "weights", "plugins")
             if name in requested and requested[name] != getattr(saved, name) and name not in changed}
    changed += [name for name, value in requested_options.items() if saved.pipeline.get(name) != value]
    if changed:
        shown = ", ".join("the model name" if name == "model" else flag_name(name) for name in changed)
        raise ConfigError(f"{Path(saved.run_dir) / 'config.json'}: --resume continues the saved settings; only "
                          f"--epochs, --time-limit, --workers, --preview-every and where --data, --val, a --weights "
                          f"file and --plugins now are may change, not {shown}")
    for name, value in moved.items():
        print(f"resuming with {flag_name(name)} {_shown(value)} (the run was started with {_shown(getattr(saved, name))}): "
              f"the same file, moved")
    kept = ("epochs", "time_limit", "workers", "preview_every", *moved)
    return dataclasses.replace(saved, **{name: requested[name] for name in kept if name in requested})


def _shown(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def _validation_of(saved: TrainConfig) -> str:
    if saved.val:
        return f"the faces of --val {saved.val}"
    if saved.val_fraction:
        return f"--val-fraction {saved.val_fraction:g} of --data's subjects (no --val)"
    return "no faces (--val-fraction 0, no --val)"


def _is_file_path(weights) -> bool:
    return weights not in (None, "none", "imagenet")


@script_main
def main(argv=None) -> int:
    """Exit status 0, 2, 130 or 143 as ``EPILOG`` says; a user's error is one line on stderr, never a traceback."""
    argv = sys.argv[1:] if argv is None else list(argv)
    early = _early_flags(argv)
    config, before = None, {}
    try:
        with stops_as_raised():  # a stop that native code turned into another error: wound down as a stop
            _load_typed_plugins(early)  # before the parser: --help and its refusals know their families and losses
            if early.help and early.config:
                _load_config_plugins(early)
            config, resume, read_from = _resolved(argv)  # no Keras yet (no plugins): --help and a wrong flag answer at once
            before = _files_in(config.run_dir)
            startup(early.verbose)  # Keras loads here, quietly: before anything else imports it
            load_plugins_for_run(config, resume, trained_model(config), read_from)  # before the model and loss are checked
            config.validate()
            _check_val(config)  # before the trainer makes the run folder
            if line := _test_val_warning(config):
                print(line)
            trainer = get_trainer(config.model)
            with bounded_wind_down(stop_timeout(), functools.partial(_unwound_line, config)):
                summary = trainer(config, resume=resume)
    except KeyboardInterrupt as err:
        word, status = stopped(err)
        if config and (Path(config.run_dir) / "config.json").is_file():
            hint = f"; continue with: {script_as_started('train')} --resume --run-dir {shlex.quote(config.run_dir)}"
        elif config and (written := sorted(name for name, stamp in _files_in(config.run_dir).items()
                                           if before.get(name) != stamp)):
            hint = (f" before the run began; it had written {', '.join(written)} in {config.run_dir} "
                    f"(the same command writes {'it' if len(written) == 1 else 'them'} again)")
        else:
            hint = " before the run began; nothing was written"
        complain(f"\n{word}{hint}")
        return status
    except USER_ERRORS as err:
        complain(f"train.py: {error_line(err, (config.data, config.val) if config else ())}")
        return 2
    if line := _where_line(config, summary):
        print(line)
    print(json.dumps(summary, indent=2))
    return 0


def _early_flags(argv) -> argparse.Namespace:
    """``--verbose``, ``--help``, ``--plugins`` and ``--config`` of ``argv``, read before the full parser is built
    (``--plugins`` and ``--config`` spelt out: the full parser takes or refuses an abbreviation of them, ambiguous among
    its flags). A flag that is wrong here (``--plugins`` without its value, ``--verbose=1``) reads as not given: the
    full parser's line refuses it."""
    verbose = _QuietParser(add_help=False)
    verbose.add_argument("--verbose", action="store_true")
    wants_help = _QuietParser(add_help=False)
    wants_help.add_argument("-h", "--help", action="store_true")
    plugins = _QuietParser(add_help=False, allow_abbrev=False)
    plugins.add_argument("--plugins", type=comma_list, default=[])
    config = _QuietParser(add_help=False, allow_abbrev=False)
    config.add_argument("--config")
    return argparse.Namespace(verbose=_parsed(verbose, argv, "verbose", False), help=_parsed(wants_help, argv, "help", False),
                              plugins=_parsed(plugins, argv, "plugins", []), config=_parsed(config, argv, "config", None))


def _parsed(parser: argparse.ArgumentParser, argv, name: str, otherwise):
    try:
        return getattr(parser.parse_known_args(argv)[0], name)
    except ValueError:
        return otherwise


class _QuietParser(argparse.ArgumentParser):
    def error(self, message):
        raise ValueError(message)


def _load_typed_plugins(early: argparse.Namespace) -> None:
    """The plugins of ``--plugins`` and ``FACELANDMARKS_PLUGINS``, imported (Keras with them) before the parser is
    built, so its ``--help`` lists their losses and families and its refusals name them; a plugin that cannot be used
    is refused here, in one line, before the data load. Without plugins nothing loads: ``--help`` answers at once."""
    if not early.plugins and not env_plugins():
        return
    startup(early.verbose)
    from facelandmarks.models.plugins import load_plugins

    load_plugins(early.plugins)


def _load_config_plugins(early: argparse.Namespace) -> None:
    """``--help`` with ``--config FILE``: the plugins FILE names imported too, so the help lists their losses and
    families. A file or a plugin that cannot be used is one line (the help follows without its plugins): a run with
    that file refuses it in the same words."""
    try:
        settings = read_config_file(early.config)
        if plugins := settings.get("plugins"):
            startup(early.verbose)
            from facelandmarks.models.plugins import ENV, load_plugins, load_run_plugins

            if settings.get("model"):  # as a run with the file reads them: FACELANDMARKS_PLUGINS for one that moved
                where = f"plugins of {early.config}; --plugins PATH or {ENV}=PATH: where it is now"
                load_run_plugins(plugins, where, settings["model"], settings.get("loss"))
            else:
                load_plugins(plugins)
    except USER_ERRORS as err:
        complain(f"train.py: {error_line(err)} (--help without the plugins of --config {early.config})")


def _unwound_line(config, word: str, seconds: float) -> str:
    """The last line of a run that did not wind down within ``seconds`` of SIGTERM or Ctrl-C (its main thread in a
    step waiting for another process of the job, or in a long computation) and ends without it."""
    run_dir = Path(config.run_dir)
    try:
        epoch = json.loads((run_dir / "state.json").read_text())["epoch"] + 1
        kept = f"{run_dir} keeps its checkpoints of epoch {epoch}, the last committed (state.json)"
    except (OSError, ValueError, KeyError, TypeError):  # none committed yet, or a pipeline's (in its stages' folders)
        kept = "the checkpoints committed before stay as they were"
    hint = (f"; continue with: {script_as_started('train')} --resume --run-dir {shlex.quote(config.run_dir)}"
            if (run_dir / "config.json").is_file() else "")
    return (f"{word}: the run did not wind down within {seconds:g} s ({STOP_TIMEOUT_ENV}; a step waiting for another "
            f"process of the job, or a long computation) and ends without it; {kept}{hint}")


def _files_in(run_dir) -> dict:
    """The files in ``run_dir`` (not its subfolders') and when each last changed: what a run interrupted before its
    config.json wrote (train.py boxes writes its box data first)."""
    try:
        return {path.name: path.stat().st_mtime_ns for path in Path(run_dir).iterdir() if path.is_file()}
    except OSError:  # no folder yet
        return {}


def _check_val(config: TrainConfig) -> None:
    """A --val that names no file is refused naming --val, with --val-fraction offered where it is a number
    (``--val 0.2`` for ``--val-fraction 0.2``), before a run folder is made."""
    if not config.val or Path(config.val).exists():
        return
    try:
        hint = f"; for a share of the training faces, --val-fraction {float(config.val):g}"
    except ValueError:
        hint = ""
    raise FileNotFoundError(f"{config.val}: no such dataset file (--val{hint})")


def _test_val_warning(config: TrainConfig) -> str | None:
    """A line when --val is the test file of a prepared set (allowed: it may be meant): the best epoch and early
    stopping are then chosen on the faces evaluate.py scores."""
    if not config.val or (train := test_side_of(config.val)) is None:
        return None
    return (f"warning: --val {config.val} is the test file of a prepared set (its training file: {train}); the best "
            f"epoch and early stopping are then chosen on the held-out test faces evaluate.py scores")


def _where_line(config: TrainConfig, summary) -> str | None:
    """One line before the summary: where the run is (a --config file names the folder, which no line said), what
    ended it and its best epoch (the summary's ``stopped_by`` and ``best_epoch``)."""
    run_dir = Path(config.run_dir)
    if (run_dir / "pipeline.json").is_file() and isinstance(summary, dict):  # cascade, regions: {region: its summary}
        refiners = [f"{region}/run (best epoch {done.get('best_epoch')})" for region, done in summary.items()
                    if isinstance(done, dict)]
        return (f"pipeline in {run_dir}: pipeline.json, refiners {', '.join(refiners)}; "
                f"{script_as_started('evaluate')} {shlex.quote(str(run_dir))} --data TEST.npz scores it")
    files = [name for name in ("best.weights.h5", "model.keras", "history.csv", "summary.json") if (run_dir / name).is_file()]
    if not isinstance(summary, dict) or not files:
        return None
    stopped = summary.get("stopped_by")
    ended = f", ended by {ENDED_BY.get(stopped, stopped)}" if stopped else ""
    if stopped == "early stopping":  # the best epoch may be the last: gains below --min-delta count for no epoch
        monitored = "validation" if "val_nme" in summary else "training"
        ended += (f" (the {monitored} loss fell by less than --min-delta {config.min_delta:g} for --patience "
                  f"{config.patience} epochs)")
    epochs = summary.get("epochs")
    ran = f"{epochs} epoch{'' if epochs == 1 else 's'}{ended}; " if epochs is not None else ""
    nme = f" (validation NME {summary['val_nme']:.2f} %)" if isinstance(summary.get("val_nme"), float) else ""
    best = f"best epoch {summary['best_epoch']}{nme}; " if summary.get("best_epoch") is not None else ""
    logs = f"; TensorBoard: tensorboard --logdir {shlex.quote(str(run_dir / 'logs'))}" if (run_dir / "logs").is_dir() else ""
    return f"run in {run_dir}: {ran}{best}{', '.join(files)}{logs}"
