"""``--init`` into another markup: which layers of the head restart, and (``--init-head nearest``) where they start.

The layers sized by the point count (``head_layers``) mean the other markup's points and restart. With
``init_head: nearest`` each new point's share of them (its channels: PIP's score map and x, y offsets, a heatmap,
a regressor's x, y) starts as a copy of the init model's point that lies nearest to it on the training faces, by
that model's own predictions, where that is within ``NEAREST_WITHIN`` of the normalising distance; the others start
fresh. Measured on face5 from the shipped 68-point model (docs/own-landmarks.md), 5 epochs: 2.81 % test NME from the
nearest points, 9.34 % with a fresh head.
"""

from __future__ import annotations

import keras
import numpy as np

NEAREST_WITHIN = 0.10  # a point farther from every point of the init model than this starts fresh
NEAREST_FACES = 256  # training faces the init model predicts to find the nearest points


def restart_for_markup(config, before: dict | None, scheme, model) -> tuple[tuple[str, ...], str]:
    """For ``--init`` from a run (``before``: its config.json) of another markup with as many points: the layers of
    ``model``'s head, which ``init_weights`` then starts fresh (their outputs are the other markup's points), and the
    reason for its line."""
    other = before.get("scheme") if before else None
    if other is None or before.get("num_points") != scheme.num_points:
        return (), ""  # another point count: the layers that do not fit restart anyway
    if other == scheme.name:  # the same markup, unless its scheme file now names other points
        was, now = (before.get("scheme_definition") or {}).get("points"), scheme.to_dict()["points"]
        if not isinstance(was, list) or was == now or not isinstance(now, list):
            return (), ""
        i = next(i for i, (a, b) in enumerate(zip(was, now)) if a != b)
        return head(config, scheme, model), (f": the run's {other} named its points otherwise (point {i} was {was[i]!r}, "
                                             f"this data's is {now[i]!r}): its scheme file has changed since")
    return head(config, scheme, model), f": the run's points are {other}'s, this data's {scheme.name}'s"


def head(config, scheme, model) -> tuple[str, ...]:
    """The layers of ``model`` sized by the point count (``head_layers``, against a build for one point more)."""
    from facelandmarks.models import build_model
    from facelandmarks.training.init import head_layers

    one_more = build_model(config.model, input_shape=tuple(config.input_shape), num_points=scheme.num_points + 1,
                           weights="none", train_blocks=config.train_blocks, **config.model_options)
    return head_layers(model, one_more)


def nearest_points(predicted: np.ndarray, landmarks: np.ndarray, visible: np.ndarray, scheme) -> tuple[np.ndarray, np.ndarray]:
    """For each point of ``scheme`` (``landmarks``, (N, K, 2), ``visible``): the index of the point of ``predicted``
    ((N, K_old, 2), another model's points on the same faces) nearest to it, by the mean over the faces where it is
    visible of their distance over the face's normalising distance; and that mean (inf for a point never seen)."""
    from facelandmarks import metrics

    try:
        norm = metrics.normalising_distance(landmarks, visible, scheme)
    except ValueError:  # a scheme without normalising points: the box of the face's points
        norm = metrics.box_size(landmarks, visible)
    seen = np.asarray(visible, bool) & np.isfinite(norm)[:, None]  # (N, K)
    distance = np.linalg.norm(np.asarray(predicted, np.float64)[:, :, None] - np.asarray(landmarks, np.float64)[:, None],
                              axis=-1) / np.where(np.isfinite(norm), norm, 1.0)[:, None, None]  # (N, K_old, K)
    counts = seen.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(seen[:, None], distance, 0.0).sum(axis=0) / counts  # (K_old, K)
    mean[:, counts == 0] = np.inf
    nearest = mean.argmin(axis=0)
    return nearest, mean[nearest, np.arange(mean.shape[1])]


def copy_point_channels(model, old, layers: tuple[str, ...], pairs: dict[int, int]) -> None:
    """Point ``j``'s channels of the layers ``layers`` of ``model`` (paths, as ``head_layers`` gives them) become
    point ``pairs[j]``'s of ``old``, the same model built for another point count (its variables in the same order).
    A layer's last axis holds each point's channels together (m per point: 1 for scores, 2 for x, y)."""
    k_new, k_old = model.output_shape[-2], old.output_shape[-2]
    if len(model.weights) != len(old.weights):
        raise ValueError(f"{old.name}: not {model.name} built for another point count (other layers)")
    for mine, theirs in zip(model.weights, old.weights):
        if mine.path.rsplit("/", 1)[0] not in layers:
            continue
        per_point, rest = divmod(mine.shape[-1], k_new)
        if rest or tuple(theirs.shape) != (*mine.shape[:-1], per_point * k_old):
            raise ValueError(f"{mine.path}: {tuple(mine.shape)} against {tuple(theirs.shape)}: not {per_point} channels "
                             f"a point")
        value, source = np.array(keras.ops.convert_to_numpy(mine)), keras.ops.convert_to_numpy(theirs)
        for j, i in pairs.items():
            value[..., j * per_point:(j + 1) * per_point] = source[..., i * per_point:(i + 1) * per_point]
        mine.assign(value)


