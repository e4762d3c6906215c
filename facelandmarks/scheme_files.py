"""Scheme files: a markup of your own as data (JSON, or YAML when PyYAML is installed).

A scheme file gives what ``landmarks.Scheme`` holds, with points by name or index::

    {"name": "face5",
     "points": ["right_eye_outer", "left_eye_outer", "nose_tip", "right_mouth", "left_mouth"],
     "pairs": [["right_eye_outer", "left_eye_outer"], ["right_mouth", "left_mouth"]],
     "normalize": ["right_eye_outer", "left_eye_outer"],
     "pupils": null,
     "regions": {"eyes": ["right_eye_outer", "left_eye_outer"], "nose": ["nose_tip"]}}

``points`` may also be a count (the points are then referred to by index).  ``pairs`` lists
left/right twins; every point not in a pair is its own mirror.  ``normalize`` is the two points
whose distance normalises the error (NME), or ``"box"``: sqrt(w * h) of the ground-truth points'
bounding box, for markups without eye corners.  Built-in schemes dump to the same format
(``dump_scheme``).  Loading a file registers the scheme, so ``get_scheme(name)`` finds it; prepared
npz files (key ``scheme_json``), run configs and exports (``scheme_definition``) carry the definition
and register it when read.

A stored definition may also hold ``landmark_box``: ``[scale, dx, dy]``, where dlib's box lies around the
markup's points on the faces it was prepared from (``faces.detection_like_box``'s relation, measured by
``datagen.py prepare`` and ``select-points``).  It is a measurement of the data, not part of the markup (two
sets of one markup may measure it a little differently, and a scheme file does not take it): it travels from
the npz into the run and the export, and whatever cuts a crop around predicted points (``--recrop``, the video
tracker) reads it with ``landmark_box_of``.  A definition without it has its built-in markup's relation
(``BUILTIN_LANDMARK_BOXES``: built-ins store no definition) or, for any other, iBUG 68's.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from facelandmarks.files import write_json_whole, write_text_whole
from facelandmarks.ibug68_map import KAGGLE15_FROM_IBUG68, from_ibug68
from facelandmarks.landmarks import Scheme, get_scheme, is_builtin, register_scheme

YAML_SUFFIXES = (".yaml", ".yml")
LANDMARK_BOX = "landmark_box"  # the stored definition's key for the measured relation (not a scheme file's)
# Where dlib's box lies around a built-in markup's points (``faces.detection_like_box``'s ``(scale, dx, dy)``), for
# those whose points span the face differently from iBUG 68's (whose relation, ``faces.LANDMARK_BOX_SCALE`` and
# ``LANDMARK_BOX_SHIFT``, is None here).  Measured 2026-12-05 by ``python benchmarks/builtin_landmark_box.py`` with
# dlib's HOG detector on the data iBUG 68's was measured on, 300-W (AFW + HELEN train) + YouTube68, 4334 faces found:
# kaggle15 (its points derived from the 68: eye centres the means of the six eye points, the rest iBUG 68 points, so
# it has no jaw) 1.351 / +0.006 / +0.010 (300-W alone 1.285 / 0.000 / +0.010), against iBUG 68's 1.028 / 0.000 /
# -0.090 on the same faces: iBUG 68's relation cut crops of kaggle15 points a fifth too small and too high (median IoU
# with dlib's crop 0.57, 0.82 with its own).  muct76 (101 MUCT photos: 1.019 / +0.033 / -0.103) matches iBUG 68's;
# wflw98 had 4 sample faces (0.969 / -0.069 / -0.029, within iBUG 68's face-to-face spread): both keep iBUG 68's.
BUILTIN_LANDMARK_BOXES: dict[str, tuple[float, float, float]] = {"kaggle15": (1.35, 0.0, 0.01)}


def kaggle15_from_ibug68(points):
    """kaggle15's 15 points from iBUG 68's 68 (``(..., 68, 2)`` -> ``(..., 15, 2)``, float64; ``KAGGLE15_FROM_IBUG68``)."""
    return from_ibug68(points, KAGGLE15_FROM_IBUG68)


def read_scheme_file(path: str | os.PathLike) -> dict:
    """The mapping a scheme file holds; an unreadable file is one ValueError naming it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # the byte-order mark Windows editors write is no error
    except OSError as err:
        raise ValueError(f"{path}: cannot read scheme file ({err.strerror or err})") from None
    except UnicodeDecodeError as err:  # once "'utf-8' codec can't decode byte 0xd9 in position 0", naming no file
        raise ValueError(f"{path}: not a scheme file (not UTF-8 text: byte {err.start} is "
                         f"0x{err.object[err.start]:02x})") from None
    if path.suffix.lower() in YAML_SUFFIXES:
        try:
            import yaml
        except ImportError:
            raise ValueError(f"{path}: a YAML scheme file needs PyYAML (pip install pyyaml), or write it as JSON") from None
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ValueError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err.msg} at line {err.lineno} column {err.colno})") from None


