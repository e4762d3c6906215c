"""Landmark schemes: the one place that knows what each point index means.

A scheme names a markup (``muct76``, ``ibug68``, ``wflw98``, ``kaggle15``) and gives everything the rest of the toolkit
needs to treat its points correctly:

* ``mirror`` -- the index each point takes when the image is flipped
  horizontally (the subject's left eye corner becomes the right one);
* ``norm_points`` -- the two outer eye corners whose distance normalises the
  error (NME); ``pupils`` where the markup has them;
* ``regions`` -- named groups of points (jaw, brows, eyes, nose, mouth) used by per-region metrics and the region refiners.

Sides are named from the subject's point of view: ``right_eye`` is the eye that appears on the left of a frontal
photograph.

Coordinates in this toolkit are *normalised crop coordinates*: a point at pixel ``p`` (0-based, pixel centres on
integers, the OpenCV convention) of a crop of side ``S`` has ``u = (p + 0.5) / S``.  Horizontal mirroring is then
exactly ``u' = 1 - u`` and resizing the crop never moves a point.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from facelandmarks.ibug68_map import KAGGLE15_FROM_IBUG68, ibug68_entries, ibug68_of

NORMALIZE_MODES = ("points", "box")
SCHEME_KEYS = ("name", "description", "points", "pairs", "normalize", "pupils", "regions", "ibug68")


@dataclass(frozen=True)
class Scheme:
    """Description of one landmark markup.

    Args:
        name: short identifier stored in every npz (``scheme`` key).
        num_points: K, the number of landmarks.
        mirror: tuple of K indices; point ``i`` of a mirrored face is point ``mirror[i]`` of the original, moved to ``1 - x``.
        norm_points: the two indices whose distance normalises NME (outer eye corners; the eye centres for kaggle15);
            None for the derived schemes of single regions and region boxes.
        pupils: the two pupil indices, or None when the markup has none.
        regions: region name -> tuple of point indices.
        description: one line for listings.
        point_names: K names, or () where the markup has none.
        normalize: ``points`` (NME by the distance of ``norm_points``) or ``box`` (NME by sqrt(w * h) of the
            ground-truth points' box, for markups without eye corners; ``norm_points`` is then None).
        ibug68: where each point lies in iBUG 68 (``ibug68_map``: per point the indices whose mean it is, or None
            where iBUG 68 has no such point), or None where the markup does not say.
    """

    name: str
    num_points: int
    mirror: tuple[int, ...]
    norm_points: tuple[int, int] | None
    pupils: tuple[int, int] | None
    regions: dict[str, tuple[int, ...]] = field(default_factory=dict)
    description: str = ""
    point_names: tuple[str, ...] = ()
    normalize: str = "points"
    ibug68: tuple[tuple[int, ...] | None, ...] | None = None

    def __post_init__(self):
        k = self.num_points
        if self.point_names and len(self.point_names) != k:
            raise ValueError(f"scheme {self.name!r}: {len(self.point_names)} point names for {k} points")
        if self.normalize not in NORMALIZE_MODES:
            raise ValueError(f"scheme {self.name!r}: normalize must be one of {NORMALIZE_MODES}, got {self.normalize!r}")
        if self.normalize == "box" and self.norm_points is not None:
            raise ValueError(f"scheme {self.name!r}: normalize 'box' takes no norm_points")
        if sorted(self.mirror) != list(range(k)):
            raise ValueError(f"scheme {self.name!r}: mirror is not a permutation of 0..{k - 1}")
        if any(self.mirror[self.mirror[i]] != i for i in range(k)):
            raise ValueError(f"scheme {self.name!r}: mirror is not an involution")
        for idx in (*(self.norm_points or ()), *(self.pupils or ())):
            if not 0 <= idx < k:
                raise ValueError(f"scheme {self.name!r}: point index {idx} outside 0..{k - 1}")
        for region, points in self.regions.items():
            if not points or any(not 0 <= p < k for p in points):
                raise ValueError(f"scheme {self.name!r}: region {region!r} has bad indices {points}")

    @property
    def mirror_array(self) -> np.ndarray:
        return np.asarray(self.mirror, dtype=np.int64)

    def point_label(self, index: int) -> str:
        return self.point_names[index] if self.point_names else str(index)

    def to_dict(self) -> dict:
        """The scheme as a scheme file holds it (``from_dict`` reads it back); points by name where named."""
        ref = self.point_label if self.point_names else int
        pairs = [[ref(i), ref(j)] for i, j in enumerate(self.mirror) if i < j]
        normalize = "box" if self.normalize == "box" else None if self.norm_points is None else [ref(i) for i in self.norm_points]
        return {"name": self.name, "description": self.description,
                "points": list(self.point_names) if self.point_names else self.num_points, "pairs": pairs,
                "normalize": normalize, "pupils": None if self.pupils is None else [ref(i) for i in self.pupils],
                "regions": {region: [ref(i) for i in points] for region, points in self.regions.items()},
                **({} if self.ibug68 is None else {"ibug68": ibug68_entries(self.ibug68)})}

    @classmethod
    def from_dict(cls, data, origin: str | None = None) -> Scheme:
        """A scheme from its file's contents; a problem raises one ValueError naming ``origin`` and the point."""
        return _scheme_from_dict(data, origin)

    def same_markup(self, other: Scheme) -> bool:
        """Same points, mirror, normalisation, pupils and regions (names, description and ``ibug68`` aside)."""
        keys = ("num_points", "mirror", "norm_points", "pupils", "regions", "normalize")
        return all(getattr(self, k) == getattr(other, k) for k in keys)

    def region_of(self) -> np.ndarray:
        """Array of K region names ('' where a point is in no region)."""
        names = np.full(self.num_points, "", dtype=object)
        for region, points in self.regions.items():
            names[list(points)] = region
        return names


def _reverse(first: int, last: int) -> list[int]:
    return list(range(last, first - 1, -1))


def _build_mirror(k: int, pairs: list[tuple[int, int]]) -> tuple[int, ...]:
    perm = list(range(k))
    for a, b in pairs:
        perm[a], perm[b] = b, a
    return tuple(perm)


def _pairs(left: list[int], right: list[int]) -> list[tuple[int, int]]:
    if len(left) != len(right):
        raise ValueError("mirror pair lists differ in length")
    return list(zip(left, right))


# iBUG 68 (300-W, YouTube68, dlib): jaw 0-16, brows 17-26, nose 27-35,
# eyes 36-47, mouth 48-67.
_IBUG68_PAIRS = (
    _pairs(list(range(0, 8)), _reverse(9, 16))  # jaw
    + _pairs(list(range(17, 22)), _reverse(22, 26))  # brows
    + _pairs([31, 32], [35, 34])  # nostrils
    + _pairs([36, 37, 38, 39, 40, 41], [45, 44, 43, 42, 47, 46])  # eyes
    + _pairs([48, 49, 50], [54, 53, 52])  # outer lip, top
    + _pairs([59, 58], [55, 56])  # outer lip, bottom
    + _pairs([60, 61], [64, 63])  # inner lip, top
    + _pairs([67], [65])  # inner lip, bottom
)

IBUG68 = Scheme(
    name="ibug68",
    num_points=68,
    mirror=_build_mirror(68, _IBUG68_PAIRS),
    norm_points=(36, 45),
    pupils=None,
    regions={
        "jaw": tuple(range(0, 17)),
        "right_brow": tuple(range(17, 22)),
        "left_brow": tuple(range(22, 27)),
        "nose": tuple(range(27, 36)),
        "right_eye": tuple(range(36, 42)),
        "left_eye": tuple(range(42, 48)),
        "mouth": tuple(range(48, 68)),
    },
    description="iBUG 300-W 68 points (300-W, YouTube68, dlib)",
)

# MUCT 76 (Stasm): jaw 0-14, brows 15-26, eyes 27-36 (+ 68-75), nose 37-47
# and 67, mouth 48-66.  27 and 32 are the outer eye corners, 31 and 36 the
# pupils.  Checked against every mirrored ``ir`` row of muct76-opencv.csv
# (tests/data/test_landmarks.py).
_MUCT76_PAIRS = (
    _pairs(list(range(0, 7)), _reverse(8, 14))  # jaw
    + _pairs(list(range(15, 21)), list(range(21, 27)))  # brows
    + _pairs(list(range(27, 32)), list(range(32, 37)))  # eyes + pupils
    + _pairs([37, 38, 39, 40], [45, 44, 43, 42])  # nose side
    + _pairs([46], [47])  # nostrils
    + _pairs([48, 49, 50], [54, 53, 52])  # outer lip, top
    + _pairs([55, 56], [59, 58])  # outer lip, bottom
    + _pairs([60, 63], [62, 65])  # inner lip
    + _pairs(list(range(68, 72)), list(range(72, 76)))  # extra eye points
)

MUCT76 = Scheme(
    name="muct76",
    num_points=76,
    mirror=_build_mirror(76, _MUCT76_PAIRS),
    norm_points=(27, 32),
    pupils=(31, 36),
    regions={
        "jaw": tuple(range(0, 15)),
        "left_brow": tuple(range(15, 21)),
        "right_brow": tuple(range(21, 27)),
        "right_eye": (27, 28, 29, 30, 31, 68, 69, 70, 71),
        "left_eye": (32, 33, 34, 35, 36, 72, 73, 74, 75),
        "nose": tuple(range(37, 48)) + (67,),
        "mouth": tuple(range(48, 67)),
    },
    description="MUCT 76 points (Stasm markup; 0,0 = unavailable)",
)

# WFLW 98: jaw 0-32, brows 33-50, nose 51-59, eyes 60-75, mouth 76-95,
# pupils 96/97.
_WFLW98_PAIRS = (
    _pairs(list(range(0, 16)), _reverse(17, 32))  # jaw
    + _pairs([33, 34, 35, 36, 37, 38, 39, 40, 41], [46, 45, 44, 43, 42, 50, 49, 48, 47])  # brows
    + _pairs([55, 56], [59, 58])  # nostrils
    + _pairs([60, 61, 62, 63, 64, 65, 66, 67], [72, 71, 70, 69, 68, 75, 74, 73])  # eyes
    + _pairs([76, 77, 78, 87, 86], [82, 81, 80, 83, 84])  # outer lip
    + _pairs([88, 89, 95], [92, 91, 93])  # inner lip
    + _pairs([96], [97])  # pupils
)

WFLW98 = Scheme(
    name="wflw98",
    num_points=98,
    mirror=_build_mirror(98, _WFLW98_PAIRS),
    norm_points=(60, 72),
    pupils=(96, 97),
    regions={
        "jaw": tuple(range(0, 33)),
        "right_brow": tuple(range(33, 42)),
        "left_brow": tuple(range(42, 51)),
        "nose": tuple(range(51, 60)),
        "right_eye": tuple(range(60, 68)) + (96,),
        "left_eye": tuple(range(68, 76)) + (97,),
        "mouth": tuple(range(76, 96)),
    },
    description="WFLW 98 points",
)

# Kaggle facial-keypoints-detection, 15 points in the CSV's column order.
KAGGLE15_NAMES = (
    "left_eye_center", "right_eye_center",
    "left_eye_inner_corner", "left_eye_outer_corner",
    "right_eye_inner_corner", "right_eye_outer_corner",
    "left_eyebrow_inner_end", "left_eyebrow_outer_end",
    "right_eyebrow_inner_end", "right_eyebrow_outer_end",
    "nose_tip",
    "mouth_left_corner", "mouth_right_corner",
    "mouth_center_top_lip", "mouth_center_bottom_lip",
)

KAGGLE15 = Scheme(
    name="kaggle15",
    num_points=15,
    mirror=_build_mirror(15, [(0, 1), (2, 4), (3, 5), (6, 8), (7, 9), (11, 12)]),
    norm_points=(0, 1),
    pupils=(0, 1),
    regions={
        "left_eye": (0, 2, 3),
        "right_eye": (1, 4, 5),
        "left_brow": (6, 7),
        "right_brow": (8, 9),
        "nose": (10,),
        "mouth": (11, 12, 13, 14),
    },
    description="Kaggle facial keypoints, 15 points (eye centres normalise)",
    point_names=KAGGLE15_NAMES,
    ibug68=KAGGLE15_FROM_IBUG68,  # dlib and 68-point models are scored on Kaggle's points
)

SCHEMES: dict[str, Scheme] = {s.name: s for s in (MUCT76, IBUG68, WFLW98, KAGGLE15)}
_REGISTERED: dict[str, Scheme] = {}  # user schemes: scheme files, npz files and runs that carry a definition
_ORIGINS: dict[str, str | None] = {}  # the file that registered each


def register_scheme(scheme: Scheme, origin: str | None = None) -> Scheme:
    """Make ``get_scheme(scheme.name)`` find a scheme of your own; returns the registered one.

    Registering the same markup again is a no-op; another markup under a taken name (a built-in's or a
    registered one's) is a ValueError naming the ``origin`` (a file) that registered the name and what differs.
    """
    known = SCHEMES.get(scheme.name) or _REGISTERED.get(scheme.name)
    if known is not None:
        if not known.same_markup(scheme):
            differ = [k for k, key in (("point count", "num_points"), ("pairs", "mirror"), ("normalize", "norm_points"),
                      ("pupils", "pupils"), ("regions", "regions")) if getattr(known, key) != getattr(scheme, key)]
            by = f"by {_ORIGINS[scheme.name]}; " if _ORIGINS.get(scheme.name) else ""
            where = "a built-in scheme" if scheme.name in SCHEMES else \
                f"already registered with another markup ({by}its {', '.join(differ or ['normalize'])} differ)"
            raise ValueError(f"scheme name {scheme.name!r} is {where}; give yours another name")
        if known.ibug68 is not None or scheme.ibug68 is None or scheme.name in SCHEMES:
            return known  # (the same markup, now saying where its points lie in iBUG 68, replaces it)
    _REGISTERED[scheme.name], _ORIGINS[scheme.name] = scheme, _ORIGINS.get(scheme.name) if known else origin
    return scheme


def is_builtin(scheme: Scheme | str) -> bool:
    return (scheme if isinstance(scheme, str) else scheme.name).split("/", 1)[0] in SCHEMES


def _fail(origin: str, problem: str):
    raise ValueError(f"{origin}: {problem}")


def _scheme_from_dict(data, origin: str | None) -> Scheme:
    name = data.get("name") if isinstance(data, dict) else None
    origin = origin or f"scheme {name!r}"
    if not isinstance(data, dict):
        _fail(origin, f"a scheme is a mapping of {', '.join(SCHEME_KEYS)}, got {type(data).__name__}")
    unknown = [key for key in data if key not in SCHEME_KEYS]
    if unknown:
        _fail(origin, f"unknown key {unknown[0]!r} (known: {', '.join(SCHEME_KEYS)})")
    if not isinstance(name, str) or not name or "/" in name or name != name.strip():
        _fail(origin, f"'name' must be a non-empty name without '/' or surrounding spaces, got {name!r}")
    points = data.get("points")
    if isinstance(points, int) and not isinstance(points, bool) and points > 0:
        names, k = (), points
    elif isinstance(points, list) and points and all(isinstance(p, str) and p.strip() for p in points):
        names, k = tuple(points), len(points)
        for i, point in enumerate(names):
            if names.index(point) != i:
                _fail(origin, f"point name {point!r} appears twice (points {names.index(point)} and {i})")
    else:
        _fail(origin, f"'points' must be a list of point names or a point count, got {points!r}")

    def index(ref, where: str) -> int:
        if isinstance(ref, str) and not ref.isdigit():
            if ref not in names:
                _fail(origin, f"unknown point {ref!r} in {where}" + ("" if names else " (the points have no names)"))
            return names.index(ref)
        if isinstance(ref, bool) or not isinstance(ref, (int, str)):
            _fail(origin, f"point {ref!r} in {where} is neither a point name nor an index")
        if not 0 <= int(ref) < k:
            _fail(origin, f"point index {int(ref)} in {where} outside 0..{k - 1}")
        return int(ref)

    def two(key: str):
        value = data.get(key)
        if value is None:
            return None
        if not isinstance(value, list) or len(value) != 2:
            _fail(origin, f"{key!r} must be two points, got {value!r}")
        a, b = index(value[0], key), index(value[1], key)
        if a == b:
            _fail(origin, f"{key!r} names point {value[0]!r} twice")
        return a, b

    mirror, paired = list(range(k)), {}
    pairs = data.get("pairs") or []
    if not isinstance(pairs, list):
        _fail(origin, f"'pairs' must be a list of [left, right] point pairs, got {pairs!r}")
    for pair in pairs:
        if not isinstance(pair, list) or len(pair) != 2:
            _fail(origin, f"pair {pair!r} is not two points")
        shown = tuple(pair)
        a, b = index(pair[0], f"pair {shown}"), index(pair[1], f"pair {shown}")
        for ref, i in ((pair[0], a), (pair[1], b)):
            if i in paired or (i == a == b):
                _fail(origin, f"pair {shown} names {ref!r} twice" + (f" (also in pair {paired[i]})" if i in paired else ""))
            paired[i] = shown
        mirror[a], mirror[b] = b, a
    normalize = data.get("normalize", "missing")
    if normalize == "missing":
        _fail(origin, "no 'normalize': give the two points whose distance normalises the error "
                      "(the outer eye corners) or \"box\" (the face box size)")
    box = normalize == "box"
    norm_points = None if box else two("normalize")
    regions = data.get("regions") or {}
    if not isinstance(regions, dict):
        _fail(origin, f"'regions' must map region names to lists of points, got {regions!r}")
    parsed_regions = {}
    for region, refs in regions.items():
        if not isinstance(refs, list) or not refs:
            _fail(origin, f"region {region} must be a non-empty list of points, got {refs!r}")
        parsed_regions[str(region)] = tuple(index(ref, f"region {region}") for ref in refs)
    pupils = two("pupils")  # outside the try below: its errors name the origin already
    try:
        return Scheme(name=name, num_points=k, mirror=tuple(mirror), norm_points=norm_points, pupils=pupils,
                      regions=parsed_regions, description=str(data.get("description") or ""), point_names=names,
                      normalize="box" if box else "points", ibug68=ibug68_of(data.get("ibug68"), names or k))
    except ValueError as err:
        _fail(origin, str(err))


# Regions the coarse-to-fine refiners work on (seed 003): the jaw stays with
# the global model.
REFINED_REGIONS = ("right_brow", "left_brow", "right_eye", "left_eye", "nose", "mouth")
BOX_CORNERS = ("top_left", "top_right", "bottom_left", "bottom_right")


def region_scheme(base: Scheme | str, region: str) -> Scheme:
    """The points of one region as a scheme of their own (``ibug68/left_eye``).

    Used by the region refiners; a lone region cannot be mirrored onto
    itself, so its mirror is the identity (refiners train without flips).
    """
    base = get_scheme(base) if isinstance(base, str) else base
    if region not in base.regions:
        raise ValueError(f"scheme {base.name} has no region {region!r}; regions: {', '.join(base.regions)}")
    k = len(base.regions[region])
    return Scheme(
        name=f"{base.name}/{region}", num_points=k, mirror=tuple(range(k)), norm_points=None, pupils=None,
        regions={region: tuple(range(k))}, description=f"{region} points of {base.name}",
    )


def box_scheme(base: Scheme | str, regions=REFINED_REGIONS) -> Scheme:
    """Region boxes as landmarks (``ibug68/boxes``): the four corners of each region's box.

    Point ``4 * r + c`` is corner ``BOX_CORNERS[c]`` of region ``regions[r]``.  Four corners (not two) make the
    horizontal mirror a pure permutation -- left and right regions swap, and so do each box's left and right
    corners -- so augmentation and mirroring treat boxes like any markup.
    """
    base = get_scheme(base) if isinstance(base, str) else base
    regions = tuple(regions)
    for region in regions:
        if region not in base.regions:
            raise ValueError(f"scheme {base.name} has no region {region!r}")
    twin = {r: r.replace("left", "@").replace("right", "left").replace("@", "right") for r in regions}
    corner_twin = {0: 1, 1: 0, 2: 3, 3: 2}
    mirror = [4 * regions.index(twin[r]) + corner_twin[c] for r in regions for c in range(4)]
    return Scheme(
        name=f"{base.name}/boxes", num_points=4 * len(regions), mirror=tuple(mirror), norm_points=None, pupils=None,
        regions={r: tuple(range(4 * i, 4 * i + 4)) for i, r in enumerate(regions)},
        description=f"boxes of {', '.join(regions)} of {base.name}",
    )


def get_scheme(name: str) -> Scheme:
    """Look a scheme up by name (``ibug68``, ``ibug68/left_eye``, ``ibug68/boxes``)."""
    name = str(name)
    if "/" in name:
        base, part = name.split("/", 1)
        return box_scheme(get_scheme(base)) if part == "boxes" else region_scheme(get_scheme(base), part)
    scheme = SCHEMES.get(name) or _REGISTERED.get(name)
    if scheme is None:
        known = ", ".join([*SCHEMES, *_REGISTERED])
        raise ValueError(f"unknown landmark scheme {name!r}; known: {known} (a scheme of your own loads from its file)")
    return scheme


def mirror_landmarks(landmarks: np.ndarray, visible: np.ndarray, scheme: Scheme | str):
    """Landmarks and visibility of the horizontally flipped crop.

    Works on normalised crop coordinates of any leading shape ``(..., K, 2)``: x becomes ``1 - x`` and the points
    swap identities according to the scheme's permutation.
    """
    scheme = get_scheme(scheme) if isinstance(scheme, str) else scheme
    perm = scheme.mirror_array
    flipped = np.array(landmarks, dtype=np.float32, copy=True)[..., perm, :]
    flipped[..., 0] = 1.0 - flipped[..., 0]
    return flipped, np.asarray(visible)[..., perm]


def mirror_pixel_landmarks(points: np.ndarray, scheme: Scheme | str, width: int) -> np.ndarray:
    """Mirror pixel coordinates of an image ``width`` pixels wide: x' = width - 1 - x."""
    scheme = get_scheme(scheme) if isinstance(scheme, str) else scheme
    flipped = np.array(points, dtype=np.float64, copy=True)[..., scheme.mirror_array, :]
    flipped[..., 0] = (width - 1) - flipped[..., 0]
    return flipped
