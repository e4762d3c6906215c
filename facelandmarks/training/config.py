"""The settings of a training run, declared once in ``TrainConfig``.

A setting is one dataclass field, and everything else derives from it, so a new setting cannot be
half-added and defaults cannot drift apart: ``add_arguments`` makes it a ``train.py`` flag,
``read_config_file`` checks it as a key of a ``--config`` file, and ``save`` writes it into the run's
``config.json`` (which is therefore itself a valid ``--config`` file).

Field metadata (``dataclasses.field(metadata=...)``, written through ``setting``):

- ``help``: the flag's help, plain text (the default is appended to it in ``--help``);
- ``choices``: the allowed values, checked for flags and file keys alike;
- ``names``: a function giving the names the setting takes, written into the help where it says ``{names}``
  (``loss``: the registered losses, read when the parser is built);
- ``positional``: the flag is a positional argument (the model name);
- ``models``: the setting names a registered model; ``--help`` adds the families of your plugins once they are loaded;
- ``derived``: filled in from the data when the run starts; not a flag, and a file may carry it
  (a run's ``config.json`` does) but the run recomputes it;
- ``flag: False``: not a flag for another reason (``pipeline``: the CLI adds the flags of its contents).

The same scheme serves other dataclasses of settings (``facelandmarks.pipelines.config.PipelineOptions``).

Config files are JSON objects (YAML too where PyYAML is installed) keyed by field name.  Keys that
start with ``_`` (``"_comment": "what this recipe is for"``) are notes and are ignored.  Paths in a
file are relative to the working directory, exactly as on the command line.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import re
import types
import typing
from dataclasses import MISSING, dataclass, field
from pathlib import Path

from facelandmarks.data.fileset import test_side_of
from facelandmarks.files import write_json_whole
from facelandmarks.runtime import comma_list
from facelandmarks.training.loss_names import loss_names, own_families
from facelandmarks.training.values import parse_duration, seed_problem

OPTIMIZERS = ("adam", "nadam", "rmsprop", "sgd", "adamw")


SCHEDULES = ("plateau", "cosine", "constant")


JIT_MODES = ("auto", "on", "off")


INIT_HEADS = ("fresh", "nearest")


HEAD_LR_SCALE_NEW_MARKUP = 10.0  # --head-lr-scale's default where points of another markup start fresh (head_rate.py)
HEAD_LR_SCALE_DEFAULT_RECORD = "head_lr_scale_default"  # in a run's config.json: the scale the default chose


DISTRIBUTE_MODES = ("none", "mirrored", "multiworker", "data-parallel")  # distribute.MODES is this tuple


class ConfigError(ValueError):
    """A setting that cannot be used; the message is one line naming the file or flag and the problem."""


SHIPPED = "shipped"  # --init's name for the model shipped in weights/ (train.py replaces it by the folder)


def setting(default=MISSING, help: str = "", **meta):
    """A dataclass field carrying its CLI help; a list or dict default is copied for each instance."""
    metadata = {"help": help, **meta}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def split_seed_of(settings: dict) -> int | None:
    """The seed a run's validation split by subject was drawn with (``split_seed``, else ``seed``), from its
    settings as a mapping (a ``TrainConfig``'s fields or a run's ``config.json``)."""
    split_seed = settings.get("split_seed")
    return settings.get("seed") if split_seed is None else split_seed


@dataclass
class TrainConfig:
    """Every setting of a training run; saved as ``config.json`` in the run directory."""

    model: str = setting(help="registered model (python models.py --list) or registered trainer (a pipeline)",
                         positional=True, models=True)
    data: str | None = setting(help="training npz (images, or features for inception_bottleneck)")
    run_dir: str = setting(help="where checkpoints, logs and config.json go")
    plugins: list = setting([], "your own .py files or Python modules that register model families or losses "
                                "(docs/models.md), imported before the model and the loss are checked; recorded in "
                                "config.json, so --resume and evaluate.py import them again (FACELANDMARKS_PLUGINS "
                                "adds to them)")
    val: str | None = setting(None, "validation npz; default: a by-subject split of --data")
    val_fraction: float = setting(0.1, "share of faces (whole subjects) held out for validation")
    size: int | None = setting(None, "input size in pixels (images are resized); default: the npz's")
    epochs: int = setting(100, "epoch budget (--resume may change it)")
    time_limit: str | None = setting(None, "wall-clock budget of this sitting, e.g. 45m, 2h, 1h30m or 600 (seconds): "
                                           "the epoch budget is cut to the epochs that fit, and a cosine schedule "
                                           "still decays to its end rate by then; --resume may give a new one", metavar="DURATION")
    batch: int = setting(32, "batch size per replica (= the batch on one device)")
    optimizer: str = setting("adam", "optimizer", choices=OPTIMIZERS)
    lr: float = setting(1e-3, "initial learning rate")
    schedule: str = setting("plateau", "plateau: halve on a val_loss plateau; cosine: cosine decay to 1% over --epochs; "
                                       "constant", choices=SCHEDULES)
    loss: str = setting("mse", "masked landmark loss: one of {names} (LOSSES in facelandmarks/models/losses; "
                               "docs/models.md)", names=loss_names)
    loss_options: dict = setting({}, 'JSON object of loss options, the keyword arguments of its class, e.g. '
                                     '{"alpha": 0.01} for cgd')
    weights: str = setting("none", "backbone weights: none, imagenet (download) or a local file")
    train_blocks: int | None = setting(None, "retrain the last N backbone blocks (-1: all); default: the model's")
    model_options: dict = setting({}, 'JSON object of extra builder arguments, e.g. {"dropout": 0.0} '
                                      "(python models.py --list)")
    augment: str = setting("default", '"default", "light", "none", or e.g. "rotation=15,scale=0.1,flip=0.5,brightness=0.2" '
                                      "(see facelandmarks/data/augment)")
    oversample: dict = setting({}, 'JSON object {source: N}: each training face of that source (the npz\'s source '
                                   'column) appears N times per epoch, e.g. {"300w": 3}; 0 leaves the source out of training; in-memory npz only')
    max_faces: int | None = setting(None, "train on at most N training faces, drawn by --seed after the validation split, "
                                          "a face with its mirrored copies (--resume: the same faces; one npz only)", metavar="N")
    steps_per_epoch: int | None = setting(None, "at most N batches an epoch, the next N of the stream of passes over the "
                                                "faces (Keras' steps_per_epoch)", metavar="N")
    seed: int = setting(0, "seed of weights, batch order, augmentation and --max-faces' faces (and of the validation "
                           "split, unless --split-seed)")
    split_seed: int | None = setting(None, "seed of the validation split by subject; default: --seed. Keep it "
                                           "fixed to train other seeds on the same split (comparable validation "
                                           "numbers; --init from a run without its validation faces)")
    mixed_precision: bool = setting(False, "float16 on GPU, bfloat16 on CPU")
    patience: int = setting(15, "early-stopping patience in epochs")
    min_delta: float = setting(1e-4, "smallest drop of the validation loss that counts as an improvement, for early "
                                     "stopping and the plateau schedule alike (Keras' plateau default)")
    preview_every: int = setting(5, "epochs between TensorBoard preview images (0: off)")
    pretrain_epochs: int = setting(10, "autoencoder reconstruction epochs")
    workers: int = setting(2, "threads preparing batches: with 2, one prepares the next batch while the other "
                              "trains; 1: in the training thread")
    distribute: str = setting("none", "mirrored: all GPUs here (TF); multiworker: a TF_CONFIG cluster (TF); "
                                      "data-parallel: all devices (JAX). --batch is then per replica and the learning "
                                      "rate scales with the number of replicas", choices=DISTRIBUTE_MODES)
    jit_compile: str = setting("auto", "XLA-compile train steps; auto: off for TensorFlow on CPU (slower there), on otherwise",
                               choices=JIT_MODES)
    init: str | None = setting(None, "start from a trained run (its best weights) or a .weights.h5: fine-tuning on "
                                     "new data. The layers whose weights fit are kept (any input size); for another "
                                     "point count or markup the head starts fresh; a run of another model gives the "
                                     "layers named alike (the MobileNetV2 backbone). --init alone (or 'shipped'): "
                                     "the shipped model, recorded in config.json by its folder", const=SHIPPED,
                               metavar="RUN")
    init_head: str = setting("nearest", "with --init into another markup: 'nearest' starts each point's share of the "
                                        "head (the layers sized by the point count) from the init model's point nearest "
                                        "to it on the training faces, where that lies within 10 % of the normalising "
                                        "distance, and the others from random weights; 'fresh' starts all of it from "
                                        "random weights. 'nearest' by default: 5 epochs from the shipped model, test NME "
                                        "2.81 against 9.34 % on five of its points, 3.97 against 7.94 % on 9 points, "
                                        "two it does not mark (docs/own-landmarks.md)",
                             choices=INIT_HEADS)
    head_lr_scale: float | None = setting(None, "with --init: the layers it restarted (the head, for another point "
                                                "count or markup) learn at this many times the schedule's rate, every "
                                                "other layer at the rate. Default: 10 where --init restarted the head "
                                                "for another markup and points start there from random weights (all "
                                                "with --init-head fresh; with nearest, those it found nowhere), 1 "
                                                "otherwise (no --init, the same markup, every point copied by nearest, "
                                                "a run of another model). 5 epochs from the shipped model: 3.01 against "
                                                "3.97 % test NME on 9 points, two of them new to it (nearest); 4.02 "
                                                "against 9.34 % on face5 with a fresh head; with every point copied "
                                                "2.87 against 2.81 % (docs/own-landmarks.md). Another value than 1 is "
                                                "refused without --init or where --init restarted nothing; --resume "
                                                "keeps it",
                                          metavar="X")
    teachers: list = setting([], "distillation: trained runs or shipped-model folders whose flip-test points, averaged, "
                                 "become part of each training face's target (validation keeps the annotations)")
    teacher_weight: float = setting(0.8, "share of the teachers' points in the training targets with --teachers "
                                         "(0: the annotations alone, 1: the teachers' points alone)")
    teacher_recrop: bool = setting(False, "each teacher predicts again on a crop cut around its first points (--recrop)")
    # filled in from the data when the run starts
    scheme: str | None = setting(None, "landmark scheme of the data", derived=True)
    num_points: int | None = setting(None, "landmarks per face", derived=True)
    input_shape: list | None = setting(None, "model input shape", derived=True)
    input_kind: str | None = setting(None, "image or features", derived=True)
    # A trainer other than plain fit (a coarse-to-fine pipeline) keeps its own settings here, as the
    # dataclass it registered declares them; the training layer never looks inside.
    pipeline: dict = setting({}, "settings of the trainer registered under `model` (empty for a plain model)", flag=False)

    @property
    def val_seed(self) -> int:
        """The seed of the validation split by subject: ``split_seed``, else ``seed``."""
        return split_seed_of(vars(self))

    def validate(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"--schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.size is not None and self.size < 1:
            raise ValueError(f"--size must be a positive number of pixels, got {self.size}")
        if self.epochs < 1 or self.batch < 1:
            raise ValueError(f"--epochs and --batch must be >= 1, got {self.epochs} and {self.batch}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")
        if self.lr <= 0:
            raise ValueError(f"--lr must be positive, got {self.lr}")
        if self.head_lr_scale is not None and not self.head_lr_scale > 0:
            raise ValueError(f"--head-lr-scale must be positive, got {self.head_lr_scale}")
        if self.head_lr_scale not in (None, 1) and not self.init:
            raise ValueError(f"--head-lr-scale {self.head_lr_scale:g} speeds up the layers --init restarts; without "
                             "--init every layer starts alike (give --init RUN, or leave --head-lr-scale at 1)")
        if self.patience < 1 or self.workers < 1 or not self.min_delta >= 0:  # --workers 0 or -1 once meant 1
            raise ValueError(f"--patience and --workers must be >= 1 and --min-delta >= 0, got {self.patience}, "
                             f"{self.workers} and {self.min_delta}")
        if not all(isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
                   for k, v in self.oversample.items()):
            raise ValueError(f"--oversample must map source names to whole numbers >= 0, got {self.oversample!r}")
        for flag, count in (("--max-faces", self.max_faces), ("--steps-per-epoch", self.steps_per_epoch)):
            if count is not None and (isinstance(count, bool) or count < 1):
                raise ValueError(f"{flag} must be a whole number >= 1, got {count}")
        for flag, seed in (("--seed", self.seed), ("--split-seed", self.split_seed)):
            if seed is not None and (problem := seed_problem(seed)):
                raise ValueError(f"{flag} {problem}")
        if not 0.0 <= self.teacher_weight <= 1.0:
            raise ValueError(f"--teacher-weight must be in [0, 1], got {self.teacher_weight}")
        if self.data and (train := test_side_of(self.data)) is not None:  # its faces are for evaluate.py
            raise ValueError(f"{self.data}: the test file of a prepared set (--data): train on {train}")
        if self.time_limit is not None:
            try:
                seconds = parse_duration(self.time_limit)
            except ValueError as err:
                raise ValueError(f"--time-limit: {err}") from None
            if seconds <= 0:
                raise ValueError(f"--time-limit must be longer than 0 s, got {self.time_limit!r}")
        if self.jit_compile not in JIT_MODES:
            raise ValueError(f"--jit-compile must be one of {', '.join(JIT_MODES)}, got {self.jit_compile!r}")
        if self.augment not in ("none", ""):  # here, not when the augmenter is built: before the data and the run folder
            from facelandmarks.data.augment.config import AugmentConfig

            try:
                AugmentConfig.parse(self.augment)
            except ValueError as err:
                raise ValueError(f"--augment: {err}") from None

    def save(self, path: Path, **extra) -> None:
        """The settings as ``config.json``, with ``extra`` keys beside them (a run's ``scheme_definition``)."""
        _write_json_atomic(path, {**dataclasses.asdict(self), **extra})

    @classmethod
    def load(cls, path: Path) -> TrainConfig:
        """A saved run's settings, as ``--resume`` reads them: keys this version no longer knows are dropped (old runs
        load); a value of the wrong type or out of range is a ``ConfigError`` naming the file and the key."""
        try:
            values = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ConfigError(f"{path}: cannot read run config ({' '.join(str(err).split())})") from None
        check_run_settings(values, path)
        known = {f.name for f in dataclasses.fields(cls)}
        values = {"head_lr_scale": 1.0, **values}  # a run from before --head-lr-scale trained all at the rate (null:
        # one stopped before --init settled it, which starts again and does)
        return validated(cls(**check_values(cls, {k: v for k, v in values.items() if k in known}, str(path))), path)


def validated(config: TrainConfig, path) -> TrainConfig:
    """``config.validate()`` for settings read from ``path``: a value out of range is a ConfigError naming the file."""
    try:
        config.validate()
    except ValueError as err:
        raise ConfigError(f"{path}: {err}") from None
    return config


def check_run_settings(values, path) -> None:
    """``values`` hold every setting without a default, as a run's ``config.json`` does; a shipped model's names no
    data and no run_dir (``TrainConfig(**values)`` met it with a TypeError), a ConfigError names the file."""
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: not a run config (expected an object of settings)")
    required = [f.name for f in dataclasses.fields(TrainConfig) if f.default is MISSING and f.default_factory is MISSING]
    if missing := [name for name in required if name not in values]:
        raise ConfigError(f"{path}: no {' or '.join(missing)}: not the config.json of a training run")


def flag_name(name: str) -> str:
    """The command-line spelling of field ``name``: ``--foo-bar`` for ``foo_bar``."""
    return "--" + name.replace("_", "-")


def field_kind(hint) -> tuple[type, bool]:
    """(base type, whether None is allowed) of a field's annotation: ``int | None`` -> (int, True)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return typing.get_origin(args[0]) or args[0], True
    return typing.get_origin(hint) or hint, False


def add_arguments(parser, cls) -> None:
    """Add a flag for every field of dataclass ``cls`` to ``parser`` (a parser or an argument group).

    Every default is ``argparse.SUPPRESS``: the parsed namespace holds only the flags actually typed,
    which is what lets a flag override a ``--config`` file and ``--resume`` tell a changed setting
    from an untouched one.  The dataclass default appears in the help instead.
    """
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("derived") or not f.metadata.get("flag", True):
            continue
        kind, _ = field_kind(hints[f.name])
        text = _help_text(f, kind).replace("%", "%%")
        if f.metadata.get("positional"):
            parser.add_argument(f.name, nargs="?", default=argparse.SUPPRESS, help=text)
            continue
        flag = flag_name(f.name)
        options = {"dest": f.name, "default": argparse.SUPPRESS, "help": text}
        if kind is bool:  # --foo / --no-foo: a flag can switch off what a file switched on
            options["action"] = argparse.BooleanOptionalAction
        else:
            options["type"] = _flag_parser(kind)
            if "const" in f.metadata:  # the flag alone means this value
                options.update(nargs="?", const=f.metadata["const"])
            if "metavar" in f.metadata:
                options["metavar"] = f.metadata["metavar"]
            if "choices" in f.metadata:
                options["choices"] = f.metadata["choices"]
            elif kind is dict:
                options["metavar"] = "JSON"
            elif kind is list:
                options["metavar"] = "A,B,..."
        parser.add_argument(flag, **options)


def _help_text(f: dataclasses.Field, kind: type) -> str:
    text = f.metadata.get("help", "")
    if "names" in f.metadata:  # the names it takes, asked for when the parser is built: "one of {names}"
        text = text.format(names=", ".join(f.metadata["names"]()) or "the registered names")
    if f.metadata.get("models") and (own := own_families()):  # a model's name: yours too, once --plugins loaded them
        text += f"; yours (--plugins): {', '.join(own)}"
    default = f.default_factory() if f.default_factory is not MISSING else f.default
    if default is MISSING or default is None or default == []:  # an empty list read "(default: )"
        return text
    if kind is bool:
        shown = "on" if default else "off"
    elif kind is dict:
        shown = json.dumps(default)
    elif kind is list:
        shown = ",".join(map(str, default))
    else:
        shown = str(default)
    return f"{text} (default: {shown})"


def _flag_parser(kind: type):
    if kind is dict:
        return _json_object
    if kind is list:
        return comma_list
    return kind


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not a JSON object ({err}): {text!r}") from err
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object like '{{\"dropout\": 0.3}}', got {text!r}")
    return value


def check_values(cls, values: dict, source: str, prefix: str = "") -> dict:
    """``values`` for the fields of dataclass ``cls`` from a file, type-checked.

    Keys starting with ``_`` are notes and dropped.  An unknown key or a value of the wrong type
    raises a ``ConfigError`` naming ``source`` and the key (``prefix`` + key, for nested sections).
    """
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    checked = {}
    for key, value in values.items():
        if str(key).startswith("_"):
            continue
        if key not in known:
            raise ConfigError(f"{source}: unknown key {prefix + str(key)!r} (known keys: {', '.join(known)})")
        checked[key] = _check_value(value, hints[key], known[key], f"{source}: {prefix}{key}")
    return checked


def _check_value(value, hint, f: dataclasses.Field, where: str):
    kind, optional = field_kind(hint)
    if value is None and not optional:
        raise ConfigError(f"{where} cannot be null")
    if value is None:
        return None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    elif f.name == "time_limit" and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)  # 600 seconds, as --time-limit 600 takes it (refused as "must be str")
    elif kind is float and isinstance(value, str) and re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+", value.strip()):
        value = float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string; JSON and every other number take it
    elif kind is list and isinstance(value, str):
        value = comma_list(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{where} must be {'a JSON object' if kind is dict else kind.__name__}, got {value!r}")
    choices = f.metadata.get("choices")
    if choices and value not in choices:
        raise ConfigError(f"{where} must be one of {', '.join(choices)}, got {value!r}")
    return value


# written beside the settings in a run's config.json (its scheme of your own) and the shipped model's (the run it
# came from, the datasets it trained on): a run's config is itself a --config, so these are read as records, not settings
RUN_RECORD_KEYS = ("scheme_definition", "shipped_from", "trained_on", "head_lr_layers", HEAD_LR_SCALE_DEFAULT_RECORD)


def read_config_file(path) -> dict:
    """The ``TrainConfig`` settings in a ``--config`` file (JSON, or YAML with PyYAML), checked.

    Only the keys the file gives are returned, so the caller can layer them between the defaults and
    the typed flags; ``pipeline`` comes back as the file's object, for the trainer's dataclass to check.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the config file ({err.strerror or err})") from err
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ConfigError(f"{path}: a YAML config file needs PyYAML (pip install pyyaml); or write it as JSON") from None
        try:
            values = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from err
    else:
        try:
            values = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected an object of settings like {{\"model\": \"scratch\", \"epochs\": 10}}")
    if values.get("scheme_definition"):  # a run of a markup of your own: its data and --init need the scheme
        from facelandmarks.scheme_files import register_definition

        register_definition(values["scheme_definition"], f"{path} (scheme_definition)")
    # a run's scale that the default chose (head_rate.py): the default chooses again, for this run's --init and data
    if (chosen := values.get(HEAD_LR_SCALE_DEFAULT_RECORD)) is not None and values.get("head_lr_scale") == chosen:
        del values["head_lr_scale"]
    return check_values(TrainConfig, {k: v for k, v in values.items() if k not in RUN_RECORD_KEYS}, str(path))


def _write_json_atomic(path: Path, values) -> None:
    """A run's JSON record (config.json, summary.json, pipeline.json), written whole."""
    write_json_whole(path, values, indent=2, sort_keys=True)
