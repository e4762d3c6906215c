"""The model registry: every family registers a ``ModelSpec``; ``build_model`` builds any of them by name."""

from __future__ import annotations

import contextlib
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np

from facelandmarks.models import backbones

IMAGE, FEATURES = "image", "features"


@dataclass(frozen=True)
class ModelSpec:
    """One registered model.

    Args:
        name: the CLI name.
        builder: ``builder(input_shape, num_points, **options) -> keras.Model``
            (backbone models also take ``weights`` and ``train_blocks``).
        description: one line for listings.
        default_input_shape: the input it is meant for: (S, S, C) for
            images, (F,) for features.
        input_kind: 'image' (raw uint8 pixels) or 'features' (bottleneck npz).
        source: the seed it comes from.
        backbone: the ``backbones.py`` backbone, None for the others.
        default_train_blocks: trainable backbone blocks when ``train_blocks``
            is not given and the backbone has pretrained weights.
        pretrain: ``pretrain(model, images, epochs, batch_size, callbacks)``
            hook run before the landmark training, or None.
    """

    name: str
    builder: Callable[..., keras.Model]
    description: str
    default_input_shape: tuple[int, ...]
    input_kind: str = IMAGE
    source: str = ""
    backbone: str | None = None
    default_train_blocks: int | None = None
    pretrain: Callable | None = None


REGISTRY: dict[str, ModelSpec] = {}


class NameTaken(ValueError):
    """A model family or a loss registered under a name that is registered already (``register``,
    ``losses.register_loss``): a plugin's line says so, not 'the plugin failed'."""


def register(spec: ModelSpec) -> ModelSpec:
    """Add a model family to the registry (each family's module calls this when imported, a plugin likewise)."""
    if spec.name in REGISTRY:
        raise NameTaken(f"model {spec.name!r} is registered already (by {defined_in(REGISTRY[spec.name].builder)}); "
                        f"give yours another name")
    if spec.input_kind not in (IMAGE, FEATURES):
        raise ValueError(f"model {spec.name!r}: input_kind must be {IMAGE!r} or {FEATURES!r}, got {spec.input_kind!r}")
    _check_backbone_fields(spec)
    REGISTRY[spec.name] = spec
    return spec


PLUGIN_MODULE_PREFIX = "facelandmarks_plugin_"  # the start of the made-up name a plugin file is imported under


def defined_in(thing) -> str:
    """Where ``thing`` (a builder, a loss class) was defined, for a 'registered already' line: its module, or for a
    plugin imported from a file (``plugins``: a made-up module name) that file."""
    name = getattr(thing, "__module__", None) or ""
    file = getattr(sys.modules.get(name), "__file__", None)
    if name.startswith(PLUGIN_MODULE_PREFIX) and file:
        return file
    return name or "another module"


_FIXED_ARGS = ("input_shape", "num_points", "weights", "train_blocks")
_BACKBONE_ARGS = ("weights", "train_blocks")


def _check_backbone_fields(spec: ModelSpec) -> None:
    """A spec's backbone fields agree with its builder, checked when the family registers rather than when a
    training run builds it: ``build_model`` passes ``weights`` and ``train_blocks`` (None resolved through
    ``default_train_blocks``) to a builder exactly when its spec names a ``backbone``."""
    parameters = inspect.signature(spec.builder).parameters
    takes = [a for a in _BACKBONE_ARGS if a in parameters]
    where = "(docs/models.md, \"Adding a model family\")"
    if spec.backbone is None:
        if takes:
            raise ValueError(f"model {spec.name!r}: its builder takes {' and '.join(takes)}, which build_model passes only "
                             f"to a backbone model: give backbone= and default_train_blocks= {where}")
        if spec.default_train_blocks is not None:
            raise ValueError(f"model {spec.name!r}: default_train_blocks={spec.default_train_blocks!r} without a backbone {where}")
        return
    if spec.backbone not in backbones.BACKBONES:
        raise ValueError(f"model {spec.name!r}: unknown backbone {spec.backbone!r}; known: {', '.join(backbones.BACKBONES)}")
    missing = [a for a in _BACKBONE_ARGS if a not in parameters]
    if missing:
        raise ValueError(f"model {spec.name!r} has a backbone, so build_model passes weights and train_blocks: its "
                         f"builder does not take {' and '.join(missing)} {where}")
    blocks = spec.default_train_blocks
    if isinstance(blocks, bool) or not isinstance(blocks, int) or blocks < -1:
        raise ValueError(f"model {spec.name!r}: a backbone model needs default_train_blocks, the blocks it trains with "
                         f"pretrained weights and no train_blocks (-1: all), got {blocks!r} {where}")


