"""Resuming a run: callback state, history trimming, weights to start from."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import keras
import numpy as np

STATE_FIELDS = {
    "EarlyStopping": ("wait", "best", "best_epoch", "stopped_epoch"),
    "ReduceLROnPlateau": ("wait", "best", "cooldown_counter"),
    "ModelCheckpoint": ("best",),
}


def _jsonable(value):
    value = keras.ops.convert_to_numpy(value) if hasattr(value, "shape") else value
    if isinstance(value, (np.floating, np.integer)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _from_json(value):
    return float(value) if value in ("inf", "-inf", "nan") else value


def restore_callbacks(state: dict, stateful: dict) -> None:
    for name, callback in stateful.items():
        for key, value in state.get(name, {}).items():
            setattr(callback, key, _from_json(value))


def read_history_epochs(path: Path) -> list[int]:
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle)]


def trim_history(path: Path, last_epoch: int) -> None:
    """Drop rows after ``last_epoch`` (an epoch logged but not checkpointed before a crash)."""
    if not path.is_file():
        return
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
        fields = rows[0].keys() if rows else None
    if not rows:
        return
    kept = [row for row in rows if int(row["epoch"]) <= last_epoch]
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(fields))
        writer.writeheader()
        writer.writerows(kept)
    os.replace(tmp, path)


def init_weights(model, source: str) -> None:
    """Start from a trained run's weights (``--init``): a run directory (its best weights) or a ``.weights.h5``.

    The model, input size and point count must match; a mismatch names the file.
    """
    path = Path(source)
    if path.is_dir():
        path = path / "best.weights.h5"
    if not path.is_file():
        raise FileNotFoundError(f"--init {source}: no {path.name} there")
    try:
        model.load_weights(path)
    except ValueError as err:
        raise ValueError(f"--init {path}: does not fit {model.name} with this input and point count ({err})") from None
    print(f"starting from the weights of {path}")


def restore_for_resume(model, run_dir: Path, out_dir: Path, state: dict, stateful: dict, callbacks: list) -> int:
    """Weights, optimizer state, learning rate and callback counters of the last finished epoch."""
    model.optimizer.build(model.trainable_variables)
    best_weights = None
    if (run_dir / "best.weights.h5").is_file():
        model.load_weights(run_dir / "best.weights.h5")
        best_weights = model.get_weights()
    model.load_weights(run_dir / "last.weights.h5")
    model.optimizer.learning_rate.assign(state["learning_rate"])
    if out_dir == run_dir:
        trim_history(run_dir / "history.csv", state["epoch"])
    callbacks.append(RestoreCallbackState(state, stateful, best_weights))
    print(f"resuming {run_dir} at epoch {state['epoch'] + 2} (learning rate {state['learning_rate']:.3g})")
    return state["epoch"] + 1


def weights_fingerprint(model) -> str:
    """SHA-1 of the model's weights: equal on every worker of a synchronous cluster."""
    import hashlib

    digest = hashlib.sha1()
    for array in model.get_weights():
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _best_epoch(path: Path, monitor: str):
    if not path.is_file():
        return None
    with open(path, newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r.get(monitor)]
    if not rows:
        return None
    return int(min(rows, key=lambda r: float(r[monitor]))["epoch"]) + 1


class RestoreCallbackState(keras.callbacks.Callback):
    """On a resumed run, puts the saved counters back after the other callbacks reset them."""

    def __init__(self, state: dict, stateful: dict, best_weights=None):
        super().__init__()
        self.state, self.stateful, self.best_weights = state, stateful, best_weights

    def on_train_begin(self, logs=None):
        restore_callbacks(self.state, self.stateful)
        early = self.stateful.get("EarlyStopping")
        if early is not None and self.best_weights is not None:
            early.best_weights = self.best_weights
