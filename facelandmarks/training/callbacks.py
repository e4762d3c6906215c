"""The callbacks of a run: learning-rate schedules and logs, epoch order, preview images, resumable checkpoints."""

from __future__ import annotations

import math
import time
from pathlib import Path

import keras
import numpy as np

from facelandmarks import runtime
from facelandmarks.data.feeding import LandmarkBatches
from facelandmarks.training.distribute import predict_all
from facelandmarks.training.resume import BEST, LAST, callback_state, commit_set


class EpochOrder(keras.callbacks.Callback):
    """Tells the training batches which epoch begins (their shuffle depends on it)."""

    def __init__(self, batches: LandmarkBatches):
        super().__init__()
        self.batches = batches

    def on_epoch_begin(self, epoch, logs=None):
        self.batches.set_epoch(epoch)


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


class CheckpointSet(keras.callbacks.Callback):
    """After every epoch: ``best.weights.h5`` (when ``monitor`` improved), ``last.weights.h5`` and
    ``state.json``, committed as one set (``resume.commit_set``: pending names, then the state, then renames).

    It replaces Keras' ``ModelCheckpoint(save_best_only=True)``, which writes the best weights in place,
    so a kill during that write left a torn file under the final name.  The best-so-far semantics are
    Keras': the first epoch is an improvement, later ones when ``monitor`` is strictly lower.  The
    weights files hold the optimizer state too.  ``state.json`` records the finished epoch, the
    learning rate and the counters of ``stateful`` (this callback's own ``best`` among them, under
    ``ModelCheckpoint`` as before), so ``--resume`` continues exactly where the run stopped.
    """

    def __init__(self, run_dir: Path, monitor: str, stateful: dict):
        super().__init__()
        self.run_dir, self.monitor, self.stateful = Path(run_dir), monitor, stateful
        self.best = None
        self.files: dict = {}  # the records of the committed set (``restore_for_resume`` fills them in)

    def improved(self, logs) -> bool:
        """Whether this epoch's ``monitor`` is the best so far (then it becomes the best); a missing value is not."""
        current = (logs or {}).get(self.monitor)
        if current is None:
            return False
        current = float(keras.ops.convert_to_numpy(current))
        if self.best is None or current < self.best:
            self.best = current
            return True
        return False

    def on_epoch_end(self, epoch, logs=None):
        writers = {LAST: self.model.save_weights}
        if self.improved(logs):
            writers = {BEST: self.model.save_weights, **writers}
        state = {"epoch": epoch, "learning_rate": float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)),
                 **callback_state(self.stateful), "files": self.files}
        self.files = commit_set(self.run_dir, writers, state)


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
        from facelandmarks.drawing import draw_crop, grid

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


class AllocatorSettings(keras.callbacks.Callback):
    """Re-apply ``runtime.tune_allocator`` once the epoch's data iterator exists (tf.data overrides it on start)."""

    def on_train_batch_begin(self, batch, logs=None):
        if batch == 0:
            runtime.tune_allocator()


def tensorboard_available() -> bool:
    """Whether TensorFlow imports (a JAX-only install trains without TensorBoard logs)."""
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        return False
    return True


def make_callbacks(config, out_dir: Path, monitor, batches, val, x_val, input_kind, resume, lr: float, cluster=None,
                   global_batch: int = 32):
    """The run's callbacks (in the order they must run) and the stateful ones, by class name.

    ``lr`` is the base learning rate after scaling for the number of replicas.
    """
    early = keras.callbacks.EarlyStopping(monitor=monitor, patience=config.patience, min_delta=config.min_delta,
                                          restore_best_weights=True)
    stateful = {"EarlyStopping": early}
    checkpoints = CheckpointSet(out_dir, monitor, stateful)
    stateful["ModelCheckpoint"] = checkpoints  # the key old state.json files use for the best value
    callbacks = [AllocatorSettings(), EpochOrder(batches), LearningRateLogger()]
    if config.schedule == "plateau":
        plateau = keras.callbacks.ReduceLROnPlateau(
            monitor=monitor, factor=0.5, patience=max(2, config.patience // 3), min_delta=config.min_delta,
            min_lr=lr * 1e-3,
        )
        stateful["ReduceLROnPlateau"] = plateau
        callbacks.append(plateau)
    elif config.schedule == "cosine":
        callbacks.append(CosineSchedule(lr, config.epochs))
    # the history row goes before the commit: a kill between them leaves a row that resume trims and
    # redoes, never a committed epoch without its row
    callbacks += [early, keras.callbacks.CSVLogger(str(out_dir / "history.csv"), append=resume), checkpoints]
    if not tensorboard_available():  # Keras writes TensorBoard logs with TensorFlow's summary ops
        print("no TensorBoard logs: they need TensorFlow, which is not installed (history.csv has every epoch)")
        return callbacks, stateful
    callbacks.append(keras.callbacks.TensorBoard(str(out_dir / "logs"), write_graph=False))
    if val is not None and input_kind == "image" and config.preview_every > 0:
        callbacks.append(PreviewImages(out_dir / "logs", x_val, val["landmarks"], val["visible"], config.preview_every,
                                       cluster=cluster, batch=global_batch))
    return callbacks, stateful
