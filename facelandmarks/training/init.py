"""``--init``: a new run starts from a trained run's weights, keeping the layers that fit its model and markup."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import keras
import numpy as np

from facelandmarks.training.config import split_seed_of
from facelandmarks.training.resume import CheckpointError, _one_line, _open_problem, choose_checkpoint, read_state
from facelandmarks.training.runs import init_run_config


class InitMismatch(CheckpointError):
    """``--init`` weights none of whose layers fit the model (``path``: the weights file)."""

    def __init__(self, message: str, path: Path):
        super().__init__(message)
        self.path = path


def init_weights(model, source: str, restart: tuple[str, ...] = (), why: str = "") -> tuple[str, ...]:
    """Start from a trained run's weights (``--init``): a run directory (its best weights, else its last)
    or a ``.weights.h5``.

    A model of another point count (another scheme) keeps every layer whose weights fit -- the backbone
    and decoder -- and starts the others (the head, whose size depends on K) fresh; one line names them.
    The layers named in ``restart`` (paths, as ``head_layers`` gives them) start fresh too, even where their
    weights fit: the head of a run of another markup with as many points, whose outputs mean other points;
    ``why`` ends the line. A model none of whose layers fit is an error naming the file. Returns the paths of the
    layers it restarted (what ``--head-lr-scale`` speeds up).
    """
    path = _weights_file(source)
    fresh = {v.path: keras.ops.convert_to_numpy(v) for v in model.weights if v.path.rsplit("/", 1)[0] in restart}
    with warnings.catch_warnings(record=True) as caught:  # a failed whole-model load warns about what it skipped
        try:
            model.load_weights(path)
        except ValueError as err:
            error = err
        else:
            error = None
    if error is None:
        for warning in caught:  # they passed the filters once: shown as they would have been
            warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
        if not fresh:
            print(f"starting from the weights of {path}")
            return ()
        kept, restarted = list(dict.fromkeys(v.path.rsplit("/", 1)[0] for v in model.weights)), []
    else:
        kept, restarted = _load_fitting_layers(model, path)
        if not kept:
            keras_says = _one_line(error)  # Keras lists every layer: thousands of characters
            keras_says = keras_says if len(keras_says) <= 300 else keras_says[:300] + " ..."
            raise InitMismatch(f"{path}: does not fit {model.name} with this input and point count (--init; "
                               f"{keras_says})", path) from None
    for variable in model.weights:
        if variable.path in fresh:
            variable.assign(fresh[variable.path])
    restarted = list(dict.fromkeys(restarted + list(restart)))  # every layer of restart is one of the model's
    kept = [layer for layer in kept if layer not in restarted]
    print(f"starting from the weights of {path}: kept {len(kept)} layers whose weights fit, "
          f"restarted {len(restarted)} ({', '.join(restarted)}){why}")
    return tuple(restarted)


def init_from_other_model(model, source: str, config: dict, head: tuple[str, ...] = ()) -> tuple[str, ...]:
    """``--init`` from a run of another model (``config``: its ``config.json``), such as a regressor started from
    the shipped PIP model: the layers both models name alike and whose weights fit -- the backbone's, which
    Keras names (``block_3_expand``, ...) -- are carried over; the others start fresh; one line says how many.

    Keras' weight files key layers by class and order, and the two models nest their backbones differently,
    so the run's model is rebuilt from its config and its layers are matched by name. Names Keras made up
    (``dense_2``) match nothing: two models' ``conv2d_3`` are not the same layer; nor do the layers of ``head``
    (paths, as ``head_layers`` gives them: those sized by the point count), whose outputs mean the other model's
    points after layers that start fresh. An error naming the file when nothing matches. Returns the paths of the
    layers started fresh.
    """
    from facelandmarks.training.runs import build_run_model

    path = _weights_file(source)
    try:
        theirs = build_run_model(config)
    except KeyError as key:
        raise InitMismatch(f"{path}: its run's config.json has no {key} to rebuild its {config['model']} from "
                           f"(--init)", path) from None
    try:
        theirs.load_weights(path)
    except ValueError as err:
        raise InitMismatch(f"{path}: not the weights of the {config['model']} its config.json names (--init; "
                           f"{_one_line(err)[:300]})", path) from None
    named = {layer.name: layer for layer in _weighted_layers(theirs) if not _made_up_name(layer)}
    kept, fresh, paths = [], [], []
    for layer in _weighted_layers(model):
        sized_by_points = any(v.path.rsplit("/", 1)[0] in head for v in layer.weights)
        other = named.get(layer.name) if not (_made_up_name(layer) or sized_by_points) else None
        if other is not None and [v.shape for v in other.weights] == [v.shape for v in layer.weights]:
            layer.set_weights(other.get_weights())
            kept.append(layer.name)
        else:
            fresh.append(layer.name)
            paths += [v.path.rsplit("/", 1)[0] for v in layer.weights]
    if not kept:
        raise InitMismatch(f"{path}: this {config['model']} run has no layer named and shaped as one of "
                           f"{model.name}'s: nothing to start from (--init)", path)
    print(f"starting from the weights of {path}, a {config['model']} run: kept {len(kept)} layers by name "
          f"({_span(kept)}), started {len(fresh)} fresh ({_span(fresh)})")
    return tuple(dict.fromkeys(paths))


def _weights_file(source: str) -> Path:
    """The weights file ``--init`` names: a run directory's best weights (else its last), or the file itself."""
    path = Path(source)
    if path.is_dir():
        return choose_checkpoint(path, read_state(path, strict=False))
    if not path.is_file():
        raise CheckpointError(f"{source}: no such run directory or weights file (--init)")
    if problem := _open_problem(path):
        raise CheckpointError(f"{path}: {problem} (--init)")
    return path


