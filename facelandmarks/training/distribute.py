"""Training on several devices and machines with the engines users already run.

``--distribute`` picks one:

=============  ==========  ==================================================
mode           backend     engine
=============  ==========  ==================================================
none           any         one device
mirrored       tensorflow  ``tf.distribute.MirroredStrategy``: all GPUs of
                           one machine
multiworker    tensorflow  ``tf.distribute.MultiWorkerMirroredStrategy``: a
                           ``TF_CONFIG`` cluster of machines (or processes)
data-parallel  jax         ``keras.distribution.DataParallel`` over every
                           device (``keras.distribution.initialize`` first
                           when several JAX processes form a job)
=============  ==========  ==================================================

``--batch`` is per replica: the global batch is ``batch x replicas`` and the
learning rate grows with it (the linear scaling rule, Goyal et al. 2017), so
adding devices keeps the per-device memory and the per-face step size.

Only the chief writes the run directory; the other workers write to a
private temporary folder that is removed at the end (the usual pattern for
``ModelCheckpoint`` under multi-worker training, where several workers
writing one file race).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import tempfile
from dataclasses import dataclass, field

import keras
import numpy as np

from facelandmarks import runtime
from facelandmarks.training.config import DISTRIBUTE_MODES

MODES = DISTRIBUTE_MODES  # declared with the other settings in training/config.py


@dataclass
class Cluster:
    """Where this process stands in a (possibly one-process) training job."""

    mode: str = "none"
    replicas: int = 1  # devices taking part in one synchronous step, all workers together
    workers: int = 1
    worker_index: int = 0
    is_chief: bool = True
    strategy: object = None  # tf.distribute strategy, when one is used
    scratch_dir: str | None = None  # where a non-chief worker writes
    _cleanup: list = field(default_factory=list)

    def scope(self):
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    def global_batch(self, per_replica: int) -> int:
        return per_replica * self.replicas

    def scaled_lr(self, lr: float) -> float:
        return lr * self.replicas

    def output_dir(self, run_dir: str) -> str:
        """The chief writes ``run_dir``; other workers a private scratch folder."""
        if self.is_chief:
            return run_dir
        if self.scratch_dir is None:
            self.scratch_dir = tempfile.mkdtemp(prefix=f"worker{self.worker_index}-")
            self._cleanup.append(self.scratch_dir)
        return self.scratch_dir

    def close(self) -> None:
        if self.mode == "data-parallel":  # the distribution is the process's: a later run (a test) would train under it
            keras.distribution.set_distribution(None)
        for path in self._cleanup:
            shutil.rmtree(path, ignore_errors=True)
        self._cleanup.clear()


def read_tf_config() -> dict:
    """The ``TF_CONFIG`` of this process, checked."""
    text = os.environ.get("TF_CONFIG")
    if not text:
        raise ValueError("--distribute multiworker needs TF_CONFIG (docs/training.md#several-gpus-or-machines)")
    try:
        config = json.loads(text)
        workers = config["cluster"]["worker"]
        task = config["task"]
        task_type = task["type"]
        if int(task["index"]) < 0:
            raise ValueError(f"negative task index {task['index']}")
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise ValueError(f"TF_CONFIG is not a valid cluster description ({err}): {text!r}") from err
    if task_type not in config["cluster"]:
        raise ValueError(f"TF_CONFIG: task type {task_type!r} is not in the cluster {sorted(config['cluster'])}")
    tasks = config["cluster"][task_type]
    if int(task["index"]) >= len(tasks):  # TensorFlow's own words named neither TF_CONFIG nor the count
        raise ValueError(f"TF_CONFIG: task index {task['index']} is not in the cluster, whose {len(tasks)} {task_type} "
                         f"task(s) count from 0")
    if not workers:
        raise ValueError("TF_CONFIG: the cluster has no workers")
    return config


def is_chief_task(config: dict) -> bool:
    """The chief writes: the 'chief' task, or worker 0 when the cluster has no chief."""
    task = config["task"]
    if "chief" in config["cluster"]:
        return task["type"] == "chief"
    return task["type"] == "worker" and int(task["index"]) == 0


def setup(mode: str, resumed: str | None = None) -> Cluster:
    """Create the strategy / distribution for ``mode`` (call before building the model); ``resumed``: the run folder
    that ``--resume`` continues, whose ``--distribute`` cannot change."""
    if mode not in MODES:
        raise ValueError(f"--distribute must be one of {', '.join(MODES)}, got {mode!r}")
    backend = keras.config.backend()
    if mode == "none":
        return Cluster()
    needs = "tensorflow" if mode in ("mirrored", "multiworker") else "jax"
    if backend != needs:
        engine = "TensorFlow's" if needs == "tensorflow" else "Keras's JAX distribution API"
        hint = (f"resume {resumed} with KERAS_BACKEND={needs}, or start a new run from its weights with --init "
                f"{shlex.quote(str(resumed))}"
                if resumed else "use data-parallel" if needs == "tensorflow" else "use mirrored or multiworker")
        raise ValueError(f"--distribute {mode} is {engine}; this run uses KERAS_BACKEND={backend} ({hint})")

    if mode == "mirrored":
        import tensorflow as tf

        strategy = tf.distribute.MirroredStrategy()
        return Cluster(mode, replicas=strategy.num_replicas_in_sync, strategy=strategy)
    if mode == "multiworker":
        import tensorflow as tf

        config = read_tf_config()
        patch_keras_for_multiworker()
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        reclaim_sigterm()
        workers = len(config["cluster"]["worker"]) + len(config["cluster"].get("chief", []))
        index = int(config["task"]["index"]) + (1 if config["task"]["type"] == "worker" and "chief" in config["cluster"] else 0)
        return Cluster(mode, replicas=strategy.num_replicas_in_sync, workers=workers, worker_index=index,
                       is_chief=is_chief_task(config), strategy=strategy)
    # data-parallel (JAX)
    if os.environ.get("KERAS_DISTRIBUTION_JOB_ADDRESSES"):
        runtime.load_tensorflow_quietly()  # initialize imports it: its start-up lines reached the console
        # On CPUs a JAX job's collectives are Gloo's, which says from C++ on stdout, where no setting silences it, '[Gloo]
        # Rank 0 is connected to 1 peer ranks. ...' as the processes connect: it fell among the run's own output, before
        # the JSON summary users pipe. Its lines go to stderr (each line of fd 1 passed on).
        with runtime.filtered_fds((1,), keep=bool):
            keras.distribution.initialize()  # multi-process JAX job described by the KERAS_DISTRIBUTION_* variables
    import jax

    devices = keras.distribution.list_devices()
    # each process already feeds its own share of the faces (FaceParts by worker_index): Keras's auto-sharding takes a
    # tf.data.Dataset only, and refused the run's batches when several processes formed the job
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices, auto_shard_dataset=False))
    return Cluster(mode, replicas=len(devices), workers=jax.process_count(), worker_index=jax.process_index(),
                   is_chief=jax.process_index() == 0)


def reclaim_sigterm() -> None:
    """SIGTERM back to this process's handler (``Terminated``: a wind-down as after Ctrl-C, or the default end).

    Starting a ``MultiWorkerMirroredStrategy``, TensorFlow's coordination service installs a SIGTERM handler of its
    own (its preemption notifier, which only records the signal): SIGTERM then stopped no worker, healthy or waiting
    on a dead partner, and a job scheduler's SIGKILL followed."""
    import signal
    import threading

    handler = signal.getsignal(signal.SIGTERM)
    if handler is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)  # installs Python's own C handler again


