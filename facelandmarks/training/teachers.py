"""Distillation: trained models (teachers) supply part of each training face's target.

``train.py --teachers A,B --teacher-weight W`` predicts every training face with each teacher (a run
folder or a shipped-model folder), with the flip test (and a second look, ``--teacher-recrop``), averages the
teachers, and trains on

    target = (1 - W) * annotation + W * teachers' mean

for every visible point (a hidden point keeps its annotation: it carries no loss anyway).  The
validation faces keep their annotations, so validation numbers stay comparable with any other run.
The targets are computed once, before the first epoch (again on ``--resume``: the same numbers), on
the stored crops; augmentation then moves them with the image like any annotation.

A teacher only teaches the faces it trained on.  A teacher split by subject (``--val-fraction``) held
its validation people out; on them its points are a held-out prediction (our teachers: about 4.3 % NME
from the annotations there, against 2.8 % for their mean on the faces they fitted).  So when the student trains on faces a teacher held out (a
final run with ``--val-fraction 0``, or another split), those faces take the mean of the other
teachers, and the annotation alone where no teacher trained on them.  The teacher's split is drawn
again from its settings over the student's data file, which must be the file it trained on.

Averaging two independently trained models' points beat each of them by 0.05-0.14 NME points on
both test sets (docs/results.md); distillation asks one network of the usual size to learn that
average.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import numpy as np

from facelandmarks import metrics
from facelandmarks.data import npz
from facelandmarks.data.feeding import model_inputs, split_by_subject
from facelandmarks.landmarks import get_scheme
from facelandmarks.scheme_files import landmark_box_of
from facelandmarks.training.config import ConfigError, TrainConfig, check_values, split_seed_of
from facelandmarks.training.runs import flip_averaged, read_run_config, rebuild_model, recropped


def teacher_points(sources: list[str], images: np.ndarray, scheme: str, batch: int = 64,
                   taught: list[np.ndarray] | None = None, recrop: bool = False) -> np.ndarray:
    """(N, K, 2) crop coordinates of ``images``: each teacher's flip-test points, averaged over the teachers.

    ``recrop``: each teacher's points averaged with its second look, on the crop cut around them (``--recrop``'s).

    ``taught``, one boolean per face for each teacher, leaves a teacher out of the faces it is False for;
    a face no teacher teaches gets NaN.
    """
    total = np.zeros((len(images), get_scheme(scheme).num_points, 2), np.float64)
    count = np.zeros(len(images), np.int64)
    for number, source in enumerate(sources):
        config = _teacher_config(source, scheme, images.shape[-1])
        mask = np.ones(len(images), bool) if taught is None else np.asarray(taught[number], bool)
        model = rebuild_model(Path(source), config)
        forward = partial(flip_averaged, model.predict_on_batch, scheme=scheme)
        size, start = int(config["input_shape"][0]), time.time()
        box = landmark_box_of(config.get("scheme_definition"), f"{source} (scheme_definition)", scheme) if recrop else None
        for first in range(0, len(images), batch):
            crops = model_inputs({"images": images[first:first + batch]}, size).astype(np.float32)
            points = forward(crops)
            if recrop:
                points = recropped(forward, crops, points, box)
            total[first:first + batch] += np.where(mask[first:first + batch, None, None], points, 0.0)
        count += mask
        print(f"teacher {source}: {len(images)} training faces predicted with the flip test{' and recrop' if recrop else ''} "
              f"in {time.time() - start:.0f} s", flush=True)
        del model, forward  # forward holds the model too
    with np.errstate(invalid="ignore", divide="ignore"):
        return (total / count[:, None, None]).astype(np.float32)


def held_out_by(config: dict, source: str, data: str, subjects: np.ndarray) -> np.ndarray:
    """Which faces (of ``subjects``, the student's training faces) the teacher ``source``, of settings
    ``config``, held out as its validation people: its split by subject drawn again over the subjects of
    ``data``, the student's file."""
    settings = split_settings(config, source)
    fraction = settings["val_fraction"]
    if settings["val"] or fraction <= 0.0:  # validated on a file of its own, or on nothing: it trained on all
        return np.zeros(len(subjects), bool)
    if settings["data"] and Path(settings["data"]).name != Path(data).name:
        print(f"warning: teacher {source} trained on {settings['data']}, not {data}: its validation people are drawn "
              f"again over {data}'s subjects, right only if the two files hold the same people", flush=True)
    every = npz.read_member(data, "subject")
    _, val_idx = split_by_subject(every, fraction, split_seed_of(settings))
    return np.isin(np.asarray(subjects).astype(str), np.unique(np.asarray(every).astype(str)[val_idx]))


SPLIT_KEYS = ("val_fraction", "val", "data", "split_seed", "seed")


def split_settings(config: dict, source: str) -> dict:
    """The settings (``SPLIT_KEYS``) the teacher ``source``, of ``config.json`` ``config``, drew its validation split
    with, read as ``train.py --resume`` reads a run (``TrainConfig.load``): a value of the wrong type or out of range
    is a ``ConfigError`` naming the teacher's config.json and the key (a non-number ``val_fraction`` was a ValueError
    naming neither).  A shipped model's (no ``data`` or ``run_dir``: no run's for ``TrainConfig.load``) has these
    keys checked alone."""
    path = Path(source) / "config.json"
    if "data" in config and "run_dir" in config:
        loaded = TrainConfig.load(path)
        return {key: getattr(loaded, key) for key in SPLIT_KEYS}
    settings = {"val_fraction": 0.0, "val": None, "data": None, "split_seed": None, "seed": None,
                **check_values(TrainConfig, {k: config[k] for k in SPLIT_KEYS if k in config}, str(path))}
    if not 0.0 <= settings["val_fraction"] < 1.0:
        raise ConfigError(f"{path}: val_fraction must be in [0, 1), got {settings['val_fraction']}")
    return settings


def _teacher_config(source: str, scheme: str, channels: int) -> dict:
    if not Path(source).is_dir():
        raise FileNotFoundError(f"{source}: no such run or shipped-model folder (--teachers)")
    config = read_run_config(Path(source))
    if config.get("input_kind", "image") != "image":
        raise ValueError(f"{source}: a teacher must take images; {config['model']} takes features (--teachers)")
    if config["scheme"] != scheme:
        raise ValueError(f"{source}: the teacher marks scheme {config['scheme']}, the training data {scheme} (--teachers)")
    if int(config["input_shape"][-1]) != channels:
        raise ValueError(f"{source}: the teacher takes {config['input_shape'][-1]}-channel crops, the training data "
                         f"has {channels} (--teachers)")
    return config


def blend_targets(train: dict, teachers: np.ndarray, weight: float) -> dict:
    """``train`` with each visible point moved a share ``weight`` of the way to the teachers' point (where that
    is NaN, no teacher trained on the face: the annotation stays)."""
    landmarks = np.asarray(train["landmarks"], np.float32)
    visible = np.asarray(train["visible"], bool)[..., None]
    taught = visible & np.isfinite(teachers).all(axis=-1, keepdims=True)  # NaN: no teacher trained on the face
    blended = np.where(taught, (1.0 - weight) * landmarks + weight * np.nan_to_num(teachers), landmarks)
    blended = blended.astype(np.float32)
    return {**train, "landmarks": blended}


def with_teacher_targets(config, train: dict) -> dict:
    """The training faces with the targets of ``config.teachers`` blended in (``train`` itself without teachers)."""
    if not config.teachers:
        return train
    if not isinstance(train, dict) or "images" not in train:
        raise ValueError(f"{config.data}: --teachers needs training images in memory (an npz of images, not "
                         "features or a sharded manifest)")
    scheme, channels = str(train["scheme"]), train["images"].shape[-1]
    held_out = [held_out_by(_teacher_config(source, scheme, channels), source, config.data, train["subject"])
                for source in config.teachers]
    for source, mask in zip(config.teachers, held_out):
        if mask.any():
            print(f"teacher {source} held out {int(mask.sum())} of these faces (its validation people): it does not "
                  f"teach them", flush=True)
    teachers = teacher_points(config.teachers, train["images"], scheme, taught=[~m for m in held_out],
                              recrop=config.teacher_recrop)
    untaught = int((~np.isfinite(teachers).all(axis=(1, 2))).sum())
    print(f"distillation: targets {1 - config.teacher_weight:g} x annotation + {config.teacher_weight:g} x the mean of "
          f"{len(config.teachers)} teacher(s), which is {_distance(teachers, train)} from the annotations"
          + (f"; {untaught} faces no teacher trained on keep their annotation" if untaught else ""), flush=True)
    return blend_targets(train, teachers, config.teacher_weight)


def _distance(teachers: np.ndarray, train: dict) -> str:
    """How far the teachers' points lie from the annotations: NME where the scheme has one, else in crop units."""
    scheme = get_scheme(str(train["scheme"]))
    taught = np.isfinite(teachers).all(axis=(1, 2))
    teachers, train = teachers[taught], {key: np.asarray(train[key])[taught] for key in ("landmarks", "visible")}
    visible = np.asarray(train["visible"], bool)
    if scheme.norm_points is not None or scheme.normalize == "box":
        return f"NME {100 * np.nanmean(metrics.nme_per_face(teachers, train['landmarks'], visible, scheme)):.2f} %"
    return f"{100 * np.linalg.norm(teachers - train['landmarks'], axis=-1)[visible].mean():.2f} % of the crop on average"
