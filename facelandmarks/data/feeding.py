"""Feeding a model: train/validation split of an npz, model inputs, augmented batches (PyDataset and tf.data)."""

from __future__ import annotations

import json
import threading

import keras
import numpy as np

from facelandmarks.data import npz
from facelandmarks.landmarks import get_scheme


def load_split(config):
    """Training data (arrays, or a ``ShardSet`` streamed from disk) and validation arrays.

    ``config`` is a ``TrainConfig`` (only its ``data``, ``val``, ``val_fraction`` and ``val_seed`` are read).

    A validation split taken from in-memory training data is by subject;
    sharded training data needs ``--val`` (a subject split would have to read
    every shard first).
    """
    if npz.is_manifest(config.data):
        train = npz.ShardSet(config.data)
        if not config.val:
            raise ValueError(f"{config.data} is sharded: give the validation set with --val (an npz or a manifest)")
        scheme = train.scheme.name
    else:
        train = npz.load_npz(config.data)
        scheme = str(train["scheme"])
    if config.val:
        val = load_all(config.val)
        if str(val["scheme"]) != scheme:
            raise ValueError(f"{config.val}: scheme {val['scheme']} differs from {config.data}'s {scheme}")
    elif config.val_fraction > 0:
        train_idx, val_idx = split_by_subject(train["subject"], config.val_fraction, config.val_seed)
        train, val = npz.subset(train, train_idx), npz.subset(train, val_idx)
    else:
        val = None
    return train, val


MAX_FACES_DRAW = 1 << 40  # beside the seed in --max-faces' generator: no epoch's batch order ([seed, epoch]) draws alike


def face_groups(data: dict) -> np.ndarray:
    """A group number for each face: a face and the mirrored and vertically flipped copies ``datagen.py prepare`` wrote
    of it (they keep its ``source``, ``subject``, ``name`` and ``box``) share one; without names, each face is alone."""
    count = len(data["landmarks"])
    if "name" not in data:
        return np.arange(count)
    columns = [np.asarray(data[key]).astype(str).tolist() for key in ("source", "subject", "name") if key in data]
    columns.append([tuple(box) for box in np.asarray(data["box"]).tolist()])
    numbers: dict = {}
    return np.array([numbers.setdefault(key, len(numbers)) for key in zip(*columns)], np.int64)


def with_max_faces(config, train) -> tuple:
    """The training faces ``fit`` trains on (``config``: a ``TrainConfig``): ``config.max_faces`` of them
    (``keep_faces``) and its line, or all of them and no line."""
    if not config.max_faces:
        return train, None
    if isinstance(train, npz.ShardSet):
        raise npz.DatasetError(f"{config.data}: --max-faces needs the training faces in one npz (a shard set is read "
                               "a shard at a time)")
    held_out = held_out_words(config)
    if not config.oversample:
        return keep_faces(train, config.max_faces, config.seed, config.data, held_out)
    # the faces trained on: --oversample's 0 leaves some out, which stay (untrained) for its check of the source names
    trained = repeat_counts(train, config.oversample) > 0
    kept, line = keep_faces(train, config.max_faces, config.seed, config.data, held_out, among=trained)
    drawn = set(np.asarray(kept["source"]).astype(str).tolist())  # a source left out (0) is kept whole
    if missed := [source for source, times in config.oversample.items() if times and source not in drawn]:
        raise npz.DatasetError(f"{config.data}: --max-faces {config.max_faces} drew no face of source "
                               f"{', '.join(missed)}, which --oversample names (--seed {config.seed}): give a larger "
                               "--max-faces or another --seed")
    return kept, line


def held_out_words(config) -> str:
    """What a line counting ``config.data``'s training faces adds where ``--val-fraction`` held some out, else ''."""
    split = not config.val and config.val_fraction > 0
    return f" (left after --val-fraction {config.val_fraction:g} held out its subjects)" if split else ""