def _weighted_layers(model):
    """The layers holding weights, nested models walked into."""
    for layer in model.layers:
        if hasattr(layer, "layers"):
            yield from _weighted_layers(layer)
        elif layer.weights:
            yield layer


def _made_up_name(layer) -> bool:
    """Whether Keras named the layer after its class (``conv2d``, ``dense_2``): not a name to match on."""
    stem = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", type(layer).__name__)  # Keras' own rule: Conv2D -> conv2d
    stem = re.sub("([a-z])([A-Z])", r"\1_\2", stem).lower()
    return re.fullmatch(rf"{re.escape(stem)}(_\d+)?", layer.name) is not None


def _span(names: list[str]) -> str:
    """A few layer names for one line: the first and last of a long list."""
    return ", ".join(names) if len(names) <= 4 else f"{names[0]}, {names[1]} ... {names[-1]}"


def head_layers(model, other) -> tuple[str, ...]:
    """The layers (paths in ``model``) whose weights depend on the point count: those whose shapes differ in
    ``other``, the same model built for one point more (compared in order: automatic layer names differ between
    two builds). What ``init_weights`` restarts for another markup."""
    if len(model.weights) != len(other.weights):
        raise ValueError(f"{model.name}: a build for another point count has other layers; cannot tell its head")
    return tuple(dict.fromkeys(v.path.rsplit("/", 1)[0] for v, w in zip(model.weights, other.weights)
                               if tuple(v.shape) != tuple(w.shape)))


def _load_fitting_layers(model, path: Path) -> tuple[list[str], list[str]]:
    """Load the layers of ``path`` whose weights fit ``model`` (Keras' ``skip_mismatch``); returns
    (kept, restarted) layer paths.  Every float variable is first set to its dtype's largest value, so one
    still all at it after the load was skipped: it gets its fresh initial value back.  (Not NaN: in a job of several
    JAX processes every assignment checks that each process assigns the same value, and NaN equals nothing.)"""
    floats = [v for v in model.weights if "float" in str(v.dtype)]
    initial = [keras.ops.convert_to_numpy(v) for v in floats]
    for variable, value in zip(floats, initial):
        variable.assign(np.full(value.shape, np.finfo(value.dtype).max, value.dtype))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras warns once per skipped layer; the one line of init_weights says it all
        try:
            model.load_weights(path, skip_mismatch=True)
        except ValueError:
            pass
    layers: dict[str, bool] = {}
    for variable, value in zip(floats, initial):
        skipped = bool((keras.ops.convert_to_numpy(variable) == np.finfo(value.dtype).max).all()) and value.size > 0
        if skipped:
            variable.assign(value)
        layer = variable.path.rsplit("/", 1)[0]
        layers[layer] = layers.get(layer, True) and not skipped
    return [n for n, ok in layers.items() if ok], [n for n, ok in layers.items() if not ok]


