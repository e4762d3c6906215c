"""The machinery behind ``train.py``: run config, data feeding, callbacks, resume.

A run directory holds everything needed to reuse a run without re-typing
flags::

    config.json          every setting, the data files and their scheme
    best.weights.h5      weights (and optimizer state) of the best val_loss
    last.weights.h5      weights + optimizer state after the last epoch
    state.json           epoch, learning rate and callback counters for --resume
    model.keras          the final model (best weights), loadable on its own
    history.csv          one row per epoch
    logs/                TensorBoard: losses, NME, learning rate, preview images
    summary.json         best epoch and its validation figures
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import keras

import dataset_io
from landmarks import get_scheme

OPTIMIZERS = ("adam", "nadam", "rmsprop", "sgd", "adamw")
SCHEDULES = ("plateau", "cosine", "constant")


@dataclass
class TrainConfig:
    """Every setting of a training run; saved as ``config.json`` in the run directory."""

    model: str
    data: str
    run_dir: str
    val: str | None = None
    val_fraction: float = 0.1
    size: int | None = None
    epochs: int = 100
    batch: int = 32
    optimizer: str = "adam"
    lr: float = 1e-3
    schedule: str = "plateau"
    loss: str = "mse"
    loss_options: dict = field(default_factory=dict)
    weights: str = "none"
    train_blocks: int | None = None
    model_options: dict = field(default_factory=dict)
    augment: str = "default"
    seed: int = 0
    mixed_precision: bool = False
    patience: int = 15
    preview_every: int = 5
    pretrain_epochs: int = 10
    workers: int = 1
    distribute: str = "none"
    # filled in from the data when the run starts
    scheme: str | None = None
    num_points: int | None = None
    input_shape: list | None = None
    input_kind: str | None = None

    def validate(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"--schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.epochs < 1 or self.batch < 1:
            raise ValueError(f"--epochs and --batch must be >= 1, got {self.epochs} and {self.batch}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")
        if self.lr <= 0:
            raise ValueError(f"--lr must be positive, got {self.lr}")

    def save(self, path: Path) -> None:
        _write_json_atomic(path, dataclasses.asdict(self))

    @classmethod
    def load(cls, path: Path) -> "TrainConfig":
        try:
            values = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: cannot read run config ({err})") from err
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


def _write_json_atomic(path: Path, values) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(values, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


# ----------------------------------------------------------------------------
# Data


def load_split(config: TrainConfig):
    """Training and validation arrays, the validation split taken by subject."""
    train = dataset_io.load_npz(config.data)
    if config.val:
        val = dataset_io.load_npz(config.val)
        if str(val["scheme"]) != str(train["scheme"]):
            raise ValueError(f"{config.val}: scheme {val['scheme']} differs from {config.data}'s {train['scheme']}")
    elif config.val_fraction > 0:
        train_idx, val_idx = split_by_subject(train["subject"], config.val_fraction, config.seed)
        train, val = dataset_io.subset(train, train_idx), dataset_io.subset(train, val_idx)
    else:
        val = None
    return train, val


def split_by_subject(subjects: np.ndarray, fraction: float, seed: int):
    """Indices (train, val): whole subjects go to validation until it holds ``fraction`` of the faces."""
    subjects = np.asarray(subjects).astype(str)
    unique, counts = np.unique(subjects, return_counts=True)
    if len(unique) < 2:
        raise ValueError("a validation split by subject needs at least two subjects; pass --val FILE instead")
    order = np.random.default_rng(seed).permutation(len(unique))
    target = fraction * len(subjects)
    chosen, total = [], 0
    for i in order:
        if total >= target:
            break
        chosen.append(unique[i])
        total += counts[i]
    if len(chosen) == len(unique):
        chosen.pop()
    is_val = np.isin(subjects, chosen)
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def model_inputs(arrays: dict, size: int | None) -> np.ndarray:
    """Images resized to ``size`` (landmarks are normalised, so they do not move), or features."""
    if "features" in arrays:
        return arrays["features"].astype(np.float32, copy=False)
    images = arrays["images"]
    if size is None or images.shape[1] == size:
        return images
    import cv2

    channels = images.shape[3]
    out = np.empty((len(images), size, size, channels), np.uint8)
    interpolation = cv2.INTER_AREA if size < images.shape[1] else cv2.INTER_LINEAR
    for i, image in enumerate(images):
        out[i] = cv2.resize(image, (size, size), interpolation=interpolation).reshape(size, size, channels)
    return out


class LandmarkBatches(keras.utils.PyDataset):
    """Shuffled, optionally augmented batches of (inputs, packed targets).

    The order of epoch ``e`` and the augmentation of each batch depend only
    on ``seed``, ``e`` and the batch index -- not on which loader thread
    makes the batch -- so a resumed run sees the same batches as an
    uninterrupted one.  The last, partial batch is kept.
    """

    def __init__(self, inputs, landmarks, visible, batch_size, augmenter=None, shuffle=True, seed=0, **kwargs):
        super().__init__(**kwargs)
        from losses import pack_targets

        self._pack = pack_targets
        self.inputs, self.landmarks, self.visible = inputs, landmarks, visible
        self.batch_size, self.augmenter, self.shuffle, self.seed = batch_size, augmenter, shuffle, seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        n = len(self.landmarks)
        self.epoch = epoch
        self.order = np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle else np.arange(n)

    def __len__(self):
        return math.ceil(len(self.landmarks) / self.batch_size)

    def __getitem__(self, index):
        rows = np.sort(self.order[index * self.batch_size:(index + 1) * self.batch_size])
        x, landmarks, visible = self.inputs[rows], self.landmarks[rows], self.visible[rows]
        if self.augmenter is not None:
            rng = np.random.default_rng([self.seed, self.epoch, index, 1])
            x, landmarks, visible = self.augmenter(x, landmarks, visible, rng=rng)
        return np.asarray(x, np.float32), self._pack(landmarks, visible)


class EpochOrder(keras.callbacks.Callback):
    """Tells the training batches which epoch begins (their shuffle depends on it)."""

    def __init__(self, batches: LandmarkBatches):
        super().__init__()
        self.batches = batches

    def on_epoch_begin(self, epoch, logs=None):
        self.batches.set_epoch(epoch)


# ----------------------------------------------------------------------------
# Learning rate


def cosine_lr(base: float, epochs: int, final_fraction: float = 0.01):
    def schedule(epoch, lr=None):
        progress = min(epoch, epochs - 1) / max(1, epochs - 1)
        return float(base * (final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * progress))))

    return schedule


class LearningRateLogger(keras.callbacks.Callback):
    """Puts the epoch's learning rate into the logs (history.csv, TensorBoard)."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