def get_spec(name: str) -> ModelSpec:
    """The registered ``ModelSpec`` of ``name``, with an error listing the names."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown model {name!r}; known: {', '.join(REGISTRY)}") from None


def model_options(name: str) -> dict:
    """The builder options of model ``name`` with their defaults."""
    signature = inspect.signature(get_spec(name).builder)
    return {p.name: p.default for p in signature.parameters.values() if p.name not in _FIXED_ARGS}


def _validate_input_shape(spec: ModelSpec, input_shape) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in input_shape)
    except (TypeError, ValueError):
        raise ValueError(f"input_shape must be a tuple of integers, got {input_shape!r}") from None
    if spec.input_kind == FEATURES:
        if len(shape) != 1 or shape[0] < 1:
            raise ValueError(f"model {spec.name!r} takes feature vectors: input_shape must be (F,), got {input_shape!r}")
    elif len(shape) != 3 or shape[0] != shape[1] or shape[2] not in (1, 3) or shape[0] < 1:
        raise ValueError(f"model {spec.name!r} takes square images: input_shape must be (S, S, 1|3), got {input_shape!r}")
    return shape


class ArgumentError(ValueError):
    """An argument ``check_arguments`` refuses; ``argument`` names it: 'model_options', 'weights' or 'train_blocks'
    (the ``TrainConfig`` settings, so ``train.py`` names the flag)."""

    def __init__(self, message: str, argument: str):
        super().__init__(message)
        self.argument = argument


def check_arguments(name: str, weights="none", train_blocks=None, **options) -> ModelSpec:
    """``build_model``'s checks of the name, ``weights``, ``train_blocks`` and the option names, without building
    (``train.py`` checks before it loads the data, the pipelines before stage 1 runs); ``ArgumentError``s."""
    spec = get_spec(name)
    allowed = model_options(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ArgumentError(f"model {name!r} has no option(s) {', '.join(unknown)}; its options: "
                            f"{', '.join(allowed) or 'none'}", "model_options")
    if spec.backbone is None:
        if backbones.weights_kind(weights) != "none":
            raise ArgumentError(f"model {name!r} has no pretrained backbone: weights must be 'none', got {weights!r}",
                                "weights")
        if train_blocks is not None:
            raise ArgumentError(f"model {name!r} has no backbone blocks to freeze: train_blocks must be None, got "
                                f"{train_blocks!r}", "train_blocks")
    return spec


def build_model(name: str, input_shape, num_points: int, weights="none", train_blocks=None, **options) -> keras.Model:
    """Build a registered landmark model.

    Args:
        name: a ``REGISTRY`` name.
        input_shape: (S, S, C) image shape (C = 1 or 3), or (F,) for
            ``inception_bottleneck``.
        num_points: K, landmarks per face.
        weights: backbone models: 'none', 'imagenet' or a weights file;
            other models accept only 'none'.
        train_blocks: backbone models: trainable blocks from the top (-1 =
            all).  None = the model's default with pretrained weights, all
            blocks with ``weights='none'`` (a frozen random backbone learns
            nothing).  Other models accept only None.
        **options: the builder's own options (``model_options(name)``).

    Returns:
        An uncompiled ``keras.Model`` whose output layer ``landmarks`` gives
        float32 (N, K, 2) normalised crop coordinates.
    """
    spec = get_spec(name)
    shape = _validate_input_shape(spec, input_shape)
    if isinstance(num_points, bool) or not isinstance(num_points, (int, np.integer)) or num_points < 1:
        raise ValueError(f"num_points must be a positive integer, got {num_points!r}")
    check_arguments(name, weights, train_blocks, **options)
    if spec.backbone is None:
        return spec.builder(shape, int(num_points), **options)
    if train_blocks is None:
        train_blocks = -1 if backbones.weights_kind(weights) == "none" else spec.default_train_blocks
    return spec.builder(shape, int(num_points), weights=weights, train_blocks=train_blocks, **options)


def pretrain(name: str, model: keras.Model, images: np.ndarray, epochs: int, batch_size: int, callbacks=None, **options):
    """Run model ``name``'s pretraining (``ModelSpec.pretrain``) on ``images``.

    Returns:
        The pretraining's ``keras.callbacks.History``.
    """
    spec = get_spec(name)
    if spec.pretrain is None:
        with_hook = [s.name for s in REGISTRY.values() if s.pretrain is not None]
        raise ValueError(f"model {name!r} has no pretraining step (models with one: {', '.join(with_hook)})")
    return spec.pretrain(model, images, epochs=epochs, batch_size=batch_size, callbacks=callbacks, **options)


def load_model(path, compile: bool = True) -> keras.Model:
    """Load a ``.keras`` landmark model saved by this toolkit (custom layers and losses registered)."""
    return keras.saving.load_model(path, compile=compile)


def describe_models(num_points: int = 68, progress: bool = False) -> list[dict]:
    """One row per model: name, input, parameters at the default input size, description, and the
    builder's options with their defaults.

    Every model is built to count its parameters (``count_params``); ``progress`` shows a bar on stderr.
    """
    from tqdm import tqdm

    rows = []
    for spec in tqdm(REGISTRY.values(), desc="building the models", unit="model", leave=False, disable=not progress):
        rows.append({
            "name": spec.name,
            "input": "x".join(map(str, spec.default_input_shape)) + (" features" if spec.input_kind == FEATURES else ""),
            "params": count_params(spec.name, spec.default_input_shape, num_points),
            "source": spec.source,
            "description": spec.description,
            "options": model_options(spec.name),
        })
    return rows


@contextlib.contextmanager
def shapes_only():
    """Models built inside hold variables of their shapes and no values, for counting and summaries.

    A stateless scope that leaves them uninitialised: on JAX each initialiser of a new shape compiled an XLA program,
    and building the 11 models took 29.8 s, counting their parameters this way 1.5 s (2.8 s on TensorFlow; a 2-core
    Intel Xeon with AVX-512). A
    builder may still read or set its weights there (Keras hands it the initialiser's values and keeps what it sets
    aside). Clears Keras's session after, the uninitialised variables with it: nothing built inside can train.
    """
    try:
        with keras.StatelessScope(initialize_variables=False):
            yield
    finally:
        keras.backend.clear_session()


def count_params(name: str, input_shape, num_points: int) -> int:
    """The parameters of model ``name`` built with its default options, counted from its variables' shapes."""
    with shapes_only():
        return build_model(name, input_shape, num_points).count_params()


def rebuild_options(name: str, weights, given: dict) -> dict:
    """Builder options that rebuild a trained model without its backbone weights file.

    A backbone's pixel normalisation follows its weights ('auto': ``torch`` for the offline
    MobileNetV2 file, the Keras mode otherwise), so a model rebuilt with ``weights='none'`` to load a
    checkpoint would scale its input differently from the one that was trained.  The mode the run
    trained with is written into the options instead.
    """
    spec = get_spec(name)
    options = dict(given)
    if spec.backbone is not None and "normalization" in model_options(name):
        from facelandmarks.models import backbones

        options["normalization"] = backbones.resolve_normalization(spec.backbone, weights, options.get("normalization", "auto"))
    return options