def load_scheme(path: str | os.PathLike, register: bool = True) -> Scheme:
    """The scheme of a file, registered (``get_scheme`` then finds it by name) unless ``register`` is False."""
    scheme = Scheme.from_dict(read_scheme_file(path), origin=str(path))
    if not register:
        return scheme
    try:
        return register_scheme(scheme, str(path))
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def resolve_scheme(spec: str | os.PathLike) -> Scheme:
    """``--scheme``: a scheme file (``.json``/``.yaml``) or the name of a built-in or registered scheme."""
    text = str(spec)
    if Path(text).suffix.lower() in (".json", *YAML_SUFFIXES) or Path(text).is_file():
        if not Path(text).is_file():
            raise ValueError(f"{text}: no such scheme file (--scheme)")
        return load_scheme(text)
    try:
        return get_scheme(text)
    except ValueError:
        if Path(text).suffix or ("/" in text or os.sep in text) and not _is_scheme_name(text.split("/", 1)[0]):
            raise ValueError(f"{text}: no such scheme file (--scheme; scheme files end in .json or .yaml)") from None
        raise  # a name, or a region of a known scheme (ibug68/mouth): get_scheme's own words


def _is_scheme_name(name: str) -> bool:
    try:
        get_scheme(name)
    except ValueError:
        return False
    return True


def dump_scheme(scheme: Scheme | str, path: str | os.PathLike) -> Path:
    """Write a scheme file (JSON, or YAML for a ``.yaml`` name) that ``load_scheme`` reads back; whole, or the earlier
    file stays."""
    scheme = get_scheme(scheme) if isinstance(scheme, str) else scheme
    path = Path(path)
    if path.suffix.lower() in YAML_SUFFIXES:
        import yaml

        return write_text_whole(path, yaml.safe_dump(scheme.to_dict(), sort_keys=False))
    return write_json_whole(path, scheme.to_dict())


def scheme_json(scheme: Scheme | str, landmark_box=None) -> str:
    """The definition as compact JSON (what an npz stores under ``scheme_json``), with ``landmark_box`` when given."""
    scheme = get_scheme(scheme) if isinstance(scheme, str) else scheme
    return json.dumps(_with_box(scheme.to_dict(), landmark_box), separators=(",", ":"))


def definition_to_store(scheme: Scheme | str, landmark_box=None) -> dict | None:
    """What a run config or an export stores under ``scheme_definition``: None for built-in schemes; for a
    region or box scheme (``face5/eyes``) the definition of its base, from which ``get_scheme`` derives it.
    ``landmark_box``: the relation measured on the data (``landmark_box_of``), stored with it when given."""
    name = scheme if isinstance(scheme, str) else scheme.name
    return None if is_builtin(name) else _with_box(get_scheme(name.split("/", 1)[0]).to_dict(), landmark_box)


def _with_box(definition: dict, landmark_box) -> dict:
    box = check_landmark_box(landmark_box, "landmark_box")
    return definition if box is None else {**definition, LANDMARK_BOX: [round(v, 4) + 0.0 for v in box]}  # + 0.0: no -0.0


def check_landmark_box(value, origin: str) -> tuple[float, float, float] | None:
    """``(scale, dx, dy)`` as floats, or None for None; anything else is one ValueError naming ``origin``."""
    if value is None:
        return None
    try:
        scale, dx, dy = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{origin}: landmark_box must be [scale, dx, dy], got {value!r}") from None
    if not (math.isfinite(dx) and math.isfinite(dy) and math.isfinite(scale) and scale > 0):
        raise ValueError(f"{origin}: landmark_box must be [scale > 0, dx, dy], finite, got {value!r}")
    return scale, dx, dy


def landmark_box_of(definition, origin: str = "scheme definition", scheme=None) -> tuple[float, float, float] | None:
    """The ``(scale, dx, dy)`` a stored definition (a mapping, its JSON text, or None) carries for
    ``faces.detection_like_box``; when it carries none (built-ins store none, older files of your own markup
    neither), that of ``scheme`` (a name or a ``Scheme``: ``builtin_landmark_box``), else None (iBUG 68's)."""
    if isinstance(definition, str):
        try:
            definition = json.loads(definition)
        except json.JSONDecodeError as err:
            raise ValueError(f"{origin}: scheme definition is not valid JSON ({err.msg})") from None
    stored = check_landmark_box(definition.get(LANDMARK_BOX), origin) if isinstance(definition, dict) else None
    return stored if stored is not None else builtin_landmark_box(scheme)


def builtin_landmark_box(scheme) -> tuple[float, float, float] | None:
    """A built-in markup's own relation (``BUILTIN_LANDMARK_BOXES``), or None: iBUG 68's, and any other markup's
    (a region of a built-in, ``kaggle15/eyes``, spans yet another part of the face: None too)."""
    name = getattr(scheme, "name", scheme)
    return BUILTIN_LANDMARK_BOXES.get(name) if isinstance(name, str) else None


def register_definition(definition, origin: str, by: str | None = None) -> Scheme:
    """Register a stored definition (a mapping, or its JSON text); problems are one ValueError naming ``origin``;
    ``by`` (default ``origin``): the file a later clash under its name names as the one that registered it.
    Its ``landmark_box`` is checked, and left out of the scheme (``landmark_box_of`` reads it)."""
    if isinstance(definition, str):
        try:
            definition = json.loads(definition)
        except json.JSONDecodeError as err:
            raise ValueError(f"{origin}: scheme definition is not valid JSON ({err.msg})") from None
    if isinstance(definition, dict) and LANDMARK_BOX in definition:
        check_landmark_box(definition[LANDMARK_BOX], origin)
        definition = {k: v for k, v in definition.items() if k != LANDMARK_BOX}
    scheme = Scheme.from_dict(definition, origin=origin)
    try:
        return register_scheme(scheme, by or origin)
    except ValueError as err:
        raise ValueError(f"{origin}: {err}") from None
