"""What ``train.py`` checks of a run's settings and data before it trains, each refusal one line naming the flag
or the file: the model's settings before the data loads, a resumed run's data once it has."""

from __future__ import annotations

from pathlib import Path

from facelandmarks.training.config import TrainConfig


def check_model(config: TrainConfig) -> None:
    """What ``build_model`` would refuse of --model-options, --weights and --train-blocks, as one line naming the flag,
    before the data loads and the run folder is made (it was found after both, and named no flag)."""
    from facelandmarks.models import backbones, get_spec, model_options

    spec, kind = get_spec(config.model), backbones.weights_kind(config.weights)
    if unknown := sorted(set(config.model_options) - set(model_options(config.model))):
        raise ValueError(f"--model-options: model {config.model!r} has no option(s) {', '.join(unknown)}; its options: "
                         f"{', '.join(model_options(config.model)) or 'none'}")
    if spec.backbone is None and kind != "none":
        raise ValueError(f"--weights: model {config.model!r} has no pretrained backbone: only 'none', got {config.weights!r}")
    if spec.backbone is None and config.train_blocks is not None:
        raise ValueError(f"--train-blocks: model {config.model!r} has no backbone blocks, got {config.train_blocks}")
    if kind == "path" and not Path(config.weights).is_file():
        raise FileNotFoundError(f"{config.weights}: no such weights file (--weights: 'none', 'imagenet' or a .weights.h5 "
                                f"/ .h5 file)")


def check_resumed_data(config: TrainConfig, scheme, input_shape: list) -> None:
    """``--resume`` with ``--data`` (and ``--size``) giving other points or other inputs than the run trained on
    (``config``: the saved settings): ``--data`` may name the file where it now is, not another file. That was told
    'the same file, moved', then ended in Keras' many-line error on loading the weights."""
    advice = f"--resume goes on with the data it trained on; --init {config.run_dir} starts a new run from it on this data"
    if config.scheme is not None and (config.scheme, config.num_points) != (scheme.name, scheme.num_points):
        raise ValueError(f"{config.data}: holds {scheme.name} points ({scheme.num_points}), the run in {config.run_dir} "
                         f"trained on {config.scheme} ({config.num_points}): {advice}")
    if config.input_shape and list(config.input_shape) != list(input_shape):
        shape = "x".join(map(str, input_shape))
        raise ValueError(f"{config.data}: gives inputs of {shape}, the run in {config.run_dir} trained on "
                         f"{'x'.join(map(str, config.input_shape))}: {advice}")
