"""``--init``: a new run starts from a trained run's weights, keeping the layers that fit its model and markup."""

from __future__ import annotations

import warnings
from pathlib import Path

import keras
import numpy as np

from facelandmarks.training.resume import CheckpointError, _one_line, _open_problem, choose_checkpoint, read_state


class InitMismatch(CheckpointError):
    """``--init`` weights none of whose layers fit the model (``path``: the weights file)."""

    def __init__(self, message: str, path: Path):
        super().__init__(message)
        self.path = path


def init_weights(model, source: str, restart: tuple[str, ...] = (), why: str = "") -> None:
    """Start from a trained run's weights (``--init``): a run directory (its best weights, else its last)
    or a ``.weights.h5``.

    A model of another point count (another scheme) keeps every layer whose weights fit -- the backbone
    and decoder -- and starts the others (the head, whose size depends on K) fresh; one line names them.
    The layers named in ``restart`` (paths, as ``head_layers`` gives them) start fresh too, even where their
    weights fit: the head of a run of another markup with as many points, whose outputs mean other points;
    ``why`` ends the line. A model none of whose layers fit is an error naming the file.
    """
    path = Path(source)
    if path.is_dir():
        path = choose_checkpoint(path, read_state(path, strict=False))
    elif not path.is_file():
        raise CheckpointError(f"{source}: no such run directory or weights file (--init)")
    elif problem := _open_problem(path):
        raise CheckpointError(f"{path}: {problem} (--init)")
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
            return
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
    (kept, restarted) layer paths.  Every float variable is first set to NaN, so one still NaN after
    the load was skipped: it gets its fresh initial value back."""
    floats = [v for v in model.weights if "float" in str(v.dtype)]
    initial = [keras.ops.convert_to_numpy(v) for v in floats]
    for variable, value in zip(floats, initial):
        variable.assign(np.full(value.shape, np.nan, value.dtype))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras warns once per skipped layer; the one line of init_weights says it all
        try:
            model.load_weights(path, skip_mismatch=True)
        except ValueError:
            pass
    layers: dict[str, bool] = {}
    for variable, value in zip(floats, initial):
        skipped = bool(np.isnan(keras.ops.convert_to_numpy(variable)).all()) and value.size > 0
        if skipped:
            variable.assign(value)
        layer = variable.path.rsplit("/", 1)[0]
        layers[layer] = layers.get(layer, True) and not skipped
    return [n for n, ok in layers.items() if ok], [n for n, ok in layers.items() if not ok]
