"""The optimizers ``train.py --optimizer`` names, and their subclasses that step chosen layers at a multiple of
the rate (``--head-lr-scale``: ``facelandmarks.training.head_rate``).

Scaling the gradients would not do it: Adam's step does not depend on the gradient's scale. So each optimizer has a
subclass whose ``update_step`` multiplies the rate it is given for the variables of the chosen layers. Keras calls
``update_step`` once per variable on every backend (TensorFlow's ``_backend_update_step``, in each replica under a
tf.distribute strategy; JAX's ``stateless_apply``), with the rate the schedule set, so every schedule and
``LossScaleOptimizer`` (which hands the step to the optimizer it wraps) keep working. The variables are found by their
index among those the optimizer was built with, as Adam finds its moments; the layers by their paths (``pip_scores``).
No variable is added: the optimizer state, and the checkpoints holding it, are the plain optimizer's.

The subclasses are registered here, with the models, so a run's ``model.keras`` compiled with one reloads wherever
``facelandmarks.models`` is imported.
"""

from __future__ import annotations

import keras


class _ScaledLayers:
    """Mixed in before a Keras optimizer: the variables of ``scaled_layers`` (layer paths) step at ``rate_scale``
    times the rate."""

    def __init__(self, *args, scaled_layers=(), rate_scale: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.scaled_layers, self.rate_scale = tuple(scaled_layers), float(rate_scale)
        self._scaled_indices: frozenset[int] = frozenset()

    def build(self, var_list):
        super().build(var_list)
        layers = set(self.scaled_layers)
        self._scaled_indices = frozenset(i for i, v in enumerate(var_list) if v.path.rsplit("/", 1)[0] in layers)

    def update_step(self, gradient, variable, learning_rate):
        if self._get_variable_index(variable) in self._scaled_indices:  # at trace time: a Python decision
            learning_rate = keras.ops.multiply(learning_rate, self.rate_scale)
        return super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {**super().get_config(), "scaled_layers": list(self.scaled_layers), "rate_scale": self.rate_scale}


def _scaled_class(base: type) -> type:
    cls = type(f"HeadRate{base.__name__}", (_ScaledLayers, base), {"__module__": __name__})
    return keras.saving.register_keras_serializable(package="facelandmarks")(cls)


OPTIMIZERS = {  # config.OPTIMIZERS' names, each with its keyword arguments
    "adam": (keras.optimizers.Adam, {}),
    "nadam": (keras.optimizers.Nadam, {}),
    "rmsprop": (keras.optimizers.RMSprop, {}),
    "sgd": (keras.optimizers.SGD, {"momentum": 0.9, "nesterov": True}),
    "adamw": (keras.optimizers.AdamW, {}),
}
SCALED = {name: _scaled_class(cls) for name, (cls, _) in OPTIMIZERS.items()}


def make_optimizer(name: str, lr: float, scaled_layers=(), rate_scale: float = 1.0):
    """Optimizer ``name`` at rate ``lr``; with ``scaled_layers`` and a ``rate_scale`` other than 1, the subclass
    that steps those layers' variables at ``rate_scale`` x the rate (plain Keras otherwise: nothing of ours in a
    run's model.keras where the flag is not used)."""
    cls, options = OPTIMIZERS[name]
    if rate_scale == 1 or not scaled_layers:
        return cls(learning_rate=lr, **options)
    return SCALED[name](learning_rate=lr, scaled_layers=scaled_layers, rate_scale=rate_scale, **options)
