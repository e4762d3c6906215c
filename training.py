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
import threading
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
    min_delta: float = 1e-4  # smallest val-loss drop that counts as an improvement (early stopping and plateau)
    preview_every: int = 5
    pretrain_epochs: int = 10
    workers: int = 1
    distribute: str = "none"
    jit_compile: str = "auto"
    init: str | None = None  # a run directory or .weights.h5 of the same model to start from
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
        if self.patience < 1 or not self.min_delta >= 0:
            raise ValueError(f"--patience must be >= 1 and --min-delta >= 0, got {self.patience} and {self.min_delta}")
        if self.jit_compile not in JIT_MODES:
            raise ValueError(f"--jit-compile must be one of {', '.join(JIT_MODES)}, got {self.jit_compile!r}")

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
    """Training data (arrays, or a ``ShardSet`` streamed from disk) and validation arrays.

    A validation split taken from in-memory training data is by subject;
    sharded training data needs ``--val`` (a subject split would have to read
    every shard first).
    """
    if dataset_io.is_manifest(config.data):
        train = dataset_io.ShardSet(config.data)
        if not config.val:
            raise ValueError(f"{config.data} is sharded: give the validation set with --val (an npz or a manifest)")
        scheme = train.scheme.name
    else:
        train = dataset_io.load_npz(config.data)
        scheme = str(train["scheme"])
    if config.val:
        val = load_all(config.val)
        if str(val["scheme"]) != scheme:
            raise ValueError(f"{config.val}: scheme {val['scheme']} differs from {config.data}'s {scheme}")
    elif config.val_fraction > 0:
        train_idx, val_idx = split_by_subject(train["subject"], config.val_fraction, config.seed)
        train, val = dataset_io.subset(train, train_idx), dataset_io.subset(train, val_idx)
    else:
        val = None
    return train, val


def load_all(path) -> dict:
    """An npz, or every shard of a manifest joined (for validation sets, which are small)."""
    if dataset_io.is_manifest(path):
        shards = dataset_io.ShardSet(path)
        return dataset_io.concatenate([shards.load(i) for i in range(len(shards))])
    return dataset_io.load_npz(path)


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


class FaceParts:
    """Training faces as parts read one at a time: one in-memory part, or the shards of a manifest.

    A worker of a cluster takes every ``workers``-th part (shards), or every
    ``workers``-th face (in-memory data), so workers never share a face.
    """

    def __init__(self, data, size: int | None, worker_index: int = 0, workers: int = 1):
        self.size = size
        if isinstance(data, dataset_io.ShardSet):
            self.shards = data
            self.indices = list(range(worker_index, len(data), workers))
            if not self.indices:
                raise ValueError(f"{data.manifest}: {len(data)} shard(s) for {workers} workers; write smaller shards")
            self.counts = [data.counts[i] for i in self.indices]
            self._memory = None
        else:
            rows = np.arange(worker_index, len(data["landmarks"]), workers)
            self.shards, self.indices, self.counts = None, [0], [len(rows)]
            self._memory = (model_inputs(dataset_io.subset(data, rows), size), data["landmarks"][rows], data["visible"][rows])
        self._cache, self._lock = {}, threading.Lock()

    @property
    def faces(self) -> int:
        return sum(self.counts)

    def get(self, part: int):
        """(inputs, landmarks, visible) of part ``part``; keeps the two most recent shards loaded."""
        if self._memory is not None:
            return self._memory
        with self._lock:
            if part not in self._cache:
                arrays = self.shards.load(self.indices[part])
                self._cache[part] = (model_inputs(arrays, self.size), arrays["landmarks"], arrays["visible"])
                while len(self._cache) > 2:
                    self._cache.pop(next(iter(self._cache)))
            return self._cache[part]