def keep_faces(train: dict, max_faces: int, seed: int, where: str, held_out: str = "",
               among: np.ndarray | None = None) -> tuple[dict, str]:
    """``--max-faces``: at most ``max_faces`` of the training faces, drawn by ``seed``, each face with its mirrored
    copies (whole groups, in a random order, as long as they fit), and the line that says so. More than there are
    (``held_out``: what the validation split took, for the line), or a number below the smallest group, is a
    ``DatasetError`` naming ``where`` (the training file): a number too large is no quick try (a mistyped file).
    ``among``: which faces may be drawn (a mask); the others are all kept, and not counted."""
    count = len(train["landmarks"]) if among is None else int(np.count_nonzero(among))
    which = "" if among is None or among.all() else " (those --oversample trains on)"
    if max_faces > count:
        raise npz.DatasetError(f"{where}: --max-faces {max_faces} is more than its {count} training faces{which}{held_out}")
    groups = face_groups(train)
    sizes = np.bincount(groups, weights=None if among is None else among).astype(np.int64)
    chosen, total = [], 0
    for group in np.random.default_rng([seed, MAX_FACES_DRAW]).permutation(len(sizes)):
        if sizes[group] and total + sizes[group] <= max_faces:
            chosen.append(group)
            total += sizes[group]
            if total == max_faces:
                break
    if not total:
        raise npz.DatasetError(f"{where}: --max-faces {max_faces} keeps no face: its training faces come with their "
                               f"mirrored copies, {sizes[sizes > 0].min()} at least together (--max-faces {sizes[sizes > 0].min()})")
    kept = npz.subset(train, np.flatnonzero(np.isin(groups, chosen) | (False if among is None else ~among)))
    together = " (a face and its mirrored copies kept together)" if sizes.max() > 1 else ""
    return kept, (f"--max-faces {max_faces}: training on {total} of the {count} training faces{which}{together}, drawn with "
                  f"--seed {seed}; the validation faces stay as they were")


def steps_line(cap: int, per_pass: int) -> str:
    """What ``--steps-per-epoch`` does to a run whose passes over the faces take ``per_pass`` batches."""
    if cap >= per_pass:
        return f"--steps-per-epoch {cap}: a pass over the training faces is {per_pass} batches; each epoch takes all"
    return (f"--steps-per-epoch {cap}: each epoch takes the next {cap} of the {per_pass} batches of a pass over the "
            "training faces")


def load_all(path) -> dict:
    """An npz, or every shard of a manifest joined (for validation sets, which are small)."""
    if npz.is_manifest(path):
        shards = npz.ShardSet(path)
        return npz.concatenate([shards.load(i) for i in range(len(shards))])
    return npz.load_npz(path)


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


def repeat_counts(data, oversample: dict) -> np.ndarray:
    """How often each face of an in-memory set appears in an epoch: ``oversample[source]`` for the faces of
    that source (the npz's ``source`` column: ``300w``, ``youtube68``, ...; 0 leaves them out), once for the others."""
    count = len(data["landmarks"])
    if not oversample:
        return np.ones(count, np.int64)
    if "source" not in data:
        raise ValueError("--oversample needs the npz's 'source' column (written by datagen.py prepare)")
    sources = np.asarray(data["source"]).astype(str)
    present = set(sources.tolist())
    unknown = sorted(set(oversample) - present)
    if unknown:
        raise ValueError(f"--oversample names source(s) {', '.join(unknown)} that the training faces do not have "
                         f"(they have: {', '.join(sorted(present))})")
    repeats = np.ones(count, np.int64)
    for source, factor in oversample.items():
        repeats[sources == source] = factor
    if not repeats.any():
        raise ValueError(f"--oversample {json.dumps(oversample)} leaves no training face (0 for every source)")
    return repeats


def check_shard_share(data, workers: int) -> None:
    """Refuse a shard set of fewer shards than the job has processes (each process trains on shards of its own).

    Decided from the shard count, not from a process's own share, so that every process refuses alike: the process
    left without a shard refused alone, and the others went on into a step that waited for it until killed.
    """
    if isinstance(data, npz.ShardSet) and len(data) < workers:
        raise ValueError(f"{data.manifest}: {len(data)} shard(s) for a job of {workers} processes, each of which trains "
                         f"on shards of its own; prepare the set in at least {workers} shards (a smaller datagen.py "
                         "prepare --shard-size), or start fewer processes")


