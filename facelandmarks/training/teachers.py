"""Distillation: trained models (teachers) supply part of each training face's target.

``train.py --teachers A,B --teacher-weight W`` predicts every training face with each teacher (a run
folder or a shipped-model folder), with the flip test, averages the teachers, and trains on

    target = (1 - W) * annotation + W * teachers' mean

for every visible point (a hidden point keeps its annotation: it carries no loss anyway).  The
validation faces keep their annotations, so validation numbers stay comparable with any other run.
The targets are computed once, before the first epoch (again on ``--resume``: the same numbers), on
the stored crops; augmentation then moves them with the image like any annotation.

Averaging two independently trained models' points beat each of them by 0.05-0.14 NME points on
both test sets (docs/results.md); distillation asks one network of the usual size to learn that
average.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from facelandmarks import metrics
from facelandmarks.data.feeding import model_inputs
from facelandmarks.landmarks import get_scheme
from facelandmarks.training.runs import flip_averaged, read_run_config, rebuild_model


def teacher_points(sources: list[str], images: np.ndarray, scheme: str, batch: int = 64) -> np.ndarray:
    """(N, K, 2) crop coordinates of ``images``: each teacher's flip-test points, averaged over the teachers."""
    total = np.zeros((len(images), get_scheme(scheme).num_points, 2), np.float64)
    for source in sources:
        config = _teacher_config(source, scheme, images.shape[-1])
        model = rebuild_model(Path(source), config)
        size, start = int(config["input_shape"][0]), time.time()
        for first in range(0, len(images), batch):
            crops = model_inputs({"images": images[first:first + batch]}, size).astype(np.float32)
            total[first:first + batch] += flip_averaged(model.predict_on_batch, crops, scheme)
        print(f"teacher {source}: {len(images)} training faces predicted with the flip test "
              f"in {time.time() - start:.0f} s", flush=True)
        del model
    return (total / len(sources)).astype(np.float32)


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
    """``train`` with each visible point moved a share ``weight`` of the way to the teachers' point."""
    landmarks = np.asarray(train["landmarks"], np.float32)
    visible = np.asarray(train["visible"], bool)[..., None]
    blended = np.where(visible, (1.0 - weight) * landmarks + weight * teachers, landmarks).astype(np.float32)
    return {**train, "landmarks": blended}


def with_teacher_targets(config, train: dict) -> dict:
    """The training faces with the targets of ``config.teachers`` blended in (``train`` itself without teachers)."""
    if not config.teachers:
        return train
    if not isinstance(train, dict) or "images" not in train:
        raise ValueError(f"{config.data}: --teachers needs training images in memory (an npz of images, not "
                         "features or a sharded manifest)")
    teachers = teacher_points(config.teachers, train["images"], str(train["scheme"]))
    print(f"distillation: targets {1 - config.teacher_weight:g} x annotation + {config.teacher_weight:g} x the mean of "
          f"{len(config.teachers)} teacher(s), which is {_distance(teachers, train)} from the annotations", flush=True)
    return blend_targets(train, teachers, config.teacher_weight)


def _distance(teachers: np.ndarray, train: dict) -> str:
    """How far the teachers' points lie from the annotations: NME where the scheme has one, else in crop units."""
    scheme = get_scheme(str(train["scheme"]))
    visible = np.asarray(train["visible"], bool)
    if scheme.norm_points is not None or scheme.normalize == "box":
        return f"NME {100 * np.nanmean(metrics.nme_per_face(teachers, train['landmarks'], visible, scheme)):.2f} %"
    return f"{100 * np.linalg.norm(teachers - train['landmarks'], axis=-1)[visible].mean():.2f} % of the crop on average"