def make_optimizer(name: str, lr: float):
    factories = {
        "adam": keras.optimizers.Adam,
        "nadam": keras.optimizers.Nadam,
        "rmsprop": keras.optimizers.RMSprop,
        "sgd": lambda learning_rate: keras.optimizers.SGD(learning_rate, momentum=0.9, nesterov=True),
        "adamw": keras.optimizers.AdamW,
    }
    return factories[name](learning_rate=lr)


# ----------------------------------------------------------------------------
# Checkpoints and resume


class ResumeCheckpoint(keras.callbacks.Callback):
    """After every epoch: ``last.weights.h5`` (weights + optimizer state) and ``state.json``.

    ``state.json`` records the finished epoch and the counters of the
    callbacks that carry state across epochs (best value so far, patience
    used), so ``--resume`` continues exactly where the run stopped.  Both
    files are written to a temporary name and renamed, so a run killed while
    saving keeps the previous epoch's checkpoint.
    """

    def __init__(self, run_dir: Path, stateful: dict):
        super().__init__()
        self.run_dir = Path(run_dir)
        self.stateful = stateful

    def on_epoch_end(self, epoch, logs=None):
        tmp = self.run_dir / ".last.weights.h5.tmp.weights.h5"
        self.model.save_weights(tmp)
        os.replace(tmp, self.run_dir / "last.weights.h5")
        state = {"epoch": epoch, "learning_rate": float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))}
        for name, callback in self.stateful.items():
            state[name] = {k: _jsonable(getattr(callback, k)) for k in STATE_FIELDS[type(callback).__name__]}
        _write_json_atomic(self.run_dir / "state.json", state)


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


def scheme_for(arrays: dict):
    return get_scheme(str(arrays["scheme"]))