# the errors a step of a cluster ends in when another of its processes has gone (TensorFlow's collective ops; the Gloo
# collectives of JAX on CPUs)
_LOST_PEER_ERRORS = ("UnavailableError", "AbortedError", "DeadlineExceededError")
_LOST_PEER_TEXT = ("Connection closed by peer", "Connection reset by peer", "tasks are unhealthy")


def lost_worker(cluster: Cluster, err: BaseException) -> str | None:
    """One line for an error that says another process of the job stopped (its own output says why), else None:
    TensorFlow's ended the run in a traceback of its collective ops."""
    text = str(err)
    if cluster.workers < 2 or not (type(err).__name__ in _LOST_PEER_ERRORS or any(t in text for t in _LOST_PEER_TEXT)):
        return None
    _, unhealthy, named = text.partition("tasks are unhealthy")  # TensorFlow names them after these words
    tasks = sorted(set(re.findall(r"/job:\w+/replica:\d+/task:\d+", named))) if unhealthy else []
    which = f" ({', '.join(tasks)})" if tasks else ""
    return (f"--distribute {cluster.mode}: another process of this {cluster.workers}-process job stopped{which}, and "
            f"this one cannot go on without it; its own output says why. Start every process again (with --resume once "
            f"an epoch has finished)")


def equal_batches(cluster: Cluster, train, per_worker: int, oversample: dict | None = None,
                  data: str | None = None) -> int | None:
    """The batches of an epoch every process of a JAX job takes (None: one process, or a strategy's stream).

    Each process feeds its own faces (``FaceParts``): where their counts differ (an odd count, shards of several
    sizes, ``--oversample``) one would take a step more than another and wait in it for the others for ever.
    Every process takes as many batches as the process with the fewest, each shard's (or the epoch's) short last
    batch counted: ``fit`` pads it to the batch size (``LandmarkBatches(pad_remainder=True)``), so every step of
    every process has one shape.  ``data``: the npz file(s) ``train`` came from, named where it is refused (a shard
    set names its manifest).
    """
    if cluster.mode != "data-parallel" or cluster.workers < 2:
        return None
    from facelandmarks.data import npz
    from facelandmarks.data.feeding import repeat_counts
    from facelandmarks.data.report import counted

    workers = cluster.workers
    if isinstance(train, npz.ShardSet):  # shard i goes to process i mod workers, each cut into batches
        counts = [train.counts[w::workers] for w in range(workers)]
    else:
        repeats = repeat_counts(train, oversample)
        counts = [[int(repeats[w::workers].sum())] for w in range(workers)]
    totals = [sum(faces) for faces in counts]
    if (fewest := min(totals)) < per_worker:  # said by every process, not by one alone
        if isinstance(train, npz.ShardSet):
            names = [f.name for f in train.files[totals.index(fewest)::workers]]
            where, faces = train.manifest, f"{counted(fewest, 'training face')} (its shard{'s' * (len(names) > 1)} {', '.join(names)})"
        else:
            where, faces = data or "the training data", f"{fewest} of the {sum(totals)} training faces" + (
                " of an epoch (--oversample's repeats counted)" if oversample else "")
        raise ValueError(f"{where}: a process of this {workers}-process job has {faces}, fewer than its --batch of "
                         f"{per_worker}")
    return min(sum(-(-count // per_worker) for count in faces) for faces in counts)


_PATCHED = False


def patch_keras_for_multiworker() -> None:
    """Work around two Keras 3 bugs with ``MultiWorkerMirroredStrategy`` (keras-team/keras#20585).

    1. ``fit`` builds the model by all-reducing the first *data batch* with
       ``strategy.reduce("MEAN", batch)``, which the collective strategy
       cannot do for a nested batch: build from the local batch instead (the
       build only needs shapes).
    2. Scalar metrics are reduced with ``strategy.reduce("MEAN", v, axis=0)``,
       which fails for 0-d values: reduce them with ``axis=None``, so every
       worker logs the same global mean (early stopping stays in step).
    """
    global _PATCHED
    if _PATCHED:
        return
    import tensorflow as tf
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer as tf_trainer

    original_reduce = tf_trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and tf_trainer._collective_all_reduce_multi_worker(strategy):
            def reduce_one(v):
                if not (tf_trainer._is_per_replica_instance(v) or isinstance(v, tf.Tensor)):
                    return v
                return strategy.reduce("MEAN", v, axis=None if v.shape.rank == 0 else 0)

            return tree.map_structure(reduce_one, values)
        return original_reduce(values, strategy, reduction)

    original_build = tf_trainer.TensorFlowTrainer._maybe_symbolic_build

    def maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = self._distribute_strategy
        if strategy is None or iterator is None or not tf_trainer._collective_all_reduce_multi_worker(strategy):
            return original_build(self, iterator, data_batch)
        for _, _, it in iterator:
            batch = next(it)
            break
        batch = tree.map_structure(
            lambda x: strategy.experimental_local_results(x)[0] if isinstance(x, tf.distribute.DistributedValues) else x,
            batch,
        )
        with strategy.scope():
            self._symbolic_build(data_batch=batch)

    tf_trainer.reduce_per_replica = reduce_per_replica
    tf_trainer.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build
    _PATCHED = True


def pad_rows(x: np.ndarray, targets: np.ndarray | None, multiple: int):
    """Rows added so the count is a multiple of ``multiple``, as ``feeding.pad_batch`` adds them (padded targets are
    invisible)."""
    from facelandmarks.data.feeding import pad_batch

    return pad_batch(x, targets, len(x) + -len(x) % multiple)


def predict_all(model, x: np.ndarray, batch: int, cluster=None) -> np.ndarray:
    """Predictions for every row; batches padded to split evenly under data parallelism."""
    multiple = batch if cluster is not None and cluster.mode == "data-parallel" else 1
    padded, _ = pad_rows(x, None, multiple)
    if multiple > 1 and cluster.workers > 1:
        return _predict_in_every_process(model, padded, batch)[: len(x)]
    return np.asarray(model.predict(padded, batch_size=batch, verbose=0))[: len(x)]


def _predict_in_every_process(model, x: np.ndarray, batch: int) -> np.ndarray:
    """``model.predict`` in a job of several JAX processes, where Keras's own ends in a RuntimeError: its output
    spans the other processes' devices, which numpy cannot read.  Every process feeds the same rows (a step of the
    job needs them all) and reads its own devices' share of the output, its copy of the predictions."""
    import jax

    distribution = keras.distribution.distribution()
    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]
    step = jax.jit(lambda t, n, rows: model.stateless_call(t, n, rows, training=False)[0])
    outputs = []
    for start in range(0, len(x), batch):
        rows = x[start:start + batch]
        sharding = distribution.get_data_layout((len(rows) * jax.process_count(), *rows.shape[1:])).backend_layout
        out = step(trainable, non_trainable, jax.make_array_from_process_local_data(sharding, rows))
        shards = {shard.index[0].start or 0: np.asarray(shard.data) for shard in out.addressable_shards}
        outputs.append(np.concatenate([shards[k] for k in sorted(shards)]))
    return np.concatenate(outputs)
