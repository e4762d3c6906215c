"""Augmentation settings: ranges and probabilities, presets, and the one-line text form of the CLI."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

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
    def default(cls) -> AugmentConfig:
        """The defaults for face crops (the same as ``AugmentConfig()``)."""
        return cls()

    @classmethod
    def none(cls) -> AugmentConfig:
        """No augmentation: every probability 0 (the ranges keep their defaults)."""
        zero = {f"{n}_p": 0.0 for n in RANGED} | {n: 0.0 for n in PROBABILITY_ONLY}
        return cls(**zero)

    @classmethod
    def light(cls) -> AugmentConfig:
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
    def parse(cls, text: str) -> AugmentConfig:
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
            if not sep and "=" not in text and name not in fields:  # a lone word: a preset's name, mistyped or made up
                raise ValueError(f"augmentation {token!r}: not a preset ({', '.join(PRESETS)}) nor name=value "
                                 f"tokens such as rotation=10,scale=0.1")
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
                    if changes[f"{name}_p"] == 0:  # a transform with no default probability would silently not happen
                        raise ValueError(f"augmentation token {token!r}: {name} has no default probability; "
                                         f"give one, {name}={value}@P")
        try:
            return dataclasses.replace(base, **changes)
        except ValueError as error:
            raise ValueError(f"augmentation string {text!r}: {error}") from None

    def to_string(self) -> str:
        """A string that ``parse`` turns back into an equal config.

        It names what differs from ``none()``, where ``parse`` starts: the transforms of ``RANGED``
        (``name=range@probability``), then those of ``PROBABILITY_ONLY``, then every other field
        (``occlusion_size``, ``fill_mode``, a new transform's second setting) as ``name=value``, read from
        the fields, so a new one needs no line here.
        """
        start, parts = type(self).none(), []
        for name in RANGED:
            value, probability = getattr(self, name), getattr(self, f"{name}_p")
            if (value, probability) != (getattr(start, name), getattr(start, f"{name}_p")):
                parts.append(f"{name}={_fmt(value)}@{_fmt(probability)}")
        written = {*RANGED, *(f"{name}_p" for name in RANGED)}
        for name in [*PROBABILITY_ONLY, *(f.name for f in dataclasses.fields(self) if f.name not in PROBABILITY_ONLY)]:
            if name not in written and getattr(self, name) != getattr(start, name):
                parts.append(f"{name}={_fmt(getattr(self, name))}")
        return ",".join(parts) or "none"

    def to_dict(self) -> dict:
        """Plain dict for a run's ``config.json``."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> AugmentConfig:
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
