"""``Augmenter``: seeded parameters on the host, the compiled ``keras.ops`` transform on the device."""

from __future__ import annotations

import functools

import numpy as np

from facelandmarks.data.augment.config import (
    OCCLUSION_MIN_FRACTION,
    OCCLUSION_TEXTURE_STD,
    AugmentConfig,
)
from facelandmarks.data.augment.geometry import affine_matrices, apply_augmentation
from facelandmarks.landmarks import Scheme, get_scheme


@functools.cache
def _augmentation_function(mirror: tuple[int, ...], fill_mode: str, fill_value: float, compile: bool):
    """``apply_augmentation`` with its static arguments bound, compiled once per
    process for each (scheme, fill) so every Augmenter shares the traces."""
    import keras

    mirror_index = np.asarray(mirror, np.int32)

    # A closure, not functools.partial: tf.function would turn partial's
    # keyword arguments into graph inputs.
    def augment_batch(images, landmarks, visible, params):
        return apply_augmentation(images, landmarks, visible, params, mirror_index, fill_mode, fill_value)

    if not compile:
        return augment_batch
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.jit(augment_batch)
    if backend == "tensorflow":
        import tensorflow as tf

        # No AutoGraph: the code has no Python control flow on tensors (jax.jit runs it as is), and rewriting its
        # source cost every training process about 0.5 s before its first batch (2-core Xeon, AVX-512)
        return tf.function(augment_batch, jit_compile=True, autograph=False)
    return augment_batch