class LandmarkBatches(keras.utils.PyDataset):
    """Shuffled, optionally augmented batches of (inputs, packed targets).

    Each epoch shuffles the order of the parts and the faces inside each part
    (batches never span two shards, so at most two shards are in memory).
    The order of epoch ``e`` and the augmentation of each batch depend only
    on ``seed``, ``e`` and the batch index -- not on which loader thread
    makes the batch -- so a resumed run sees the same batches as an
    uninterrupted one.  The last, partial batch of a part is kept unless
    ``drop_remainder``.
    """

    def __init__(self, parts: FaceParts, batch_size, augmenter=None, shuffle=True, seed=0, drop_remainder=False, **kwargs):
        super().__init__(**kwargs)
        from losses import pack_targets

        if batch_size > parts.faces:
            raise ValueError(f"batch size {batch_size} is larger than the {parts.faces} training faces")
        self._pack = pack_targets
        self.parts, self.batch_size, self.augmenter = parts, batch_size, augmenter
        self.shuffle, self.seed, self.drop_remainder = shuffle, seed, drop_remainder
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.parts.counts)) if self.shuffle else range(len(self.parts.counts))
        self.epoch, self.plan = epoch, []
        for part in order:
            rows = rng.permutation(self.parts.counts[part]) if self.shuffle else np.arange(self.parts.counts[part])
            stop = len(rows) - len(rows) % self.batch_size if self.drop_remainder else len(rows)
            self.plan += [(part, np.sort(rows[i:i + self.batch_size])) for i in range(0, stop, self.batch_size)]

    def __len__(self):
        return len(self.plan)

    def __getitem__(self, index):
        part, rows = self.plan[index]
        inputs, landmarks, visible = self.parts.get(part)
        x, landmarks, visible = inputs[rows], landmarks[rows], visible[rows]
        if self.augmenter is not None:
            rng = np.random.default_rng([self.seed, self.epoch, index, 1])
            x, landmarks, visible = self.augmenter(x, landmarks, visible, rng=rng)
        return np.asarray(x, np.float32), self._pack(landmarks, visible)

    def endless(self):
        """Batches epoch after epoch (for a tf.data pipeline under a tf.distribute strategy)."""
        epoch = 0
        while True:
            self.set_epoch(epoch)
            for index in range(len(self)):
                yield self[index]
            epoch += 1


def tf_input_pipeline(batches: LandmarkBatches, batch_size: int, input_shape, num_points: int):
    """A tf.data pipeline of fixed-size batches from ``batches``, for tf.distribute strategies.

    Every step gets a full batch (faces flow on into the next pass over the
    data), so the last partial batch never breaks a synchronous step; each
    worker feeds its own faces, so the strategy must not shard the data.
    """
    import tensorflow as tf

    signature = (
        tf.TensorSpec((None, *input_shape), tf.float32),
        tf.TensorSpec((None, num_points, 3), tf.float32),
    )
    dataset = tf.data.Dataset.from_generator(batches.endless, output_signature=signature)
    dataset = dataset.rebatch(batch_size, drop_remainder=True).prefetch(2)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return dataset.with_options(options)


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


class CosineSchedule(keras.callbacks.Callback):
    """Cosine decay from ``base`` to 1 % of it over ``epochs``, set at each epoch's start."""

    def __init__(self, base: float, epochs: int):
        super().__init__()
        self.schedule = cosine_lr(base, epochs)

    def on_epoch_begin(self, epoch, logs=None):
        self.model.optimizer.learning_rate.assign(self.schedule(epoch))