def nearest_faces(parts, train, workers: int = 1):
    """The faces ``start_from_nearest`` predicts, (inputs, landmarks, visible): up to ``NEAREST_FACES`` of ``train``,
    the training faces as annotated (where ``--teachers`` blends the targets ``parts`` feeds, the nearest points are
    still matched against the annotations), at ``parts``' input size. In a job of several processes process 0's (an
    npz's faces 0, ``workers``, 2 ``workers`` ...; a shard set's shard 0) in every process, which must all start the
    head alike."""
    from facelandmarks.data import npz
    from facelandmarks.data.feeding import FaceParts, model_inputs

    if isinstance(train, npz.ShardSet):  # (--teachers takes no shards: their targets are the annotations)
        return parts.get(0) if workers == 1 else FaceParts(train, parts.size).get(0)
    rows = np.arange(0, min(len(train["landmarks"]), NEAREST_FACES * workers), workers)
    return model_inputs(npz.subset(train, rows), parts.size), train["landmarks"][rows], train["visible"][rows]


def start_from_nearest(model, config, before: dict | None, scheme, faces, layers: tuple[str, ...] = (),
                       cluster=None) -> tuple[str, int]:
    """``--init-head nearest``, after ``init_weights`` restarted ``model``'s head (``layers``: those it restarted, as
    ``restart_for_markup`` gave them; () for ``head``'s): each point of this run's markup whose nearest point of the
    init model (``before``: its config.json; its predictions on up to ``NEAREST_FACES`` of ``faces``, (inputs,
    landmarks, visible): ``nearest_faces``) lies within ``NEAREST_WITHIN`` starts from that point's head channels.
    ``cluster``: the run's (``distribute.Cluster``), whose processes predict together. Returns the line to print and
    how many points start fresh (``--head-lr-scale``'s default)."""
    from facelandmarks.data.feeding import model_inputs
    from facelandmarks.training.distribute import predict_all
    from facelandmarks.training.init import _weights_file
    from facelandmarks.training.runs import build_run_model

    if before is None:
        return (f"the head starts fresh: {config.init} has no config.json to rebuild its model from, so no point of "
                f"this markup can start from its nearest one", scheme.num_points)
    layers = layers or head(config, scheme, model)  # each a model built once more: not twice
    inputs, landmarks, visible = (np.asarray(a[:NEAREST_FACES]) for a in faces)
    shape = _init_input_shape(before, config.input_shape)
    if shape[:2] != list(config.input_shape)[:2]:  # at the size it trained at, whose weights may depend on it (a dense
        inputs = model_inputs({"images": inputs}, shape[0])  # layer on the flattened image): faces resized to it
    old = build_run_model({**before, "input_shape": shape})
    old.load_weights(_weights_file(config.init))
    batch = cluster.global_batch(config.batch) if cluster is not None else config.batch
    predicted = predict_all(old, inputs.astype(np.float32), batch, cluster)  # Keras's predict failed with 2 processes
    nearest, distance = nearest_points(predicted, landmarks, visible, scheme)
    pairs = {j: int(i) for j, (i, d) in enumerate(zip(nearest, distance)) if d <= NEAREST_WITHIN}
    copy_point_channels(model, old, layers, pairs)
    other = before.get("scheme") or "the init model"

    def said(j: int, i: int, d: float) -> str:
        if j in pairs:
            return f"{scheme.point_label(j)} <- {other} {i} ({100 * d:.1f} %)"
        return f"{scheme.point_label(j)} fresh ({'never visible' if np.isinf(d) else f'{other} {i} at {100 * d:.1f} %'})"

    return (f"--init-head nearest: {len(pairs)} of {scheme.num_points} points start from the head of {other}'s point "
            f"nearest them on {len(inputs)} training faces (mean distance, % of the normalising distance; beyond "
            f"{100 * NEAREST_WITHIN:.0f} % a point starts fresh): "
            + ", ".join(said(j, int(i), float(d)) for j, (i, d) in enumerate(zip(nearest, distance)))), \
        scheme.num_points - len(pairs)


def _init_input_shape(before: dict, input_shape) -> list:
    """The input shape the init model predicts at for ``start_from_nearest``: its own (``before``'s, from its
    config.json) where it took images of this run's channels, else this run's ``input_shape``."""
    theirs, ours = list(before.get("input_shape") or ()), list(input_shape)
    return theirs if len(theirs) == 3 and len(ours) == 3 and theirs[2] == ours[2] else ours
