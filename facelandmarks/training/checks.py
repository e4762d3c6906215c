"""What ``train.py`` checks of a run's settings and data before it trains, each refusal one line naming the flag
or the file: the model's settings before the data loads, a resumed run's data once it has."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from facelandmarks.training.config import TrainConfig


def load_plugins_for_run(config: TrainConfig, resume: bool, model: str | None = None, read_from=None) -> None:
    """The run's plugins imported before the model and the loss are checked (a pipeline's refiner included): a new
    run's with FACELANDMARKS_PLUGINS', which ``config.plugins`` then lists (its config.json records them); a resumed
    run's as recorded, the variable naming where a recorded file that is not there is now, which must then register
    ``model``, the model the run trains (default ``config.model``; a pipeline's refiner: ``trainers.trained_model``).

    ``read_from``: the file a new run's plugins were read from (a ``--config`` file, ``--init RUN``'s config.json; None:
    typed or none), read back as a resumed run's are (``plugins.load_run_plugins``). A run that finds a recorded file
    elsewhere through the variable records the plugins where they are now (``plugins.plugins_here``), a line says so."""
    from facelandmarks.models import plugins
    from facelandmarks.runtime import env_plugins

    if not resume and read_from is None:
        config.plugins = plugins.with_env_plugins(config.plugins)
        plugins.load_plugins(config.plugins)
        return
    source = Path(config.run_dir) / "config.json" if resume else read_from
    where = f"plugins of {source}; " + ("--resume --plugins PATH" if resume else f"--plugins PATH or {plugins.ENV}=PATH")
    if model is None and not config.pipeline:
        model = config.model
    recorded, absent = list(config.plugins), plugins.absent_files(config.plugins)
    plugins.load_run_plugins(recorded, f"{where}: where it is now", model, config.loss)
    if absent and env_plugins():  # the variable names where they are now
        config.plugins = plugins.plugins_here(recorded)
        print(f"plugins {','.join(config.plugins)} ({plugins.ENV}) in place of {','.join(map(str, absent))}, not there "
              f"(plugins of {source}): {Path(config.run_dir) / 'config.json'} records them")
    elif not resume:  # a new run records the plugins it loaded (a file not there and not needed: a note said so)
        config.plugins = plugins.plugins_here(recorded)


def check_model(config: TrainConfig) -> None:
    """What ``build_model`` would refuse of --model-options, --weights and --train-blocks (``models.check_arguments``),
    and a --weights file that is not there, as one line naming the flag or the file, before the data loads and the run
    folder is made (they were found after both, in a line naming no flag)."""
    from facelandmarks.models import backbones, check_arguments
    from facelandmarks.models.registry import ArgumentError

    try:
        check_arguments(config.model, config.weights, config.train_blocks, **config.model_options)
    except ArgumentError as err:
        raise ValueError(f"--{err.argument.replace('_', '-')}: {err}") from None
    if backbones.weights_kind(config.weights) == "path" and not Path(config.weights).is_file():
        raise FileNotFoundError(f"{config.weights}: no such weights file (--weights: 'none', 'imagenet' or a .weights.h5 "
                                f"/ .h5 file)")


def build_for_run(config: TrainConfig, num_points: int):
    """``build_model`` with the run's settings. ``check_model`` knew the options' names; their values are the builder's
    to check, and its ``ValueError`` names neither the model nor where the value came from: the line says both."""
    from facelandmarks.models import build_model

    try:
        return build_model(config.model, input_shape=tuple(config.input_shape), num_points=num_points,
                           weights=config.weights, train_blocks=config.train_blocks, **config.model_options)
    except ValueError as err:
        given = f"--model-options {json.dumps(config.model_options)}, " if config.model_options else ""
        raise ValueError(f"model {config.model!r} ({given}{'x'.join(map(str, config.input_shape))} inputs): {err}") from None


def check_resumed_data(config: TrainConfig, scheme, input_shape: list) -> None:
    """``--resume`` with ``--data`` (and ``--size``) giving other points or other inputs than the run trained on
    (``config``: the saved settings): ``--data`` may name the file where it now is, not another file. That was told
    'the same file, moved', then ended in Keras' many-line error on loading the weights."""
    advice = f"--resume goes on with the data it trained on; --init {shlex.quote(config.run_dir)} starts a new run from it on this data"
    if config.scheme is not None and (config.scheme, config.num_points) != (scheme.name, scheme.num_points):
        raise ValueError(f"{config.data}: holds {scheme.name} points ({scheme.num_points}), the run in {config.run_dir} "
                         f"trained on {config.scheme} ({config.num_points}): {advice}")
    if config.input_shape and list(config.input_shape) != list(input_shape):
        shape = "x".join(map(str, input_shape))
        raise ValueError(f"{config.data}: gives inputs of {shape}, the run in {config.run_dir} trained on "
                         f"{'x'.join(map(str, config.input_shape))}: {advice}")
