"""Where Keras runs a model in this process: the device it computes on (``device``: the timing column of evaluation
tables says which) and the CPU threads it may use (``set_threads``: ``Predictor.load(threads=N)``).

Keras puts a model on its backend's first accelerator when there is one: TensorFlow on its GPU, JAX on
``jax.devices()[0]``.  Exported models run in ONNX Runtime or LiteRT on the CPU, whatever the machine has
(``inference.runtimes``).
"""

from __future__ import annotations

import os
import sys

GPU_PLATFORMS = {"gpu", "cuda", "rocm"}  # JAX's names of its GPU platforms


def device() -> str:
    """'GPU', 'TPU' or 'CPU': the device Keras's backend computes on (TensorFlow: GPU when it lists a logical GPU,
    where it places every operation by default; JAX: the platform of its first device)."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return "GPU" if tf.config.list_logical_devices("GPU") else "CPU"
    if backend == "jax":
        import jax

        platform = jax.devices()[0].platform.lower()
        return "GPU" if platform in GPU_PLATFORMS else platform.upper()
    if backend == "torch":
        import torch

        return "GPU" if torch.cuda.is_available() else "CPU"
    return "CPU"


def set_threads(threads: int | None, who, name: str = "threads=") -> None:
    """Hold Keras to ``threads`` CPU threads (None: all cores, every backend's default); ``who`` (the run) starts the
    lines about it, which give the setting as ``name`` and the number (``'--threads '``: a script's option).

    TensorFlow: both its pools, for the work inside an operation and for running operations side by side, of
    ``threads`` each (as ``benchmarks/inference_speed.py`` timed Keras on N threads).  TensorFlow sets them once, when it
    starts: where it has started before in this process with others, one line on stderr says so and Keras runs on
    those.  JAX (XLA) has no setting for fewer threads than cores (its XLA_FLAGS for it change nothing on
    JAX 0.10), so a number below them is a ``ValueError`` saying what runs on that many threads instead.
    """
    if threads is None:
        return
    if threads < 1:
        raise ValueError(f"threads must be at least 1 (default: all cores), got {threads}")
    import keras

    backend, cores = keras.backend.backend(), os.cpu_count() or 1
    if backend == "tensorflow":
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:  # "cannot be modified after initialization": TensorFlow has made its pools
            now = tf.config.threading.get_intra_op_parallelism_threads()  # 0: all cores
            if (now or cores) != threads:
                print(f"{who}: {name}{threads} not applied: TensorFlow started earlier in this process on "
                      f"{f'{now} thread' + 's' * (now > 1) if now else 'all cores'} and keeps them (set threads in the first load)",
                      file=sys.stderr)
        return
    if threads >= cores:  # all of them: what the backend does anyway
        return
    raise ValueError(f"{who}: Keras on {backend} runs on all {cores} cores, not {name}{threads} ({backend} has no setting "
                     f"for fewer); an export (export.py) runs on {threads}, as does Keras on TensorFlow")