class PreviewImages(keras.callbacks.Callback):
    """Every ``every`` epochs, draws predictions (red) and ground truth (green) on
    validation faces into TensorBoard (``logs/previews``)."""

    def __init__(self, log_dir: Path, images, landmarks, visible, every: int = 5, count: int = 8):
        super().__init__()
        self.log_dir = Path(log_dir)
        self.every = max(1, every)
        self.images, self.landmarks, self.visible = images[:count], landmarks[:count], visible[:count]
        self._writer = None

    def _summary(self):
        import tensorflow as tf  # TensorBoard's writer; available with either backend

        if self._writer is None:
            self._writer = tf.summary.create_file_writer(str(self.log_dir / "previews"))
        return tf, self._writer

    def render(self) -> np.ndarray:
        from drawing import draw_crop, grid

        pred = np.asarray(self.model.predict(self.images.astype(np.float32), verbose=0))
        pred = pred.reshape(self.landmarks.shape)
        scale = max(1, 192 // self.images.shape[1])
        tiles = [draw_crop(img, p, g, v, scale=scale) for img, p, g, v in zip(self.images, pred, self.landmarks, self.visible)]
        return grid(tiles, columns=4)

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every:
            return
        tf, writer = self._summary()
        with writer.as_default():
            tf.summary.image("validation predictions", self.render()[None], step=epoch)
        writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()


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


def set_precision(enabled: bool) -> str:
    """'mixed_float16' on a GPU, 'mixed_bfloat16' on a CPU, 'float32' when disabled."""
    if not enabled:
        policy = "float32"
    else:
        policy = "mixed_float16" if _has_gpu() else "mixed_bfloat16"
    keras.mixed_precision.set_global_policy(policy)
    return policy


def _has_gpu() -> bool:
    backend = keras.config.backend()
    if backend == "jax":
        import jax

        return any(d.platform == "gpu" for d in jax.devices())
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    return False


def fit(config: TrainConfig, resume: bool = False, verbose: int = 2) -> dict:
    """Train ``config.model`` as configured; returns the run's summary dict."""
    import losses
    import metrics
    import models

    run_dir = Path(config.run_dir)
    state = None
    if resume:
        state_path = run_dir / "state.json"
        if not (state_path.is_file() and (run_dir / "last.weights.h5").is_file()):
            raise FileNotFoundError(f"{run_dir}: nothing to resume (no state.json / last.weights.h5)")
        state = json.loads(state_path.read_text())
    elif (run_dir / "last.weights.h5").exists() or (run_dir / "model.keras").exists():
        raise FileExistsError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --run-dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    config.validate()
    keras.utils.set_random_seed(config.seed)
    set_precision(config.mixed_precision)

    train, val = load_split(config)
    scheme = scheme_for(train)
    spec = models.get_spec(config.model)
    x_train = model_inputs(train, config.size)
    x_val = model_inputs(val, config.size) if val is not None else None
    input_kind = "features" if "features" in train else "image"
    if input_kind != spec.input_kind:
        raise ValueError(
            f"model {config.model!r} takes {spec.input_kind}s but {config.data} holds {input_kind}s"
            + (" (make features with `datagen.py bottleneck`)" if spec.input_kind == "features" else "")
        )
    config.scheme, config.num_points = scheme.name, scheme.num_points
    config.input_shape, config.input_kind = list(x_train.shape[1:]), input_kind
    if not resume:
        config.save(run_dir / "config.json")

    model = models.build_model(
        config.model,
        input_shape=tuple(config.input_shape),
        num_points=scheme.num_points,
        weights=config.weights,
        train_blocks=config.train_blocks,
        **config.model_options,
    )
    if spec.pretrain is not None and not resume:
        print(f"pretraining {config.model} ({config.pretrain_epochs} epochs)")
        models.pretrain(config.model, model, x_train, epochs=config.pretrain_epochs, batch_size=config.batch)

    tracked = [losses.get_loss("mse", name="mse")]
    if scheme.norm_points is not None:  # region and box schemes have no eye corners
        tracked.insert(0, losses.NormalizedMeanError(scheme.norm_points, name="nme"))
    model.compile(
        optimizer=make_optimizer(config.optimizer, config.lr),
        loss=losses.get_loss(config.loss, **config.loss_options),
        metrics=tracked,
    )

    augmenter = None
    if input_kind == "image" and config.augment not in ("none", ""):
        import augment

        augmenter = augment.Augmenter(augment.AugmentConfig.parse(config.augment), scheme, seed=config.seed)
    batches = LandmarkBatches(
        x_train, train["landmarks"], train["visible"], config.batch, augmenter, seed=config.seed,
        workers=config.workers, use_multiprocessing=False,
    )
    val_data = None
    if val is not None:
        val_data = (x_val.astype(np.float32), losses.pack_targets(val["landmarks"], val["visible"]))

    monitor = "val_loss" if val is not None else "loss"
    best = keras.callbacks.ModelCheckpoint(
        str(run_dir / "best.weights.h5"), monitor=monitor, save_best_only=True, save_weights_only=True
    )
    early = keras.callbacks.EarlyStopping(monitor=monitor, patience=config.patience, restore_best_weights=True)
    stateful = {"ModelCheckpoint": best, "EarlyStopping": early}
    callbacks = [EpochOrder(batches), LearningRateLogger()]
    if config.schedule == "plateau":
        plateau = keras.callbacks.ReduceLROnPlateau(
            monitor=monitor, factor=0.5, patience=max(2, config.patience // 3), min_lr=config.lr * 1e-3
        )
        stateful["ReduceLROnPlateau"] = plateau
        callbacks.append(plateau)
    elif config.schedule == "cosine":
        callbacks.append(keras.callbacks.LearningRateScheduler(cosine_lr(config.lr, config.epochs)))
    callbacks += [best, early, ResumeCheckpoint(run_dir, stateful)]
    callbacks.append(keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=resume))
    callbacks.append(keras.callbacks.TensorBoard(str(run_dir / "logs"), write_graph=False))
    if val is not None and input_kind == "image" and config.preview_every > 0:
        callbacks.append(PreviewImages(run_dir / "logs", x_val, val["landmarks"], val["visible"], config.preview_every))

    initial_epoch = 0
    if resume:
        model.optimizer.build(model.trainable_variables)
        best_weights = None
        if (run_dir / "best.weights.h5").is_file():
            model.load_weights(run_dir / "best.weights.h5")
            best_weights = model.get_weights()
        model.load_weights(run_dir / "last.weights.h5")
        model.optimizer.learning_rate.assign(state["learning_rate"])
        initial_epoch = state["epoch"] + 1
        trim_history(run_dir / "history.csv", state["epoch"])
        callbacks.append(RestoreCallbackState(state, stateful, best_weights))
        print(f"resuming {run_dir} at epoch {initial_epoch + 1} (learning rate {state['learning_rate']:.3g})")

    start = time.time()
    if initial_epoch < config.epochs:
        model.fit(
            batches, validation_data=val_data, epochs=config.epochs, initial_epoch=initial_epoch,
            callbacks=callbacks, verbose=verbose,
        )
    if (run_dir / "best.weights.h5").is_file():
        model.load_weights(run_dir / "best.weights.h5")
    tmp = run_dir / ".model.tmp.keras"
    model.save(tmp)
    os.replace(tmp, run_dir / "model.keras")

    summary = {"model": config.model, "train_seconds": round(time.time() - start, 1)}
    epochs_run = read_history_epochs(run_dir / "history.csv")
    summary["epochs"] = (max(epochs_run) + 1) if epochs_run else 0
    if val is not None:
        pred = np.asarray(model.predict(x_val.astype(np.float32), batch_size=config.batch, verbose=0))
        pred = pred.reshape(val["landmarks"].shape)
        if scheme.norm_points is not None:
            scores = metrics.summarize(pred, val["landmarks"], val["visible"], scheme)
            summary.update({"val_" + k: v for k, v in scores.items()})
        summary["val_mse"] = metrics.masked_mse(pred, val["landmarks"], val["visible"])
    summary["best_epoch"] = _best_epoch(run_dir / "history.csv", monitor)
    _write_json_atomic(run_dir / "summary.json", summary)
    return summary


def _best_epoch(path: Path, monitor: str):
    if not path.is_file():
        return None
    with open(path, newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r.get(monitor)]
    if not rows:
        return None
    return int(min(rows, key=lambda r: float(r[monitor]))["epoch"]) + 1
