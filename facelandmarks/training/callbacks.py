"""The callbacks of a run: learning-rate schedules and logs, epoch order, preview images, resumable checkpoints."""

from __future__ import annotations

import math
import time
from pathlib import Path

import keras
import numpy as np

from facelandmarks import runtime, stops
from facelandmarks.data.feeding import LandmarkBatches
from facelandmarks.training.distribute import predict_all
from facelandmarks.training.resume import BEST, LAST, callback_state, commit_set, random_state
from facelandmarks.training.values import parse_duration


class EpochOrder(keras.callbacks.Callback):
    """Tells the training batches which epoch begins (their shuffle depends on it)."""

    def __init__(self, batches: LandmarkBatches):
        super().__init__()
        self.batches = batches

    def on_epoch_begin(self, epoch, logs=None):
        self.batches.set_epoch(epoch)


class CosineSchedule(keras.callbacks.Callback):
    """Cosine decay from ``base`` to 1 % of it over ``epochs``, set at each epoch's start.

    ``reshape`` gives the decay a new end: what is left of it after a finished epoch is spread over the
    epochs up to the new last, so the rate never jumps back up and reaches 1 % at that epoch.
    ``--time-limit`` uses it (``TimeLimit``); ``epochs``, ``anchor_epoch`` and ``anchor_progress`` are
    saved in ``state.json``, so a resumed run keeps the shape.
    """

    def __init__(self, base: float, epochs: int, final_fraction: float = 0.01):
        super().__init__()
        self.base, self.final_fraction = base, final_fraction
        self.epochs, self.anchor_epoch, self.anchor_progress = epochs, 0, 0.0

    def progress(self, epoch: int) -> float:
        """Where ``epoch`` stands on the cosine, from 0 (the base rate) to 1 (the end rate)."""
        span = max(1, self.epochs - 1 - self.anchor_epoch)
        done = min(max(epoch - self.anchor_epoch, 0), span) / span
        return self.anchor_progress + (1.0 - self.anchor_progress) * done

    def rate(self, epoch: int) -> float:
        cosine = 0.5 * (1 + math.cos(math.pi * self.progress(epoch)))
        return float(self.base * (self.final_fraction + (1 - self.final_fraction) * cosine))

    def reshape(self, epochs: int, after_epoch: int) -> None:
        """End the decay at epoch ``epochs - 1`` instead: the decay left after ``after_epoch`` (one that has
        run) is spread evenly over the epochs from the next one to the new last."""
        self.anchor_progress = self.progress(after_epoch)
        self.anchor_epoch, self.epochs = after_epoch, epochs

    def on_epoch_begin(self, epoch, logs=None):
        self.model.optimizer.learning_rate.assign(self.rate(epoch))


def cosine_lr(base: float, epochs: int, final_fraction: float = 0.01):
    """The learning rate of each epoch (a function of it) on a cosine decay that was never reshaped."""
    return CosineSchedule(base, epochs, final_fraction).rate


SHORT_DECAY = 6  # a cut budget below this many epochs gets a hint: at 3 and 4 epochs a constant rate beat the cosine


