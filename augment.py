"""On-the-fly augmentation that moves the landmarks with the image.

Every geometric transform -- rotation, scale, translation, shear and the
horizontal flip -- is composed into ONE affine map per image, so each image is
resampled once (bilinear) and its landmarks go through exactly the same map.
The flip also swaps point identities with the scheme's mirror permutation
(``Scheme.mirror``): after a flip the subject's right eye corner is stored
under the left eye corner's index, as it would be in a mirrored photograph.
Photometric transforms -- contrast, brightness, gaussian noise, occlusion
patches -- change pixels only.

Occlusion patches are rectangles filled with a random gray level plus gaussian
texture (a hand, a microphone, a scarf).  Landmarks under a patch keep their
positions and stay *visible*: the point is still where it is, and a landmark
model should learn to infer it from the rest of the face.

Points that a transform pushes outside the crop ``[0, 1]`` become invisible
(``visible=False``); invisible points stay invisible.  Their coordinates are
transformed like any other and carry no meaning (they may be NaN where the
dataset stored NaN): mask them, as the losses and metrics do.

Coordinates are normalised crop coordinates (``landmarks.py``): a point at
pixel ``p`` (pixel centres on integers) of a crop of side ``S`` has
``u = (p + 0.5) / S``.  A forward map ``u' = L (u - c) + c + t`` about the
crop centre ``c = (0.5, 0.5)`` is, in pixels,
``p' = L (p - (S - 1) / 2) + (S - 1) / 2 + S t``; the image is resampled with
its inverse (output pixel -> input pixel), pixel centres on integers, the
convention of ``keras.ops.image.affine_transform``.

Random parameters are drawn on the host from a seeded ``numpy`` Generator
(``Augmenter.sample_params``), so a seed gives the same transforms on any
backend; the pixel and landmark work (``apply_augmentation``) is written in
``keras.ops`` and is compiled once per batch shape (``jax.jit`` or XLA
``tf.function``).  It can also be called inside a jitted training step with
parameters sampled outside it.

The warp samples the image with our own bilinear gather rather than
``keras.ops.image.affine_transform``: the latter cannot be XLA-compiled on
TensorFlow (``ImageProjectiveTransformV3`` has no XLA kernel) and on JAX
interpolates across the channel axis too (8 gathers per pixel, about 70 ms
for 32 crops of 128 px on 2 cores).  The two agree to 1e-4 gray levels
(``tests/test_augment.py`` holds them within 0.01 for every fill mode).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

import numpy as np

from landmarks import Scheme, get_scheme

FILL_MODES = ("constant", "nearest", "reflect")

# Transforms that take a range and a probability (``name=range@probability``)
# and those whose value is itself a probability (``name=probability``).
RANGED = ("rotation", "scale", "translate", "shear", "brightness", "contrast", "noise")
PROBABILITY_ONLY = ("flip", "occlusion")

# Keywords that may start an --augment string (AugmentConfig class methods).
PRESETS = ("default", "light", "none")

# Upper bounds of the ranges (validated in AugmentConfig).
_RANGE_LIMITS = {
    "rotation": (0.0, 180.0, "degrees"),
    "scale": (0.0, 0.9, "fraction: factor in [1 - scale, 1 + scale]"),
    "translate": (0.0, 1.0, "fraction of the crop"),
    "shear": (0.0, 45.0, "degrees"),
    "brightness": (0.0, 1.0, "fraction of 255"),
    "contrast": (0.0, 0.9, "fraction: factor in [1 - contrast, 1 + contrast]"),
    "noise": (0.0, 128.0, "gray levels (0..255)"),
}

# Occlusion patches: side between OCCLUSION_MIN_FRACTION x occlusion_size and
# occlusion_size (fractions of the crop side); fill texture std up to this.
OCCLUSION_MIN_FRACTION = 0.25
OCCLUSION_TEXTURE_STD = 48.0


@dataclass(frozen=True)
class AugmentConfig:
    """What to augment, how much and how often.

    Each ranged transform is applied to an image with probability ``<name>_p``
    and then draws its amount uniformly from its range; the defaults suit
    face crops whose face fills about two thirds of the crop (``faces.py``).

    Args:
        rotation: degrees; angle uniform in [-rotation, rotation].
        rotation_p: probability of rotating an image.
        scale: zoom factor uniform in [1 - scale, 1 + scale] (> 1 enlarges the face).
        scale_p: probability of scaling.
        translate: shift of x and y, each uniform in [-translate, translate]
            (fraction of the crop side).
        translate_p: probability of translating.
        shear: degrees; horizontal and vertical shear angles, each uniform in
            [-shear, shear].
        shear_p: probability of shearing.
        flip: probability of a horizontal flip (with the scheme's left/right
            permutation of point identities).
        brightness: added brightness uniform in [-brightness, brightness] x 255.
        brightness_p: probability of changing brightness.
        contrast: contrast factor uniform in [1 - contrast, 1 + contrast],
            around the image's mean gray level.
        contrast_p: probability of changing contrast.
        noise: gaussian noise; its standard deviation is uniform in
            [0, noise] gray levels.
        noise_p: probability of adding noise.
        occlusion: probability of one occlusion patch (random gray level plus
            gaussian texture) at a uniformly random centre; points under it
            keep their positions and stay visible.
        occlusion_size: largest patch side, fraction of the crop side; each
            side is uniform in [occlusion_size / 4, occlusion_size].
        fill_mode: what the warp shows outside the source crop: ``constant``
            (``fill_value``), ``nearest`` (edge pixels repeated) or ``reflect``.
        fill_value: gray level for ``fill_mode="constant"``.
    """

    rotation: float = 15.0
    rotation_p: float = 0.75
    scale: float = 0.1
    scale_p: float = 0.75
    translate: float = 0.05
    translate_p: float = 0.75
    shear: float = 5.0
    shear_p: float = 0.3
    flip: float = 0.5
    brightness: float = 0.2
    brightness_p: float = 0.5
    contrast: float = 0.2
    contrast_p: float = 0.5
    noise: float = 5.0
    noise_p: float = 0.3
    occlusion: float = 0.2
    occlusion_size: float = 0.4
    fill_mode: str = "constant"
    fill_value: float = 0.0

    def __post_init__(self):
        for name, (low, high, unit) in _RANGE_LIMITS.items():
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not low <= value <= high:
                raise ValueError(f"augmentation {name}={value!r} must be in [{low}, {high}] ({unit})")
        for name in [f"{n}_p" for n in RANGED] + list(PROBABILITY_ONLY):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"augmentation {name}={value!r} must be a probability in [0, 1]")
        if not isinstance(self.occlusion_size, (int, float)) or not 0.0 < self.occlusion_size <= 1.0:
            raise ValueError(f"augmentation occlusion_size={self.occlusion_size!r} must be in (0, 1]")
        if self.fill_mode not in FILL_MODES:
            raise ValueError(f"augmentation fill_mode={self.fill_mode!r} must be one of {', '.join(FILL_MODES)}")
        if not isinstance(self.fill_value, (int, float)) or not 0.0 <= self.fill_value <= 255.0:
            raise ValueError(f"augmentation fill_value={self.fill_value!r} must be in [0, 255]")

    @classmethod
    def default(cls) -> "AugmentConfig":
        """The defaults for face crops (the same as ``AugmentConfig()``)."""
        return cls()

    @classmethod
    def none(cls) -> "AugmentConfig":
        """No augmentation: every probability 0 (the ranges keep their defaults)."""
        zero = {f"{n}_p": 0.0 for n in RANGED} | {n: 0.0 for n in PROBABILITY_ONLY}
        return cls(**zero)

    @classmethod
    def light(cls) -> "AugmentConfig":
        """Small geometric jitter for fine-tuning on detector-aligned crops.

        The defaults with rotation 5 degrees, scale 0.05, translation 0.02,
        no shear and no occlusion; flip and the photometric changes stay.
        Crops cut by the face detector (``faces.py``) vary little in pose and
        framing, and a model fine-tuned with these settings fits them better
        than with the defaults (README, Results).
        """
        return dataclasses.replace(cls(), rotation=5.0, scale=0.05, translate=0.02, shear=0.0, shear_p=0.0,
                                   occlusion=0.0)

    @property
    def enabled(self) -> bool:
        """Whether any transform can happen."""
        return any(self.probability(n) > 0 and self.magnitude(n) > 0 for n in RANGED + PROBABILITY_ONLY)

    def probability(self, name: str) -> float:
        return getattr(self, name if name in PROBABILITY_ONLY else f"{name}_p")

    def magnitude(self, name: str) -> float:
        if name == "flip":
            return 1.0
        if name == "occlusion":
            return self.occlusion_size
        return getattr(self, name)

    @classmethod
    def parse(cls, text: str) -> "AugmentConfig":
        """Read a command-line string.

        Grammar: comma-separated tokens.  The first may be a preset:
        ``default`` (start from the defaults), ``light`` (``light()``) or
        ``none`` (start from no augmentation, also the start when no preset
        is given).  Then:

        * ``rotation=15``, ``scale=0.1``, ``translate=0.05``, ``shear=5``,
          ``brightness=0.2``, ``contrast=0.2``, ``noise=5``: set the range;
          ``rotation=15@0.5`` also sets the probability, otherwise it is the
          starting config's (or the default's when that is 0); ``=0`` turns
          the transform off;
        * ``flip=0.5``, ``occlusion=0.2``: probabilities;
        * any other field by name: ``occlusion_size=0.3``,
          ``fill_mode=nearest``, ``fill_value=127``, ``rotation_p=0.3``.

        Example: ``"rotation=15,scale=0.1,translate=0.05,shear=5,flip=0.5,
        brightness=0.2,contrast=0.2,noise=5,occlusion=0.2"``.

        Raises:
            ValueError: naming the bad token and what was expected.
        """
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"empty augmentation string {text!r}; use {', '.join(PRESETS)} or name=value,...")
        tokens = [t.strip() for t in text.split(",")]
        base = cls.none()
        if tokens[0].lower() in PRESETS:
            base = getattr(cls, tokens.pop(0).lower())()
        fields = {f.name: f for f in dataclasses.fields(cls)}
        changes: dict[str, object] = {}
        seen: set[str] = set()
        for token in tokens:
            expected = (
                f"expected name=value[@probability] with a name among "
                f"{', '.join(RANGED + PROBABILITY_ONLY)}, or another AugmentConfig field "
                f"(occlusion_size, fill_mode, fill_value, <name>_p)"
            )
            if not token:
                raise ValueError(f"empty token in augmentation string {text!r}")
            if token.lower() in PRESETS:
                raise ValueError(f"augmentation keyword {token!r} must come first, in {text!r}")
            name, sep, value = token.partition("=")
            name, value = name.strip(), value.strip()
            if not sep or not value:
                raise ValueError(f"augmentation token {token!r}: missing '=value'; {expected}")
            if name not in fields:
                raise ValueError(f"augmentation token {token!r}: unknown name {name!r}; {expected}")
            if name in seen:
                raise ValueError(f"augmentation token {token!r}: {name} given twice in {text!r}")
            seen.add(name)
            value, at, prob = value.partition("@")
            if at and name not in RANGED:
                raise ValueError(f"augmentation token {token!r}: only {', '.join(RANGED)} take '@probability'")
            if name == "fill_mode":
                changes[name] = value
                continue
            number = _parse_number(value, token)
            changes[name] = number
            if name in RANGED:
                if at:
                    changes[f"{name}_p"] = _parse_number(prob, token)
                elif number == 0:
                    changes[f"{name}_p"] = 0.0
                elif f"{name}_p" not in changes:
                    start = getattr(base, f"{name}_p")
                    changes[f"{name}_p"] = start if start > 0 else getattr(cls.default(), f"{name}_p")
        try:
            return dataclasses.replace(base, **changes)
        except ValueError as error:
            raise ValueError(f"augmentation string {text!r}: {error}") from None

    def to_string(self) -> str:
        """A string that ``parse`` turns back into an equal config."""
        start, defaults, parts = AugmentConfig.none(), AugmentConfig(), []
        for name in RANGED:
            value, probability = getattr(self, name), getattr(self, f"{name}_p")
            if (value, probability) != (getattr(start, name), getattr(start, f"{name}_p")):
                parts.append(f"{name}={_fmt(value)}@{_fmt(probability)}")
        for name in PROBABILITY_ONLY:
            if getattr(self, name) != getattr(start, name):
                parts.append(f"{name}={_fmt(getattr(self, name))}")
        for name in ("occlusion_size", "fill_mode", "fill_value"):
            if getattr(self, name) != getattr(defaults, name):
                parts.append(f"{name}={_fmt(getattr(self, name))}")
        return ",".join(parts) or "none"

    def to_dict(self) -> dict:
        """Plain dict for a run's ``config.json``."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "AugmentConfig":
        """Inverse of ``to_dict``; unknown keys are an error, missing keys take the defaults."""
        if not isinstance(data, dict):
            raise ValueError(f"augmentation config must be a dict, got {type(data).__name__}: {data!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown augmentation config keys {unknown}; known: {', '.join(sorted(known))}")
        return cls(**data)