class FaceParts:
    """Training faces as parts read one at a time: one in-memory part, or the shards of a manifest.

    A worker of a cluster takes every ``workers``-th part (shards), or every
    ``workers``-th face (in-memory data), so workers never share a face.
    With ``oversample`` (in-memory data) ``repeats[part]`` says how often each face appears in an epoch.
    """

    def __init__(self, data, size: int | None, worker_index: int = 0, workers: int = 1, oversample: dict | None = None):
        self.size = size
        if isinstance(data, npz.ShardSet):
            if oversample:
                raise ValueError(f"{data.manifest}: --oversample needs the training faces in one npz (a sharded set "
                                 "is read a shard at a time)")
            check_shard_share(data, workers)
            self.shards = data
            self.indices = list(range(worker_index, len(data), workers))
            self.counts = [data.counts[i] for i in self.indices]
            self.repeats = None
            self._memory = None
        else:
            rows = np.arange(worker_index, len(data["landmarks"]), workers)
            self.shards, self.indices, self.counts = None, [0], [len(rows)]
            self.repeats = [repeat_counts(data, oversample)[rows]] if oversample else None
            self._memory = (model_inputs(npz.subset(data, rows), size), data["landmarks"][rows], data["visible"][rows])
        self._cache, self._lock = {}, threading.Lock()

    @property
    def faces(self) -> int:
        """Faces an epoch holds (an oversampled face as often as it appears)."""
        if self.repeats is not None:
            return int(sum(r.sum() for r in self.repeats))
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
    uninterrupted one.  The last, partial batch of a part is kept (it is
    augmented as a full batch, so that a shard's remainder costs no trace
    and compile of its own).  ``pad_remainder``:
    such a batch comes padded to the batch size (``pad_batch``), so that it
    costs the model's train step no compile of its own either (jax.jit
    compiles one per batch shape).  ``max_batches``: an epoch's first
    batches only (the processes of a JAX job, which must all take as many
    steps).  ``steps_per_epoch`` (``--steps-per-epoch``): an epoch is the
    next that many batches of the stream of passes over the faces (each
    pass planned as an epoch was), as Keras' ``steps_per_epoch`` takes a
    repeating dataset; a batch is made as it was at its place in that stream.
    ``source``: the file the faces came from, and ``held_out`` what a split
    held out of it (``held_out_words``), for the line refusing a batch larger
    than the faces (``DatasetError``).
    """

    def __init__(self, parts: FaceParts, batch_size, augmenter=None, shuffle=True, seed=0,
                 max_batches: int | None = None, pad_remainder: bool = False, steps_per_epoch: int | None = None,
                 source=None, held_out: str = "", **kwargs):
        super().__init__(**kwargs)
        if batch_size > parts.faces and source is not None:
            raise npz.DatasetError(f"{source}: --batch {batch_size} is more than its {parts.faces} training faces{held_out}")
        if batch_size > parts.faces:  # no file to name: a program's own LandmarkBatches
            raise ValueError(f"batch size {batch_size} is larger than the {parts.faces} training faces (--batch)")
        self._pack = pack_targets
        self.parts, self.batch_size, self.augmenter = parts, batch_size, augmenter
        self.shuffle, self.seed, self.max_batches = shuffle, seed, max_batches
        self.pad_remainder = pad_remainder
        self.per_pass = len(self.plan_of(0))  # the batches of a pass over the faces: the same in every pass
        self.steps_per_epoch = None if steps_per_epoch is None or steps_per_epoch >= self.per_pass else steps_per_epoch
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Epoch ``epoch``'s batches, each as ``(planned, pass, index)``: its entry of ``plan_of(pass)``, whose place in
        the stream seeds its augmentation (one list, replaced at once: a loader thread reads it meanwhile)."""
        if self.steps_per_epoch is None:
            places = [(epoch, index) for index in range(self.per_pass)]
        else:
            places = [divmod(step, self.per_pass) for step in range(epoch * self.steps_per_epoch,
                                                                    (epoch + 1) * self.steps_per_epoch)]
        plans = {done: self.plan_of(done) for done, _ in places}
        self.epoch, self._batches = epoch, [(plans[done][index], done, index) for done, index in places]

    @property
    def plan(self) -> list:
        """This epoch's batches, ``(part, rows)`` each, in order."""
        return [planned for planned, _, _ in self._batches]

    def plan_of(self, epoch: int) -> list:
        """Epoch ``epoch``'s batches, ``(part, rows)`` each, in order: a function of the seed and the epoch alone."""
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.parts.counts)) if self.shuffle else range(len(self.parts.counts))
        plan = []
        for part in order:
            rows = np.arange(self.parts.counts[part])
            if self.parts.repeats is not None:  # oversampled sources: their rows several times
                rows = np.repeat(rows, self.parts.repeats[part])
            rows = rng.permutation(rows) if self.shuffle else rows
            plan += [(part, np.sort(rows[i:i + self.batch_size])) for i in range(0, len(rows), self.batch_size)]
        return plan[:self.max_batches]

    def __len__(self):
        return len(self._batches)

    def __getitem__(self, index):
        return self.batch(*self._batches[index])

    def batch(self, planned, epoch: int, index: int, pad: bool | None = None):
        """Batch ``index`` of epoch ``epoch`` (``planned``: its entry of ``plan_of(epoch)``), augmented; a short one
        padded to the batch size where ``pad`` (default: ``pad_remainder``)."""
        part, rows = planned
        inputs, landmarks, visible = self.parts.get(part)
        x, landmarks, visible = inputs[rows], landmarks[rows], visible[rows]
        if self.augmenter is not None:
            rng = np.random.default_rng([self.seed, epoch, index, 1])
            x, landmarks, visible = self.augmenter(x, landmarks, visible, rng=rng, rows=self.batch_size)
        x, targets = np.asarray(x, np.float32), self._pack(landmarks, visible)
        if self.pad_remainder if pad is None else pad:
            x, targets = pad_batch(x, targets, self.batch_size)
        return x, targets

    def endless(self, skip: int = 0):
        """Batches epoch after epoch, from face ``skip`` of that stream on (for a tf.data pipeline under a
        tf.distribute strategy, which cuts it into steps regardless of epochs: a resumed run skips the faces the
        finished epochs' steps took).  Its own plans: ``set_epoch``, which a callback calls from the training
        thread, does not reach into the stream a tf.data thread is reading ahead."""
        epoch = 0
        while True:
            for index, planned in enumerate(self.plan_of(epoch)):
                if skip >= len(planned[1]):
                    skip -= len(planned[1])
                    continue
                x, targets = self.batch(planned, epoch, index, pad=False)  # the stream is cut into full batches
                yield x[skip:], targets[skip:]
                skip = 0
            epoch += 1


