"""Landmark models: the registry and the families that register themselves in it.

Importing this package registers every family (in the order ``models.py --list`` shows them) and
the custom losses, layers and optimizers, so saved ``.keras`` files reload.  A new family is a new module that
calls ``register(ModelSpec(...))`` and one import line below.
"""

from facelandmarks.runtime import import_keras_quietly

import_keras_quietly()  # from Python as from the scripts: no backend start-up lines

from facelandmarks.models import depthwise
from facelandmarks.models import losses  # noqa: F401  (registers the losses and the NME metric)
from facelandmarks.models import scratch  # noqa: F401
from facelandmarks.models import bottleneck  # noqa: F401
from facelandmarks.models import regressors  # noqa: F401
from facelandmarks.models import resnet_scratch  # noqa: F401
from facelandmarks.models import mlp  # noqa: F401
from facelandmarks.models import autoencoder  # noqa: F401
from facelandmarks.models import heatmap  # noqa: F401
from facelandmarks.models import localisation  # noqa: F401
from facelandmarks.models import optimizers  # noqa: F401  (registers --head-lr-scale's optimizers)
from facelandmarks.models.registry import (
    FEATURES,
    IMAGE,
    REGISTRY,
    ModelSpec,
    build_model,
    check_arguments,
    describe_models,
    get_spec,
    load_model,
    model_options,
    pretrain,
    rebuild_options,
    register,
)

depthwise.use_slices()  # on JAX: 3x3 depthwise convolutions as slices, 3.2x faster training on a CPU (its docstring)

__all__ = ["FEATURES", "IMAGE", "REGISTRY", "ModelSpec", "build_model", "check_arguments", "describe_models", "get_spec", "load_model",
           "model_options", "pretrain", "rebuild_options", "register"]