class LearningRateLogger(keras.callbacks.Callback):
    """Puts the epoch's learning rate and duration (seconds) into the logs (history.csv, TensorBoard)."""

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            logs["epoch_seconds"] = round(time.perf_counter() - self._started, 2)


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

    def __init__(self, log_dir: Path, images, landmarks, visible, every: int = 5, count: int = 8, cluster=None, batch=32):
        super().__init__()
        self.cluster, self.batch = cluster, batch
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

        pred = predict_all(self.model, self.images.astype(np.float32), self.batch, self.cluster)
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
    import distribute
    import models

    run_dir = Path(config.run_dir)
    state = _check_run_dir(run_dir, resume)
    config.validate()
    cluster = distribute.setup(config.distribute)
    try:
        keras.utils.set_random_seed(config.seed)
        set_precision(config.mixed_precision)
        out_dir = Path(cluster.output_dir(str(run_dir)))
        out_dir.mkdir(parents=True, exist_ok=True)

        train, val = load_split(config)
        scheme = train.scheme if isinstance(train, dataset_io.ShardSet) else scheme_for(train)
        parts = FaceParts(train, config.size, cluster.worker_index, cluster.workers)
        x_val = model_inputs(val, config.size) if val is not None else None
        spec = models.get_spec(config.model)
        sample = parts.get(0)[0]
        input_kind = "image" if sample.ndim == 4 else "features"
        if input_kind != spec.input_kind:
            words = {"image": "images", "features": "features"}
            raise ValueError(
                f"model {config.model!r} takes {words[spec.input_kind]} but {config.data} holds {words[input_kind]}"
                + (" (make features with `datagen.py bottleneck`)" if spec.input_kind == "features" else "")
            )
        config.scheme, config.num_points = scheme.name, scheme.num_points
        config.input_shape, config.input_kind = list(sample.shape[1:]), input_kind
        if not resume:
            config.save(out_dir / "config.json")

        with cluster.scope():
            model = models.build_model(
                config.model, input_shape=tuple(config.input_shape), num_points=scheme.num_points,
                weights=config.weights, train_blocks=config.train_blocks, **config.model_options,
            )
            if config.init and not resume:
                init_weights(model, config.init)
            elif spec.pretrain is not None and not resume:
                print(f"pretraining {config.model} ({config.pretrain_epochs} epochs)")
                models.pretrain(config.model, model, sample, epochs=config.pretrain_epochs, batch_size=config.batch)
            _compile(model, config, scheme, cluster)

        global_batch = cluster.global_batch(config.batch)
        augmenter = None
        if input_kind == "image" and config.augment not in ("none", ""):
            import augment

            augmenter = augment.Augmenter(augment.AugmentConfig.parse(config.augment), scheme, seed=config.seed)
        per_worker = global_batch // cluster.workers
        batches = LandmarkBatches(
            parts, per_worker, augmenter, seed=config.seed + cluster.worker_index,
            drop_remainder=cluster.mode == "data-parallel", workers=config.workers, use_multiprocessing=False,
        )
        if cluster.strategy is not None:
            train_data = tf_input_pipeline(batches, per_worker, config.input_shape, scheme.num_points)
            steps = max(1, cluster_faces(train, cluster.workers) // per_worker)
        else:
            train_data, steps = batches, None
        val_data = None
        if val is not None:
            from losses import pack_targets

            # under data parallelism every batch must split evenly over the devices: pad the
            # validation set with faces that have no visible point (they carry no loss, no NME)
            x_padded, targets = pad_rows(x_val.astype(np.float32), pack_targets(val["landmarks"], val["visible"]),
                                         multiple=global_batch if cluster.mode == "data-parallel" else 1)
            val_data = (x_padded, targets)

        monitor = "val_loss" if val is not None else "loss"
        callbacks, stateful = make_callbacks(
            config, out_dir, monitor, batches, val, x_val, input_kind, resume, cluster.scaled_lr(config.lr),
            cluster, global_batch,
        )
        initial_epoch = 0
        if resume:
            initial_epoch = restore_for_resume(model, run_dir, out_dir, state, stateful, callbacks)

        start = time.time()
        if initial_epoch < config.epochs:
            model.fit(
                train_data, validation_data=val_data, epochs=config.epochs, initial_epoch=initial_epoch,
                steps_per_epoch=steps, callbacks=callbacks, verbose=verbose if cluster.is_chief else 0,
                validation_batch_size=global_batch,
            )
        return finish(model, config, out_dir, monitor, val, x_val, scheme, start, cluster, global_batch)
    finally:
        cluster.close()


def _check_run_dir(run_dir: Path, resume: bool):
    if resume:
        state_path = run_dir / "state.json"
        if not (state_path.is_file() and (run_dir / "last.weights.h5").is_file()):
            raise FileNotFoundError(f"{run_dir}: nothing to resume (no state.json / last.weights.h5)")
        return json.loads(state_path.read_text())
    if (run_dir / "last.weights.h5").exists() or (run_dir / "model.keras").exists():
        raise FileExistsError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --run-dir")
    return None


def cluster_faces(train, workers: int) -> int:
    """Faces of the worker with the fewest: every worker must take the same number of steps."""
    if isinstance(train, dataset_io.ShardSet):
        return min(sum(train.counts[i::workers]) for i in range(workers))
    return len(train["landmarks"]) // workers


JIT_MODES = ("auto", "on", "off")


def resolve_jit_compile(mode: str = "auto") -> bool:
    """Whether to compile train steps with XLA.

    'auto' is off for TensorFlow on a CPU-only machine: XLA's CPU depthwise and
    large-kernel convolutions are several times slower than TensorFlow's own
    kernels (MobileNetV2 at 128 px, batch 32: 5.4 images/s with XLA, 27
    without, timed with train_on_batch on the 2-core machine; compare with
    benchmarks/train_throughput.py --jit-compile on|off).  JAX has no other
    compiler: 'auto' is on there.
    """
    if mode == "on":
        return True
    if mode == "off":
        return False
    if keras.config.backend() == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    return True


def _compile(model, config: TrainConfig, scheme, cluster) -> None:
    import losses

    tracked = [keras.metrics.MeanMetricWrapper(losses.get_loss("mse"), name="mse")]
    if scheme.norm_points is not None:  # region and box schemes have no eye corners
        tracked.insert(0, losses.NormalizedMeanError(scheme.norm_points, name="nme"))
    model.compile(
        optimizer=make_optimizer(config.optimizer, cluster.scaled_lr(config.lr)),
        loss=losses.get_loss(config.loss, **config.loss_options),
        metrics=tracked,
        jit_compile=resolve_jit_compile(config.jit_compile),
    )


def make_callbacks(config, out_dir: Path, monitor, batches, val, x_val, input_kind, resume, lr: float, cluster=None,
                   global_batch: int = 32):
    """The run's callbacks (in the order they must run) and the stateful ones, by class name.

    ``lr`` is the base learning rate after scaling for the number of replicas.
    """
    best = keras.callbacks.ModelCheckpoint(
        str(out_dir / "best.weights.h5"), monitor=monitor, save_best_only=True, save_weights_only=True
    )
    early = keras.callbacks.EarlyStopping(monitor=monitor, patience=config.patience, min_delta=config.min_delta,
                                          restore_best_weights=True)
    stateful = {"ModelCheckpoint": best, "EarlyStopping": early}
    callbacks = [EpochOrder(batches), LearningRateLogger()]
    if config.schedule == "plateau":
        plateau = keras.callbacks.ReduceLROnPlateau(
            monitor=monitor, factor=0.5, patience=max(2, config.patience // 3), min_delta=config.min_delta,
            min_lr=lr * 1e-3,
        )
        stateful["ReduceLROnPlateau"] = plateau
        callbacks.append(plateau)
    elif config.schedule == "cosine":
        callbacks.append(CosineSchedule(lr, config.epochs))
    callbacks += [best, early, ResumeCheckpoint(out_dir, stateful)]
    callbacks.append(keras.callbacks.CSVLogger(str(out_dir / "history.csv"), append=resume))
    callbacks.append(keras.callbacks.TensorBoard(str(out_dir / "logs"), write_graph=False))
    if val is not None and input_kind == "image" and config.preview_every > 0:
        callbacks.append(PreviewImages(out_dir / "logs", x_val, val["landmarks"], val["visible"], config.preview_every,
                                       cluster=cluster, batch=global_batch))
    return callbacks, stateful


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


def pad_rows(x: np.ndarray, targets: np.ndarray | None, multiple: int):
    """Rows added so the count is a multiple of ``multiple``; padded targets are invisible."""
    extra = -len(x) % multiple
    if not extra:
        return x, targets
    x = np.concatenate([x, np.repeat(x[:1], extra, axis=0)])
    if targets is not None:
        targets = np.concatenate([targets, np.zeros((extra, *targets.shape[1:]), targets.dtype)])
    return x, targets


def predict_all(model, x: np.ndarray, batch: int, cluster=None) -> np.ndarray:
    """Predictions for every row; batches padded to split evenly under data parallelism."""
    multiple = batch if cluster is not None and cluster.mode == "data-parallel" else 1
    padded, _ = pad_rows(x, None, multiple)
    return np.asarray(model.predict(padded, batch_size=batch, verbose=0))[: len(x)]


def finish(model, config, out_dir: Path, monitor, val, x_val, scheme, start: float, cluster, global_batch: int) -> dict:
    """Best weights into ``model.keras`` and the validation summary (written by the chief)."""
    import metrics

    if (out_dir / "best.weights.h5").is_file():
        model.load_weights(out_dir / "best.weights.h5")
    summary = {"model": config.model, "train_seconds": round(time.time() - start, 1)}
    epochs_run = read_history_epochs(out_dir / "history.csv")
    summary["epochs"] = (max(epochs_run) + 1) if epochs_run else 0
    summary["stopped_by"] = "early stopping" if summary["epochs"] < config.epochs else "epoch budget"
    if val is not None:  # every worker predicts: under a strategy this is a collective step
        pred = predict_all(model, x_val.astype(np.float32), global_batch, cluster).reshape(val["landmarks"].shape)
        if scheme.norm_points is not None:
            scores = metrics.summarize(pred, val["landmarks"], val["visible"], scheme)
            summary.update({"val_" + k: v for k, v in scores.items()})
        summary["val_mse"] = metrics.masked_mse(pred, val["landmarks"], val["visible"])
    summary["best_epoch"] = _best_epoch(out_dir / "history.csv", monitor)
    summary["weights_sha1"] = weights_fingerprint(model)
    if cluster.is_chief:
        tmp = out_dir / ".model.tmp.keras"
        model.save(tmp)
        os.replace(tmp, out_dir / "model.keras")
        _write_json_atomic(out_dir / "summary.json", summary)
    return summary


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