def pad_batch(x: np.ndarray, targets: np.ndarray | None, size: int):
    """A batch of fewer than ``size`` rows filled up to ``size``: its faces again, in order, with targets (where given)
    that have no visible point.  Every loss and metric averages over the visible points, so the extra rows change
    neither the loss nor its gradients; batch normalisation sees the batch's own faces (the same statistics where the
    count divides ``size``)."""
    extra = size - len(x)
    if extra <= 0:
        return x, targets
    x = np.concatenate([x, x[np.arange(extra) % len(x)]])
    if targets is not None:
        targets = np.concatenate([targets, np.zeros((extra, *targets.shape[1:]), targets.dtype)])
    return x, targets


def tf_input_pipeline(batches: LandmarkBatches, global_batch: int, input_shape, num_points: int, skip: int = 0):
    """A tf.data pipeline of fixed-size batches from ``batches``, for tf.distribute strategies.

    Every step gets a full batch (faces flow on into the next pass over the
    data), so the last partial batch never breaks a synchronous step; each
    worker feeds its own faces, so the strategy must not shard the data.
    A strategy takes a dataset's batch for the *global* one and splits it into
    one piece per replica of the whole cluster, a worker taking its replicas'
    pieces: the stream's batches are ``global_batch`` faces, of which a worker
    of a cluster trains on its share (``global_batch / workers``) per step and
    the next share at the next step.  Batched by the worker's share, a step of
    two workers took half of it and an epoch half the faces, and a resumed run
    skipped faces never trained on.
    ``skip``: faces of the stream already trained on (a resumed run's).
    """
    import functools

    import tensorflow as tf

    signature = (
        tf.TensorSpec((None, *input_shape), tf.float32),
        tf.TensorSpec((None, num_points, 3), tf.float32),
    )
    dataset = tf.data.Dataset.from_generator(functools.partial(batches.endless, skip), output_signature=signature)
    dataset = dataset.rebatch(global_batch, drop_remainder=True).prefetch(2)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return dataset.with_options(options)


def scheme_for(arrays: dict):
    return get_scheme(str(arrays["scheme"]))


def pack_targets(landmarks: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """(N, K, 2) coordinates + (N, K) visibility -> float32 (N, K, 3) ``y_true``.

    Hidden points' coordinates are set to 0 (they are never read), so NaN
    placeholders in a dataset cannot leak into a loss.
    """
    landmarks = np.asarray(landmarks, np.float32)
    visible = np.asarray(visible, bool)
    if landmarks.ndim != 3 or landmarks.shape[-1] != 2:
        raise ValueError(f"landmarks must be (N, K, 2), got {landmarks.shape}")
    if visible.shape != landmarks.shape[:2]:
        raise ValueError(f"visible must be (N, K) = {landmarks.shape[:2]}, got {visible.shape}")
    coords = np.where(visible[..., None], landmarks, 0.0).astype(np.float32)
    return np.concatenate([coords, visible[..., None].astype(np.float32)], axis=-1)