def _parse_number(text: str, token: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"augmentation token {token!r}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"augmentation token {token!r}: {text!r} is not a finite number")
    return value


def _fmt(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


# ---------------------------------------------------------------------------
# Geometry: one affine map per image.


def affine_matrices(
    rotation_deg: np.ndarray,
    scale: np.ndarray,
    translate: np.ndarray,
    shear_deg: np.ndarray,
    flip: np.ndarray,
    size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Compose per-image transforms into the landmark map and the image warp.

    The forward map in normalised crop coordinates is
    ``u' = s R H F (u - c) + c + t``: flip ``F`` first, then shear ``H``
    (horizontal, then vertical; area-preserving), rotation ``R`` (positive
    angles turn the face clockwise on screen, y pointing down) and zoom ``s``,
    all about the crop centre ``c``, then the shift ``t``.

    Args:
        rotation_deg: (B,) angles in degrees.
        scale: (B,) zoom factors.
        translate: (B, 2) shifts of x, y in crop sides.
        shear_deg: (B, 2) horizontal and vertical shear angles in degrees.
        flip: (B,) bool, mirror horizontally.
        size: crop side S in pixels.

    Returns:
        ``(points, warp)``, float32 (B, 2, 3) each: ``points`` maps input
        normalised coordinates to output ones; ``warp`` maps OUTPUT pixel
        coordinates to INPUT ones (pixel centres on integers), the inverse
        map an image resampler needs.
    """
    rotation = np.deg2rad(np.asarray(rotation_deg, np.float64))
    scale = np.asarray(scale, np.float64)
    translate = np.asarray(translate, np.float64).reshape(-1, 2)
    shear = np.tan(np.deg2rad(np.asarray(shear_deg, np.float64))).reshape(-1, 2)
    flip = np.asarray(flip, bool)
    batch = len(rotation)
    if size < 1:
        raise ValueError(f"crop size must be >= 1, got {size}")
    if np.any(scale <= 0):
        raise ValueError(f"scale factors must be > 0, got {scale[scale <= 0]}")
    cos, sin = np.cos(rotation), np.sin(rotation)
    rot = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)
    ones, zeros = np.ones(batch), np.zeros(batch)
    shear_x = np.stack([np.stack([ones, shear[:, 0]], -1), np.stack([zeros, ones], -1)], -2)
    shear_y = np.stack([np.stack([ones, zeros], -1), np.stack([shear[:, 1], ones], -1)], -2)
    shr = shear_x @ shear_y
    mirror = np.zeros((batch, 2, 2))
    mirror[:, 0, 0] = np.where(flip, -1.0, 1.0)
    mirror[:, 1, 1] = 1.0
    linear = rot @ shr @ mirror * scale[:, None, None]
    centre = np.full(2, 0.5)
    points = np.concatenate([linear, (centre - linear @ centre + translate)[:, :, None]], axis=2)
    # Pixels: p' = L (p - m) + m + S t with m = (S - 1) / 2; inverted for the warp.
    middle = np.full(2, (size - 1) / 2.0)
    inverse = np.linalg.inv(linear)
    offset = (middle - (inverse @ (middle + size * translate)[:, :, None])[:, :, 0])[:, :, None]
    warp = np.concatenate([inverse, offset], axis=2)
    return points.astype(np.float32), warp.astype(np.float32)


# ---------------------------------------------------------------------------
# Pixel and landmark work, in keras.ops.


def warp_images(images, warp, fill_mode: str = "constant", fill_value: float = 0.0):
    """Resample each image through its affine map, bilinear.

    Args:
        images: float (B, H, W, C).
        warp: float32 (B, 2, 3); output pixel ``(x, y)`` samples input pixel
            ``warp @ (x, y, 1)`` (pixel centres on integers), as
            ``keras.ops.image.affine_transform`` does.
        fill_mode: ``constant``, ``nearest`` or ``reflect`` (about the edge).
        fill_value: value outside the image for ``constant``.

    Returns:
        float32 (B, H, W, C).
    """
    from keras import ops

    if fill_mode not in FILL_MODES:
        raise ValueError(f"fill_mode={fill_mode!r} must be one of {', '.join(FILL_MODES)}")
    batch, height, width, channels = images.shape
    ys, xs = np.meshgrid(np.arange(height, dtype=np.float32), np.arange(width, dtype=np.float32), indexing="ij")
    warp = ops.convert_to_tensor(warp, "float32")
    src_x = warp[:, 0, 0, None, None] * xs + warp[:, 0, 1, None, None] * ys + warp[:, 0, 2, None, None]
    src_y = warp[:, 1, 0, None, None] * xs + warp[:, 1, 1, None, None] * ys + warp[:, 1, 2, None, None]
    x0f, y0f = ops.floor(src_x), ops.floor(src_y)
    wx, wy = src_x - x0f, src_y - y0f
    x0, y0 = ops.cast(x0f, "int32"), ops.cast(y0f, "int32")
    flat = ops.reshape(ops.cast(images, "float32"), (-1, channels))
    first_of_image = (np.arange(batch, dtype=np.int32) * (height * width))[:, None, None]
    out = None
    for dy, weight_y in ((0, 1.0 - wy), (1, wy)):
        for dx, weight_x in ((0, 1.0 - wx), (1, wx)):
            xi, yi = x0 + dx, y0 + dy
            weight = weight_x * weight_y
            if fill_mode == "constant":
                inside = ops.logical_and(
                    ops.logical_and(xi >= 0, xi < width), ops.logical_and(yi >= 0, yi < height)
                )
                xi, yi = ops.clip(xi, 0, width - 1), ops.clip(yi, 0, height - 1)
            else:
                xi, yi = _fold_index(xi, width, fill_mode), _fold_index(yi, height, fill_mode)
            value = ops.take(flat, first_of_image + yi * width + xi, axis=0)
            if fill_mode == "constant":
                value = ops.where(inside[..., None], value, fill_value)
            term = value * weight[..., None]
            out = term if out is None else out + term
    return out


def _fold_index(index, length: int, fill_mode: str):
    from keras import ops

    if fill_mode == "nearest" or length == 1:
        return ops.clip(index, 0, length - 1)
    period = 2 * length  # reflect: d c b a | a b c d | d c b a
    folded = ops.mod(index, period)
    return ops.where(folded >= length, period - 1 - folded, folded)


# Box-Muller on 16-bit uniforms by table look-up: XLA's CPU cos/sin cost
# about 8x the rest of the noise.  u = (k + 0.5) / 65536.
_UNIFORM16 = (np.arange(65536, dtype=np.float64) + 0.5) / 65536.0
_BOX_MULLER_RADIUS = np.sqrt(-2.0 * np.log(_UNIFORM16)).astype(np.float32)
_BOX_MULLER_COS = np.cos(2.0 * np.pi * _UNIFORM16).astype(np.float32)
_BOX_MULLER_SIN = np.sin(2.0 * np.pi * _UNIFORM16).astype(np.float32)


def _hash32(x):
    """Chris Wellons' lowbias32 integer hash, uint32 -> uint32 (wrapping arithmetic)."""
    from keras import ops

    x = ops.bitwise_xor(x, ops.right_shift(x, 16))
    x = ops.multiply(x, ops.convert_to_tensor(np.uint32(0x7FEB352D)))
    x = ops.bitwise_xor(x, ops.right_shift(x, 15))
    x = ops.multiply(x, ops.convert_to_tensor(np.uint32(0x846CA68B)))
    return ops.bitwise_xor(x, ops.right_shift(x, 16))


def gaussian_noise(key, shape):
    """Standard normal samples from a counter-based hash, in keras.ops.

    Deterministic in ``key`` and identical on every backend (integer
    arithmetic), with no host-side random numbers to generate or copy: each
    32-bit hash of (counter, key) gives two 16-bit uniforms, and Box-Muller
    turns them into two normal samples (tails cut at 4.9 sigma).

    Args:
        key: uint32 (2,).
        shape: static shape (B, ...) of the result.
    """
    from keras import ops

    batch, per_image = shape[0], int(np.prod(shape[1:]))
    pairs = (per_image + 1) // 2
    key = ops.convert_to_tensor(key, "uint32")
    counter = ops.cast(ops.reshape(ops.arange(batch * pairs, dtype="int32"), (batch, pairs)), "uint32")
    bits = _hash32(ops.add(_hash32(ops.bitwise_xor(counter, key[0])), key[1]))
    low = ops.cast(ops.bitwise_and(bits, ops.convert_to_tensor(np.uint32(0xFFFF))), "int32")
    high = ops.cast(ops.right_shift(bits, 16), "int32")
    radius = ops.take(_BOX_MULLER_RADIUS, low)
    cos, sin = ops.take(_BOX_MULLER_COS, high), ops.take(_BOX_MULLER_SIN, high)
    normal = ops.concatenate([radius * cos, radius * sin], axis=1)
    return ops.reshape(normal[:, :per_image], shape)


def apply_augmentation(images, landmarks, visible, params, mirror_index, fill_mode="constant", fill_value=0.0):
    """Apply sampled augmentation parameters to a batch, in keras.ops.

    Pure and shape-static: it can run eagerly, under ``jax.jit`` or XLA
    ``tf.function``, in a data loader or inside a training step.

    Args:
        images: uint8 or float (B, S, S, C), 0..255.
        landmarks: float32 (B, K, 2) normalised crop coordinates.
        visible: bool (B, K).
        params: dict from ``Augmenter.sample_params``: ``points``, ``warp``
            (B, 2, 3); ``flip`` bool (B,); ``contrast``, ``brightness``,
            ``noise_std`` (B,); ``occlusion`` (B, 4) pixel rectangles
            ``[x0, y0, x1, y1]`` (empty: none), ``occlusion_gray``,
            ``occlusion_std`` (B,); ``noise_key`` uint32 (2,), or None when
            no image gets noise or a patch.
        mirror_index: int (K,) the scheme's mirror permutation.
        fill_mode, fill_value: see ``warp_images``.

    Returns:
        ``(images, landmarks, visible)``: float32 0..255, float32, bool.
    """
    from keras import ops

    images = ops.convert_to_tensor(images)
    batch, height, width, channels = images.shape
    # Geometry: one warp, the same map for the points, identities swapped on flips.
    out = warp_images(images, params["warp"], fill_mode, fill_value)
    points = ops.convert_to_tensor(landmarks, "float32")
    matrix = ops.convert_to_tensor(params["points"], "float32")
    points = ops.einsum("bij,bkj->bki", matrix[:, :, :2], points) + matrix[:, None, :, 2]
    num_points = points.shape[1]
    identity = np.arange(num_points, dtype=np.int32)
    mirrored = ops.convert_to_tensor(np.asarray(mirror_index, np.int32))
    order = ops.where(ops.convert_to_tensor(params["flip"])[:, None], mirrored[None, :], identity[None, :])
    points = ops.take_along_axis(points, ops.repeat(order[:, :, None], 2, axis=2), axis=1)
    was_visible = ops.take_along_axis(ops.cast(visible, "int32"), order, axis=1) > 0
    inside = ops.all(ops.logical_and(points >= 0.0, points <= 1.0), axis=-1)
    visible_out = ops.logical_and(was_visible, inside)

    # Photometric: contrast about the image mean, brightness, noise, occlusion.
    per_image = lambda name: ops.reshape(ops.convert_to_tensor(params[name], "float32"), (-1, 1, 1, 1))  # noqa: E731
    mean = ops.mean(out, axis=(1, 2, 3), keepdims=True)
    out = (out - mean) * per_image("contrast") + mean + per_image("brightness")
    if params.get("noise_key") is not None:
        normal = gaussian_noise(params["noise_key"], (batch, height, width, channels))
        out = out + normal * per_image("noise_std")
        rect = ops.convert_to_tensor(params["occlusion"], "float32")
        centres_x = np.arange(width, dtype=np.float32) + 0.5
        centres_y = np.arange(height, dtype=np.float32) + 0.5
        in_x = ops.logical_and(centres_x[None, :] >= rect[:, 0:1], centres_x[None, :] < rect[:, 2:3])
        in_y = ops.logical_and(centres_y[None, :] >= rect[:, 1:2], centres_y[None, :] < rect[:, 3:4])
        patch_mask = ops.logical_and(in_y[:, :, None, None], in_x[:, None, :, None])
        patch = per_image("occlusion_gray") + normal * per_image("occlusion_std")
        out = ops.where(patch_mask, patch, out)
    out = ops.clip(out, 0.0, 255.0)
    return out, points, visible_out


# ---------------------------------------------------------------------------
# The augmenter: host-side random parameters, compiled keras.ops work.


@functools.lru_cache(maxsize=None)
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

        return tf.function(augment_batch, jit_compile=True)
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
            ``tf.function`` on TensorFlow); retraces only per batch shape.

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

    def apply(self, images, landmarks, visible, params):
        """Apply given parameters and return numpy arrays.

        Args:
            images, landmarks, visible: the batch, as for ``__call__``.
            params: from ``sample_params`` (or edited: tests set exact maps).
        """
        from keras import ops

        images, landmarks, visible = _check_batch(images, landmarks, visible, self.scheme)
        out = self._apply(images, landmarks, visible, params)
        return tuple(ops.convert_to_numpy(x) for x in out)

    def __call__(self, images, landmarks, visible, rng=None):
        images, landmarks, visible = _check_batch(images, landmarks, visible, self.scheme)
        if not self.config.enabled:
            return images.astype(np.float32), landmarks.copy(), visible.copy()
        params = self.sample_params(images.shape[0], images.shape[1], images.shape[3], rng=rng)
        return self.apply(images, landmarks, visible, params)


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