class Augmenter:
    """Random augmentation of landmarked face crops, reproducible per seed.

    Args:
        config: an ``AugmentConfig`` (``AugmentConfig.none()`` passes batches
            through, cast to float32).
        scheme: the landmark scheme (or its name) whose mirror permutation a
            flip applies.
        seed: seed of the host ``numpy`` Generator that draws every random
            parameter; the same seed gives the same batches on any backend.
        compile: compile ``apply_augmentation`` (``jax.jit`` on JAX, XLA
            ``tf.function`` on TensorFlow); traced and compiled once per batch
            shape (``rows`` keeps a smaller batch on the full batches' one).

    Call ``augmenter(images, landmarks, visible)`` on a batch: images uint8 or
    float (B, S, S, C) 0..255, landmarks float32 (B, K, 2), visible bool
    (B, K); it returns numpy ``(images float32, landmarks float32, visible
    bool)``.  Inside a jitted training step, draw ``sample_params`` outside
    the step and call ``apply_augmentation`` in it.

    The host Generator is not thread-safe: give each loader thread its own
    Augmenter (for instance ``seed + worker_index``).
    """

    def __init__(self, config: AugmentConfig, scheme: Scheme | str, seed: int = 0, compile: bool = True):
        if not isinstance(config, AugmentConfig):
            raise ValueError(f"config must be an AugmentConfig, got {type(config).__name__}: {config!r}")
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.config = config
        self.scheme = get_scheme(scheme) if isinstance(scheme, str) else scheme
        self.seed = int(seed)
        self.rng = np.random.default_rng(self.seed)
        self._apply = _augmentation_function(self.scheme.mirror, config.fill_mode, float(config.fill_value), compile)

    def sample_params(self, batch_size: int, size: int, channels: int = 3, rng=None) -> dict[str, np.ndarray | None]:
        """Draw the random parameters of one batch of (S, S, C) crops (host, numpy).

        Args:
            batch_size: B.
            size: crop side S in pixels.
            channels: C (sizes the noise field).
            rng: a numpy Generator to draw from instead of the Augmenter's
                own (a data loader passes one per batch, seeded by epoch and
                batch index, so results do not depend on thread timing).

        Returns:
            The ``params`` dict of ``apply_augmentation``.
        """
        if batch_size < 1 or size < 1 or channels < 1:
            raise ValueError(f"batch_size, size and channels must be >= 1, got {batch_size}, {size}, {channels}")
        cfg, rng, b = self.config, (self.rng if rng is None else rng), batch_size

        def amounts(name: str, low: float, high: float, shape=()) -> np.ndarray:
            """Uniform amounts where the transform is chosen, 0 elsewhere."""
            # Draw every value so the stream does not depend on which are applied.
            chosen = rng.random(b) < cfg.probability(name)
            values = rng.uniform(low, high, (b, *shape))
            return np.where(chosen.reshape(-1, *[1] * len(shape)), values, 0.0)

        rotation = amounts("rotation", -cfg.rotation, cfg.rotation)
        zoom = amounts("scale", -cfg.scale, cfg.scale)
        translate = amounts("translate", -cfg.translate, cfg.translate, (2,))
        shear = amounts("shear", -cfg.shear, cfg.shear, (2,))
        flip = rng.random(b) < cfg.flip
        points, warp = affine_matrices(rotation, 1.0 + zoom, translate, shear, flip, size)

        contrast = amounts("contrast", -cfg.contrast, cfg.contrast)
        brightness = amounts("brightness", -cfg.brightness * 255.0, cfg.brightness * 255.0)
        noise_std = amounts("noise", 0.0, cfg.noise)
        occluded = rng.random(b) < cfg.occlusion
        sides = rng.uniform(OCCLUSION_MIN_FRACTION * cfg.occlusion_size, cfg.occlusion_size, (b, 2)) * size
        centres = rng.uniform(0.0, size, (b, 2))
        occlusion = np.concatenate([centres - sides / 2, centres + sides / 2], axis=1)
        occlusion[~occluded] = 0.0
        occlusion_gray = rng.uniform(0.0, 255.0, b)
        occlusion_std = rng.uniform(0.0, OCCLUSION_TEXTURE_STD, b)
        noise_key = rng.integers(0, 2**32, 2, dtype=np.uint32)
        if not (np.any(noise_std > 0) or np.any(occluded)):
            noise_key = None  # skip the noise field
        return {
            "points": points,
            "warp": warp,
            "flip": flip,
            "contrast": (1.0 + contrast).astype(np.float32),
            "brightness": brightness.astype(np.float32),
            "noise_std": noise_std.astype(np.float32),
            "occlusion": occlusion.astype(np.float32),
            "occlusion_gray": occlusion_gray.astype(np.float32),
            "occlusion_std": occlusion_std.astype(np.float32),
            "noise_key": noise_key,
        }

    def apply(self, images, landmarks, visible, params, rows: int | None = None):
        """Apply given parameters and return numpy arrays.

        Args:
            images, landmarks, visible: the batch, as for ``__call__``.
            params: from ``sample_params`` (or edited: tests set exact maps).
            rows: as for ``__call__``.
        """
        from keras import ops

        images, landmarks, visible = _check_batch(images, landmarks, visible, self.scheme)
        count = images.shape[0]
        if rows is not None and rows > count:  # every face's result depends on its own row alone
            images, landmarks, visible = (_pad_rows(a, rows) for a in (images, landmarks, visible))
            params = {key: value if key == "noise_key" or value is None else _pad_rows(np.asarray(value), rows)
                      for key, value in params.items()}
        out = self._apply(images, landmarks, visible, params)
        return tuple(ops.convert_to_numpy(x)[:count] for x in out)

    def __call__(self, images, landmarks, visible, rng=None, rows: int | None = None):
        """Augment a batch.

        ``rows``: compute it as a batch of that many rows (copies of its last face, dropped from the result), the same
        numbers as without: a loader passes its batch size, so the last, smaller batch of a shard (or of an epoch)
        reuses the full batches' compiled transform instead of tracing and compiling one for its own size.
        """
        images, landmarks, visible = _check_batch(images, landmarks, visible, self.scheme)
        if not self.config.enabled:
            return images.astype(np.float32), landmarks.copy(), visible.copy()
        params = self.sample_params(images.shape[0], images.shape[1], images.shape[3], rng=rng)
        return self.apply(images, landmarks, visible, params, rows=rows)


def _pad_rows(array: np.ndarray, rows: int) -> np.ndarray:
    """``array`` with its last row repeated up to ``rows`` rows."""
    return np.concatenate([array, np.repeat(array[-1:], rows - len(array), axis=0)])


def _check_batch(images, landmarks, visible, scheme: Scheme):
    images = np.asarray(images)
    landmarks = np.asarray(landmarks, np.float32)
    visible = np.asarray(visible)
    if images.ndim != 4 or images.shape[1] != images.shape[2]:
        raise ValueError(f"images must be a batch of square crops (B, S, S, C), got shape {images.shape}")
    if images.dtype != np.uint8 and not np.issubdtype(images.dtype, np.floating):
        raise ValueError(f"images must be uint8 or float 0..255, got {images.dtype}")
    batch, k = images.shape[0], scheme.num_points
    if landmarks.shape != (batch, k, 2):
        raise ValueError(f"landmarks must be ({batch}, {k}, 2) for scheme {scheme.name}, got {landmarks.shape}")
    if visible.shape != (batch, k) or visible.dtype != np.bool_:
        raise ValueError(f"visible must be bool ({batch}, {k}), got {visible.dtype} {visible.shape}")
    return images, landmarks, visible
