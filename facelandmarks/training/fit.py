"""``fit``: train one registered model from a ``TrainConfig`` into its run directory."""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

import keras
import numpy as np

from facelandmarks import runtime
from facelandmarks.data import npz
from facelandmarks.data.errors import check_writable
from facelandmarks.data.feeding import (
    FaceParts,
    LandmarkBatches,
    check_shard_share,
    held_out_words,
    load_split,
    model_inputs,
    repeat_counts,
    scheme_for,
    steps_line,
    tf_input_pipeline,
    with_max_faces,
)
from facelandmarks.models.optimizers import make_optimizer
from facelandmarks.scheme_files import definition_to_store
from facelandmarks.training.callbacks import make_callbacks
from facelandmarks.training.checks import build_for_run, check_model, check_resumed_data, load_plugins_for_run
from facelandmarks.training.config import TrainConfig, _write_json_atomic
from facelandmarks.training.distribute import pad_rows, predict_all
from facelandmarks.training.head_rate import check_head_rate_layers, head_rate_layers, settle_head_lr_scale
from facelandmarks.training.init import adopt_init_constants, init_from_other_model, init_split_warning, init_weights
from facelandmarks.training.init_head import head as _head
from facelandmarks.training.init_head import nearest_faces, start_from_nearest
from facelandmarks.training.init_head import restart_for_markup as _restart_for_markup
from facelandmarks.training.resume import (
    BEST,
    LAST,
    SAVED_MODEL,
    CheckpointError,
    _best_epoch,
    _epoch_seconds,
    choose_checkpoint,
    commit_set,
    read_history_epochs,
    read_state,
    recover,
    restore_callbacks,
    restore_for_resume,
    weights_fingerprint,
)
from facelandmarks.training.runs import init_run_config, record_resumed
from facelandmarks.training.teachers import with_teacher_targets


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
    from facelandmarks.models import get_spec, pretrain
    from facelandmarks.training import distribute

    started = time.monotonic()  # --time-limit counts from here: data, teachers and compiling take their share
    run_dir = Path(config.run_dir)
    config.validate()
    load_plugins_for_run(config, resume)  # their families and losses, before the checks name them (train.py's loaded them)
    check_loss(config)
    check_model(config)  # the model's options, --weights and --train-blocks, before the data loads
    state = _check_run_dir(run_dir, resume)
    resume = state is not None  # a run killed before its first epoch ended starts again
    if resume:
        state = _budget_state(state, config.epochs)
    cluster = distribute.setup(config.distribute, str(run_dir) if resume else None)
    try:
        check_time_limit(config, cluster.workers)
        out_dir = Path(cluster.output_dir(str(run_dir)))
        check_writable(out_dir)
        train, val = _load_data(config)
        check_faces(config, train, val)
        train, line = with_max_faces(config, train)  # before the teachers mark them and the workers share them
        if line and cluster.is_chief:  # the run's line, once: not from every process of a job
            print(line)
        check_shard_share(train, cluster.workers)  # in every process, before any step waits for the others
        runtime.load_tensorflow_quietly()  # Keras's seeding and TensorBoard import it, under JAX too
        annotated = train  # --init-head nearest matches the init model's points against the annotations
        train = with_teacher_targets(config, train)  # before the seed and the precision policy: the student
        keras.utils.set_random_seed(config.seed)    # starts as it would without teachers
        set_precision(config.mixed_precision)
        scheme = train.scheme if isinstance(train, npz.ShardSet) else scheme_for(train)
        parts = FaceParts(train, config.size, cluster.worker_index, cluster.workers, config.oversample)
        spec = get_spec(config.model)
        sample = parts.get(0)[0]
        x_val = model_inputs(val, _val_size(config, val, sample)) if val is not None else None
        input_kind = "image" if sample.ndim == 4 else "features"
        if input_kind != spec.input_kind:
            words = {"image": "images", "features": "features"}
            raise ValueError(
                f"model {config.model!r} takes {words[spec.input_kind]} but {config.data} holds {words[input_kind]}"
                + (" (make features with `datagen.py bottleneck`)" if spec.input_kind == "features" else "")
            )
        if resume:  # --data may have moved, but must still be what the run trained on
            check_resumed_data(config, scheme, list(sample.shape[1:]))
        config.scheme, config.num_points = scheme.name, scheme.num_points
        config.input_shape, config.input_kind = list(sample.shape[1:]), input_kind
        if not resume and (line := adopt_init_constants(config)):  # before config.json: it records the mode and zoom used
            print(line)

        with cluster.scope():
            model = build_for_run(config, scheme.num_points)  # a builder's refusal leaves no config.json behind
            if not resume:  # a scheme of your own travels with the run, with where dlib's box lies around its points
                definition = definition_to_store(scheme, npz.landmark_box(train))
                config.save(out_dir / "config.json", **({"scheme_definition": definition} if definition else {}))
            # the layers --init restarts (--head-lr-scale's), and whether points of another markup start fresh there
            restarted, fresh_points = (), False
            if config.init and not resume:
                before = init_run_config(config)
                if before and before.get("model") not in (None, config.model):  # another family: by layer name
                    restarted = init_from_other_model(model, config.init, before, _head(config, scheme, model))
                    if config.init_head == "nearest":  # the default: say why no point starts from its nearest
                        print(f"the head of {config.model} starts fresh (--init {config.init} is a {before['model']} "
                              f"run, whose head does not fit)")
                else:
                    restart = _restart_for_markup(config, before, scheme, model)
                    restarted = init_weights(model, config.init, *restart)
                    fresh_points = bool(restarted)
                    if config.init_head == "nearest" and (restart[0] or (before or {}).get("num_points") != scheme.num_points):
                        line, fresh = start_from_nearest(model, config, before, scheme,
                                                         nearest_faces(parts, annotated, cluster.workers), restart[0], cluster)
                        print(line)
                        fresh_points = fresh > 0
                if warning := init_split_warning(config, scheme.name, _sources(train, val)):
                    print(warning)
                theirs = (before or {}).get("input_shape")
                if theirs and list(theirs)[:2] != list(config.input_shape)[:2]:
                    print(f"warning: --init {config.init} trained on {theirs[0]}-px faces, this run's are "
                          f"{config.input_shape[0]} px: its features start at another scale and much of what it knew "
                          f"is lost at first (--size {theirs[0]} feeds these faces at its size)")
            elif spec.pretrain is not None and not resume:
                print(f"pretraining {config.model} ({config.pretrain_epochs} epochs)")
                pretrain(config.model, model, sample, epochs=config.pretrain_epochs, batch_size=config.batch)
            defaulted = config.head_lr_scale is None
            if line := settle_head_lr_scale(config, resume, restarted, fresh_points):
                print(line)
            scaled = head_rate_layers(config, run_dir, out_dir, resume, restarted, defaulted)
            check_head_rate_layers(model, scaled)
            _compile(model, config, scheme, cluster, scaled)

        global_batch = cluster.global_batch(config.batch)
        augmenter = None
        if input_kind == "image" and config.augment not in ("none", ""):
            from facelandmarks.data.augment.augmenter import Augmenter
            from facelandmarks.data.augment.config import AugmentConfig

            augmenter = Augmenter(AugmentConfig.parse(config.augment), scheme, seed=config.seed)
        per_worker = global_batch // cluster.workers
        # padded on JAX: jax.jit would compile the step again for each short batch, and under data-parallel (JAX's) a
        # short batch would not split evenly over the devices (dropping it left an epoch's last faces untrained)
        batches = LandmarkBatches(
            parts, per_worker, augmenter, seed=config.seed + cluster.worker_index, workers=config.workers,
            use_multiprocessing=False, max_batches=distribute.equal_batches(cluster, train, per_worker, config.oversample, config.data),
            pad_remainder=keras.backend.backend() == "jax", steps_per_epoch=config.steps_per_epoch,
            source=config.data, held_out=held_out_words(config),
        )
        steps = max(1, cluster_faces(train, cluster.workers, config.oversample) // per_worker) if cluster.strategy is not None else None
        if config.steps_per_epoch:
            if cluster.is_chief:  # once, as --max-faces' line
                print(steps_line(config.steps_per_epoch, batches.per_pass if steps is None else steps))
            steps = steps and min(steps, config.steps_per_epoch)  # a strategy's stream: each epoch its next steps
        val_data = None
        if val is not None:
            from facelandmarks.data.feeding import pack_targets

            # under data parallelism every batch must split evenly over the devices: pad the
            # validation set with faces that have no visible point (they carry no loss, no NME)
            x_padded, targets = pad_rows(x_val.astype(np.float32), pack_targets(val["landmarks"], val["visible"]),
                                         multiple=global_batch if cluster.mode == "data-parallel" else 1)
            val_data = (x_padded, targets)

        monitor = "val_loss" if val is not None else "loss"
        callbacks, stateful = make_callbacks(
            config, out_dir, monitor, batches, val, x_val, input_kind, resume, cluster.scaled_lr(config.lr),
            cluster, global_batch, started,
        )
        initial_epoch = 0
        if resume:
            initial_epoch = restore_for_resume(model, run_dir, out_dir, state, stateful, callbacks)
            if cluster.is_chief:  # once the run's state is back: a resume that fails leaves its budget as it was
                record_resumed(out_dir / "config.json", config)  # the budget, where its data now are

        start = time.time()
        limit = stateful["TimeLimit"]
        if resume:
            restore_callbacks(state, {"TimeLimit": limit})  # the budget a time limit cut, before deciding to train
        budget = limit.end  # config.epochs, or less where a time limit cut it (_budget_state kept the cut)
        done = read_summary(run_dir) if resume else None
        if resume and budget < config.epochs and initial_epoch >= budget:
            print(f"{run_dir} already ran the {budget} epochs its time limit left of {config.epochs}; "
                  f"--epochs N gives it a new budget")
        elif done is not None and done.get("stopped_by") == "early stopping" and done.get("epochs") == initial_epoch:
            print(f"{run_dir}: early stopping ended this run after epoch {initial_epoch} (best epoch "
                  f"{done.get('best_epoch')}); nothing to resume: train.py --init {shlex.quote(str(run_dir))} starts a new run from its "
                  f"best weights")
            return done
        elif resume and initial_epoch >= budget:  # more than --epochs N: a budget below the epochs run ends the run
            print(f"{run_dir} already ran its {budget} epochs; --epochs N gives it a new budget" if initial_epoch == budget
                  else f"{run_dir} already ran {initial_epoch} epochs, more than --epochs {budget}: it ends there; "
                       f"--epochs N above {initial_epoch} gives it a new budget")
        if resume and initial_epoch >= budget and done is not None and done.get("epochs") == initial_epoch:
            return done  # nothing ran: the summary of the sittings before stands (of fewer epochs: finish writes anew)
        if initial_epoch < budget:
            train_data = batches if steps is None else tf_input_pipeline(  # a strategy's stream, past the epochs done
                batches, global_batch, config.input_shape, scheme.num_points, skip=initial_epoch * steps * per_worker)
            if keras.backend.backend() == "jax" and steps is None:  # built here, from a batch of the first epoch:
                model._symbolic_build(data_batch=batches[0])  # fit's own build drew one through the workers, whose
                # look-ahead Keras then fed to the first epoch and each epoch's to the next (a resume began otherwise)
            # shuffle=False: LandmarkBatches orders each epoch by its seed; Keras would reorder the batches with
            # Python's random module, whose state a resumed run does not have
            model.fit(
                train_data, validation_data=val_data, epochs=config.epochs, initial_epoch=initial_epoch,
                steps_per_epoch=steps, callbacks=callbacks, verbose=verbose if cluster.is_chief else 0,
                validation_batch_size=global_batch, shuffle=False,
            )
        return finish(model, config, out_dir, monitor, val, x_val, scheme, start, cluster, global_batch, limit)
    except Exception as err:
        if line := distribute.lost_worker(cluster, err):  # one line, not the collective op's traceback
            raise ConnectionError(line) from None
        raise
    finally:
        cluster.close()


def check_time_limit(config: TrainConfig, workers: int) -> None:
    """``--time-limit`` in one training process only: each worker of a cluster would cut by its own clock, and
    workers that stop at different epochs leave the others waiting in a collective step."""
    if config.time_limit and workers > 1:
        raise ValueError(f"--time-limit needs one training process; the {workers} workers of this cluster would each "
                         "cut the budget by their own clock (give --epochs instead)")


def _val_size(config: TrainConfig, val: dict, sample: np.ndarray) -> int | None:
    """The side --val's faces are fed at: the training faces' (--size, else the training file's own), with a line
    when that resizes them (a --val file of another size once failed after the first epoch)."""
    if sample.ndim != 4 or "images" not in val:
        return config.size
    side, theirs = config.size or sample.shape[1], val["images"].shape[1]
    if theirs != side and config.val:  # (faces split off the training file go with it: nothing to say)
        print(f"--val {config.val}: {theirs}-px faces resized to the training faces' {side} px")
    return side


def _sources(*parts) -> set[str] | None:
    """The datasets (``source``) the faces of these loaded parts come from; None where one does not say."""
    found = set()
    for part in parts:
        if part is None:
            continue
        if not isinstance(part, dict) or "source" not in part:
            return None
        found.update(np.unique(np.asarray(part["source"]).astype(str)).tolist())
    return found


def read_summary(run_dir: Path) -> dict | None:
    """The summary a finished sitting wrote (``summary.json``), or None."""
    try:
        return json.loads((Path(run_dir) / "summary.json").read_text())
    except (OSError, ValueError):
        return None


def _budget_state(state: dict, epochs: int) -> dict:
    """The saved state a resumed run restores: without the cut budget and reshaped cosine of ``--time-limit``
    when ``--resume --epochs`` gave the run a new budget (the schedule then follows the new one)."""
    planned = state.get("TimeLimit", {}).get("planned")
    if planned is None or planned == epochs:
        return state
    return {k: v for k, v in state.items() if k not in ("TimeLimit", "CosineSchedule")}


def _check_run_dir(run_dir: Path, resume: bool):
    """The state to resume from (None: start at epoch 1); refuses to overwrite a run without ``--resume``.

    Resuming first completes or discards a checkpoint commit that a kill interrupted (``recover``).
    A run folder holding its settings but no finished epoch (killed during its first) starts over.
    """
    if resume:
        if not (run_dir / "config.json").is_file():
            raise FileNotFoundError(f"{run_dir}: nothing to resume (no config.json: not a run folder)")
        state = recover(run_dir)
        if state is None:
            print(f"{run_dir}: no finished epoch to resume; training from epoch 1")
        return state
    # best.weights.h5 and summary.json too: a shipped model's folder (models.py --ship) holds no other checkpoint
    if held := [name for name in (LAST, SAVED_MODEL, "state.json", BEST, "summary.json") if (run_dir / name).exists()]:
        raise FileExistsError(f"{run_dir} already holds a run ({held[0]}); pass --resume to continue it or choose another "
                              f"--run-dir")
    return None


def _load_data(config: TrainConfig):
    """``load_split``, naming the data file in an error that does not (a split that cannot be made)."""
    try:
        return load_split(config)
    except ValueError as err:
        if any(str(path) in str(err) for path in (config.data, config.val) if path):
            raise
        raise npz.DatasetError(f"{config.data}: {err}") from None


def check_faces(config: TrainConfig, train, val) -> None:
    """Stop before the first epoch when the training or validation side of the split has no faces
    (an empty validation set would otherwise fail only after the last epoch, in ``finish``)."""
    faces = train.faces if isinstance(train, npz.ShardSet) else len(train["landmarks"])
    split = not config.val and config.val_fraction > 0
    if faces == 0:
        detail = f" after --val-fraction {config.val_fraction} held out its subjects" if split else ""
        raise npz.DatasetError(f"{config.data}: no faces to train on{detail}")
    if val is None or len(val["landmarks"]):
        return
    if config.val:
        raise npz.DatasetError(f"{config.val}: the validation set (--val) holds no faces")
    subjects = len(np.unique(np.asarray(train["subject"]).astype(str)))
    raise npz.DatasetError(f"{config.data}: --val-fraction {config.val_fraction} held out no validation faces "
                           f"({subjects} subject(s) left); give --val FILE, or --val-fraction 0 to train without one")


def cluster_faces(train, workers: int, oversample: dict | None = None) -> int:
    """Faces per epoch of the worker with the fewest: every worker must take the same number of steps."""
    if isinstance(train, npz.ShardSet):
        return min(sum(train.counts[i::workers]) for i in range(workers))
    repeats = repeat_counts(train, oversample)
    return min(int(repeats[i::workers].sum()) for i in range(workers))


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


def check_loss(config: TrainConfig) -> None:
    """A loss name or option ``get_loss`` refuses, as one line naming the flag, before the data loads."""
    from facelandmarks.models import losses

    try:
        losses.get_loss(config.loss, **config.loss_options)
    except ValueError as err:
        flag = "--loss" if config.loss not in losses.LOSSES else "--loss-options"
        raise ValueError(f"{flag}: {err}") from None


def _compile(model, config: TrainConfig, scheme, cluster, scaled=()) -> None:
    from facelandmarks.models import losses

    tracked = [keras.metrics.MeanMetricWrapper(losses.masked_mse, name="mse")]
    if scheme.normalize == "box":  # a markup without eye corners: NME by the face box
        tracked.insert(0, losses.NormalizedMeanError("box", name="nme"))
    elif scheme.norm_points is not None:  # single-region and region-box schemes have no normalisation
        tracked.insert(0, losses.NormalizedMeanError(scheme.norm_points, name="nme"))
    model.compile(
        optimizer=make_optimizer(config.optimizer, cluster.scaled_lr(config.lr), scaled, config.head_lr_scale),
        loss=losses.get_loss(config.loss, **config.loss_options),
        metrics=tracked,
        jit_compile=resolve_jit_compile(config.jit_compile),
    )
    # Built here, not inside the first trace of the training step: on TensorFlow without a strategy Keras
    # defers it there, and a step that creates variables is traced twice (15.2 s instead of 23.4 s to the end of
    # a run's first 4 MobileNetV2 steps at 128 px, AMD EPYC with AVX-512; docs/results.md#test-suite-timings).
    model.optimizer.build(model.trainable_variables)


def finish(model, config, out_dir: Path, monitor, val, x_val, scheme, start: float, cluster, global_batch: int,
           limit=None) -> dict:
    """Best weights into ``model.keras`` and the validation summary (written by the chief)."""
    from facelandmarks import metrics

    state = read_state(out_dir)
    try:
        model.load_weights(choose_checkpoint(out_dir, state, (BEST, LAST)))
    except CheckpointError as err:  # neither best nor last is usable: save the weights in memory
        print(f"{err}; saving the weights in memory", file=sys.stderr)
    sitting = round(time.time() - start, 1)
    summary = {"model": config.model, "train_seconds": _epoch_seconds(out_dir / "history.csv", sitting),
               "sitting_seconds": sitting}
    epochs_run = read_history_epochs(out_dir / "history.csv")
    summary["epochs"] = (max(epochs_run) + 1) if epochs_run else 0
    summary["stopped_by"] = "early stopping" if summary["epochs"] < config.epochs else "epoch budget"
    if limit is not None and limit.end < config.epochs and summary["epochs"] == limit.end:
        summary["stopped_by"] = "time limit"  # the budget it cut, run to its end
        summary["epoch_budget"] = limit.end
    if val is not None:  # every worker predicts: under a strategy this is a collective step
        pred = predict_all(model, x_val.astype(np.float32), global_batch, cluster).reshape(val["landmarks"].shape)
        if scheme.norm_points is not None or scheme.normalize == "box":
            scores = metrics.summarize(pred, val["landmarks"], val["visible"], scheme)
            summary.update({"val_" + k: v for k, v in scores.items()})
        summary["val_mse"] = metrics.masked_mse(pred, val["landmarks"], val["visible"])
    summary["best_epoch"] = _best_epoch(out_dir / "history.csv", monitor)
    summary["weights_sha1"] = weights_fingerprint(model)
    # a score without a face to score (no visible point): null, not NaN, which is no JSON to other readers (jq)
    summary = {k: None if isinstance(v, float) and not np.isfinite(v) else v for k, v in summary.items()}
    # model.keras joins the checkpoint set, recording which best weights it holds. Every worker saves, the others into
    # their scratch folder: reading the weights of a job of several JAX processes is a step they all take
    best = (state or {}).get("files", {}).get(BEST)
    commit_set(out_dir, {SAVED_MODEL: model.save}, state or {"epoch": -1},
               meta={SAVED_MODEL: {"best_sha1": best and best["sha1"]}})
    _write_json_atomic(out_dir / "summary.json", summary)
    return summary
