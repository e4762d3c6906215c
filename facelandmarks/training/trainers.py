"""What ``train.py MODEL`` runs, by name: ``fit`` for a registered model, or a registered trainer.

A trainer is anything that trains from a ``TrainConfig`` but is more than one ``fit`` — a
coarse-to-fine pipeline trains a box network or several region refiners.  It registers itself here
under its own name, with the dataclass of its extra settings (declared with the same field metadata
as ``TrainConfig``).  The CLI turns that dataclass into an argument group, and the values travel in
``TrainConfig.pipeline``, so neither the CLI nor this module names any pipeline, and this layer never
imports the layers above it that register (``facelandmarks.pipelines`` registers on import).

This module loads no Keras: ``fit`` and the model registry are imported when a run starts.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass

from facelandmarks.training.config import TrainConfig


@dataclass(frozen=True)
class Trainer:
    """One way to train: ``fn(config, resume) -> summary dict``.

    ``options`` is the dataclass of its extra settings (None: none); ``needs_data`` is False for a
    trainer that can find its data elsewhere (a pipeline refining a stage-1 run takes that run's); ``model_of``
    gives the registered model it trains from its settings (``TrainConfig.pipeline``), which a resumed run's
    plugins must register (None: not known before it trains).
    """

    name: str
    fn: Callable[[TrainConfig, bool], dict]
    options: type | None = None
    needs_data: bool = True
    model_of: Callable[[dict], str | None] | None = None

    def __call__(self, config: TrainConfig, resume: bool = False) -> dict:
        return self.fn(config, resume)


TRAINERS: dict[str, Trainer] = {}


def register_trainer(name: str, fn: Callable[[TrainConfig, bool], dict], options_dataclass: type | None = None,
                     needs_data: bool = True, model_of: Callable[[dict], str | None] | None = None) -> Trainer:
    """Make ``train.py NAME`` run ``fn(config, resume)``; its settings are ``options_dataclass``'s fields."""
    if name in TRAINERS:
        raise ValueError(f"trainer {name!r} is registered twice")
    trainer = Trainer(name, fn, options_dataclass, needs_data, model_of)
    TRAINERS[name] = trainer
    return trainer


def registered_trainer(name: str | None) -> Trainer | None:
    """The trainer registered under ``name``, None for a plain model name (no model registry, no Keras)."""
    return TRAINERS.get(name) if name else None


def trained_model(config: TrainConfig) -> str | None:
    """The registered model a run trains: its ``model``, or the one a trainer's settings name (a pipeline's refiner);
    None where the trainer does not say."""
    trainer = registered_trainer(config.model)
    if trainer is None:
        return config.model
    return trainer.model_of(config.pipeline) if trainer.model_of else None


def option_groups() -> list[tuple[type, list[str]]]:
    """Each distinct options dataclass with the names of the trainers that take it, in registration order."""
    groups: dict[type, list[str]] = {}
    for trainer in TRAINERS.values():
        if trainer.options is not None:
            groups.setdefault(trainer.options, []).append(trainer.name)
    return list(groups.items())


def _fit(config: TrainConfig, resume: bool = False) -> dict:
    from facelandmarks.training.fit import fit

    return fit(config, resume=resume)


def get_trainer(name: str) -> Trainer:
    """The trainer for ``train.py NAME``: a registered trainer, else ``fit`` for a registered model."""
    if name in TRAINERS:
        return TRAINERS[name]
    from facelandmarks.models import REGISTRY

    if name in REGISTRY:
        return Trainer(name, _fit)
    known = [*REGISTRY, *TRAINERS]
    close = difflib.get_close_matches(name.lower(), known, n=1, cutoff=0.75)
    hint = f"did you mean {close[0]}? " if close else ""
    raise ValueError(f"unknown model {name!r}; {hint}known: {', '.join(known)} (python models.py --list)")