def init_split_warning(config, scheme: str, sources=None) -> str | None:
    """One line when ``--init`` comes from a run that held out other validation faces than this run will.

    A run split off by subject with ``--seed`` and ``--val-fraction``; continuing a run of the same data
    with another seed or fraction puts faces it trained on into this run's validation set, so the
    validation NME reads low from the first epoch, rises as the model moves, and early stopping keeps
    the first epoch.  Measured: ``--seed 1`` on the shipped model stopped after 9 epochs with the best
    epoch the first.  None when the splits agree, when ``--val`` is given, or when the two runs
    trained on different data (another file, or another scheme, or no dataset in common: ``sources``, the
    datasets of this run's faces, against the shipped model's ``trained_on``, which stands for its data file).
    """
    if config.val or not config.val_fraction or (before := init_run_config(config)) is None:
        return None
    if before.get("scheme") not in (None, scheme) or before.get("data") not in (None, config.data):
        return None
    known = before.get("trained_on") is not None and sources is not None
    shared = sorted(set(before["trained_on"]) & set(map(str, sources))) if known else None
    seed, fraction = split_seed_of(before), before.get("val_fraction")
    if shared == [] or before.get("val") or seed is None or fraction is None or (seed, fraction) == (
            config.val_seed, config.val_fraction):
        return None
    same = ("the same data" if before.get("data") else f"{' and '.join(shared)} faces (as it did)" if shared
            else "the same data (if it is)")
    if not fraction:  # trained on every face (the shipped model's last run): no split keeps its faces out
        return (f"warning: --init {config.init} trained on every face of its data (--val-fraction 0); this run "
                f"validates on {same} with --val-fraction {config.val_fraction}, on faces {config.init} trained on: "
                f"its validation NME reads low and early stopping may stop too early (judge it on a test file, "
                f"or give --val with faces it never saw)")
    return (f"warning: --init {config.init} held out its validation faces with split seed {seed} and --val-fraction "
            f"{fraction}; this run splits {same} with split seed {config.val_seed} and --val-fraction "
            f"{config.val_fraction}, so its validation set holds faces {config.init} trained on and early stopping "
            f"may stop too early (--split-seed {seed} --val-fraction {fraction} keep that split whatever --seed, "
            f"or give --val)")


def adopt_init_constants(config) -> str | None:
    """``--init``: keep the pixel normalisation and the input zoom the weights were trained with (constants of the
    model, not weights), read once from their run's ``config.json``; the lines to print, or None."""
    if (before := init_run_config(config)) is None:
        return None
    return "\n".join(line for line in (adopt_init_normalization(config, before), adopt_init_zoom(config, before)) if line) or None


def adopt_init_zoom(config, before: dict) -> str | None:
    """``--init`` from a model whose input was zoomed (``mobilenetv2_heatmap``'s ``zoom``; ``before``: its run's
    config): a run of the same model and head takes the zoom over, so the weights see faces at the size they learnt,
    unless its options name a zoom themselves (then a warning where it differs). A line to print, or None."""
    from facelandmarks.models.registry import model_options

    options = before.get("model_options") or {}
    theirs = options.get("zoom", 1.0)
    if theirs == 1.0 or before.get("model") != config.model or "zoom" not in (defaults := model_options(config.model)):
        return None
    if config.model_options.get("head", defaults.get("head")) != options.get("head", defaults.get("head")):
        return None
    if "zoom" in config.model_options:
        ours = config.model_options["zoom"]
        return None if ours == theirs else (
            f"warning: --init {config.init} was trained with its input zoomed {theirs:g}, this run asks for {ours:g}: "
            f"its weights will see faces at another size (leave zoom out to keep {theirs:g})")
    config.model_options = {**config.model_options, "zoom": theirs}
    return f"--init {config.init}: keeping its input zoom {theirs:g} (model option zoom; \"zoom\": 1.0 sees the whole crop)"


def adopt_init_normalization(config, before: dict | None = None) -> str | None:
    """``--init``: keep the pixel normalisation the weights were trained with; a line to print, or None.

    A backbone's normalisation is a constant of the model, not a weight, and 'auto' follows
    ``--weights`` (``torch`` for the offline MobileNetV2 file, the Keras mode otherwise), so
    ``--init weights/mobilenetv2-pip-128`` without the backbone file would feed the shipped weights
    pixels scaled another way.  When the run the weights come from (its ``config.json``) used another
    mode, this run's ``model_options`` take it over, unless they name a mode themselves: then a warning.
    ``before``: that config, where already read.
    """
    if before is None and (before := init_run_config(config)) is None:
        return None
    try:
        from facelandmarks.models.registry import rebuild_options

        theirs = rebuild_options(before["model"], before.get("weights", "none"), before.get("model_options") or {})
        ours = rebuild_options(config.model, config.weights, config.model_options)
    except (ValueError, KeyError, TypeError):  # a config without a model, or a model no longer registered
        return None
    theirs, ours = theirs.get("normalization"), ours.get("normalization")
    if theirs is None or ours is None or theirs == ours:
        return None
    if "normalization" in config.model_options:
        return (f"warning: --init {config.init} was trained with input normalization {theirs!r}, this run asks for "
                f"{ours!r}: its weights will see pixels scaled another way (leave normalization out to keep {theirs!r})")
    config.model_options = {**config.model_options, "normalization": theirs}
    return f"--init {config.init}: keeping its input normalization {theirs!r} (this run's settings alone would give {ours!r})"