class TimeLimit(keras.callbacks.Callback):
    """``--time-limit``: the run's epochs end before a wall-clock deadline, its cosine decay too.

    After each epoch the epochs that still fit are counted from the slowest of the last three, with a
    quarter of an epoch kept for the end of the run.  When fewer fit than the budget has left, the
    budget is cut (``end``) and a cosine schedule reshaped to finish at the new end, so the run is
    annealed when the time is up instead of stopped halfway down; when later epochs run faster the end
    moves out again, never past the end the sitting began with, but a decay already spent is not given
    back.  With no epoch left in the time, the run stops.  The first epoch of a sitting also compiles
    (on a GPU 30 times as long as the next): it may stop the run, when not one more epoch of its length
    fits, but it never cuts the budget; the cut waits for an epoch that did not compile, and the first
    epoch no longer counts once one has run.  (Cut after a 131-s first epoch, a cosine that 4-s epochs
    had 40 more epochs for was spent in one.)  ``end`` and
    ``planned`` (the budget it cut) are saved in ``state.json``: ``--resume`` continues to the same end
    at most (its own time limit may cut it further), unless a new ``--epochs`` replaces the budget.
    ``clock`` is replaceable for tests.
    """

    def __init__(self, seconds: float | None, epochs: int, schedule: CosineSchedule | None = None,
                 started: float | None = None, clock=time.monotonic):
        super().__init__()
        self.clock = clock
        self.deadline = None if seconds is None else (clock() if started is None else started) + seconds
        self.schedule = schedule
        self.end, self.planned = epochs, epochs  # the budget as it stands, and the one it was cut from
        self.stopped = False
        self._durations: list[float] = []

    def on_train_begin(self, logs=None):
        self._last = self.clock()
        self._ceiling = self._said = None

    def on_epoch_begin(self, epoch, logs=None):
        if self._ceiling is None:  # after a resume has restored ``end``: this sitting never moves past it
            self._ceiling = self.end

    def epochs_that_fit(self) -> int:
        """How many more epochs fit before the deadline."""
        now = self.clock()
        left = self.deadline - now
        if left <= 0:
            return 0
        # the first epoch of a sitting also compiled: it counts only until another has run
        slowest = max(self._durations[1:][-3:] or self._durations)
        return max(0, int((left - 0.25 * slowest) // slowest))

    def on_epoch_end(self, epoch, logs=None):
        now = self.clock()
        self._durations.append(now - self._last)
        self._last = now
        if self.deadline is not None:
            end = min(self._ceiling, epoch + 1 + self.epochs_that_fit())
            if len(self._durations) == 1 and end > epoch + 1:
                end = self.end  # the sitting's first epoch compiled too: it may stop the run, never cut it
            if end != self.end:
                self._move_end(end, epoch)
        if epoch + 1 >= self.end:
            self.stopped = self.end < self.planned
            self.model.stop_training = True

    def _move_end(self, end: int, epoch: int) -> None:
        self.end = end
        left = self.deadline - self.clock()
        if end <= epoch + 1:
            room = f"in the {left:.0f} s left" if left >= 0 else f"(epoch {epoch + 1} ended {-left:.0f} s past the limit)"
            print(f"time limit: no further epoch fits {room}; the run ends after epoch {epoch + 1}")
            return
        if self.schedule is not None:
            self.schedule.reshape(end, epoch)
        # a line for the first cut, then only when the end moves by a tenth of the epochs left (at least 2)
        if self._said is None or abs(end - self._said) >= max(2, (self._said - epoch) // 10):
            shape = ", the cosine decay reshaped to end there" if self.schedule is not None else ""
            print(f"time limit: the run ends after epoch {end} of {self.planned}: {end - epoch - 1} more fit in "
                  f"the {left:.0f} s left{shape}")
            if self._said is None and self.schedule is not None and end < SHORT_DECAY:
                print(f"time limit: a decay over {end} epochs cost accuracy in every short run measured "
                      "(docs/results.md#a-time-limit-the-demo-recipe-given-8-minutes-cpu-4-dec); "
                      "--schedule constant suits a sitting this short")
            self._said = end


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
    learning rate, the dropout layers' random state (``resume.random_state``) and the counters of
    ``stateful`` (this callback's own ``best`` among them, under ``ModelCheckpoint`` as before), so
    ``--resume`` continues exactly where the run stopped.
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
                 "random": random_state(self.model), **callback_state(self.stateful), "files": self.files}
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


class LostStop(keras.callbacks.Callback):
    """Raises, as the next step or the epoch's end begins, a stop (SIGTERM, Ctrl-C) the script received whose exception
    native code caught and dropped on its way (``stops.lost``): a JAX run stopped as its first step's compilation
    ended trained to its end.  First of the run's callbacks, so an epoch it stops is not committed; a begin hook, so
    Keras's asynchronous dispatch of the batch-end hooks is left as it was."""

    @staticmethod
    def _raise_lost():
        if (stop := stops.lost()) is not None:
            raise stop

    def on_train_batch_begin(self, batch, logs=None):
        self._raise_lost()

    def on_epoch_end(self, epoch, logs=None):
        self._raise_lost()


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
                   global_batch: int = 32, started: float | None = None):
    """The run's callbacks (in the order they must run) and the stateful ones, by class name.

    ``lr`` is the base learning rate after scaling for the number of replicas; ``started`` is when the
    sitting began on ``time.monotonic``'s clock (``--time-limit`` counts from it).
    """
    early = keras.callbacks.EarlyStopping(monitor=monitor, patience=config.patience, min_delta=config.min_delta,
                                          restore_best_weights=True)
    stateful = {"EarlyStopping": early}
    checkpoints = CheckpointSet(out_dir, monitor, stateful)
    stateful["ModelCheckpoint"] = checkpoints  # the key old state.json files use for the best value
    callbacks = [LostStop(), AllocatorSettings(), EpochOrder(batches), LearningRateLogger()]
    if config.schedule == "plateau":
        plateau = keras.callbacks.ReduceLROnPlateau(
            monitor=monitor, factor=0.5, patience=max(2, config.patience // 3), min_delta=config.min_delta,
            min_lr=lr * 1e-3,
        )
        stateful["ReduceLROnPlateau"] = plateau
        callbacks.append(plateau)
    schedule = None
    if config.schedule == "cosine":
        schedule = stateful["CosineSchedule"] = CosineSchedule(lr, config.epochs)
        callbacks.append(schedule)
    seconds = parse_duration(config.time_limit) if config.time_limit else None
    limit = stateful["TimeLimit"] = TimeLimit(seconds, config.epochs, schedule, started)
    callbacks.append(limit)
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
