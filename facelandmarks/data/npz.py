"""The toolkit's one dataset format: a plain ``.npz`` of named arrays.

Every dataset -- MUCT, 300-W, YouTube68, Kaggle, WFLW, dlib XML -- becomes the
same file, readable with ``np.load(path, allow_pickle=False)``:

============  ==================  =============================================
key           dtype, shape        meaning
============  ==================  =============================================
images        uint8 (N, S, S, C)  face crops, RGB (C=3) or gray (C=1)
landmarks     float32 (N, K, 2)   x, y in normalised crop coordinates [0, 1]
visible       bool (N, K)         False: point unavailable / unlabelled
subject       str (N,)            identity used for splits
scheme        str ()              landmark scheme name (``landmarks.py``)
scheme_json   str ()              the scheme's definition, for schemes of your
                                  own (``scheme_files.py``); loading the file
                                  registers it, so ``get_scheme`` finds it; with
                                  ``landmark_box``, where dlib's box lies around
                                  its points (``landmark_box``, below)
box           float32 (N, 4)      crop ``[x0, y0, x1, y1]`` in original pixels
name          str (N,)            image file (relative to the source)
source        str (N,)            dataset the face came from (``300w``…)
mirrored      bool (N,)           face is a horizontal mirror of ``name``
vflipped      bool (N,)           face is a vertical flip of ``name`` (``--vflip``)
detection     str (N,)            ``dlib``, ``landmarks`` (fallback box) or
                                  ``given`` (box from the dataset)
path          str (N,)            absolute path of the original image when it
                                  was prepared ('' for CSV pixels); the dlib
                                  baseline reads the photo from there
set_id        str ()              the ``prepare`` run that wrote the file; its
                                  train, test and shard files share it
============  ==================  =============================================

Landmarks with ``visible`` False are either unlabelled (stored as 0) or
labelled but outside the crop (stored where they are, outside [0, 1]); either
way they carry no loss and no error.  ``box`` is always the crop in the
original image ``name``: for a mirrored row, mirror the landmarks back
(``landmarks.mirror_landmarks``), for a vertically flipped row take
``y = 1 - y``, before ``faces.points_from_crop``.

Files written with ``datagen.py prepare --jpeg Q`` hold the crops as JPEG instead of ``images``
(``packed.py``); ``load_npz`` decodes them, so readers see the keys above.

Bottleneck files (``datagen.py bottleneck``) replace ``images`` by
``features`` float32 (N, F) and add ``backbone``; everything else is kept.

Writes are atomic: a temporary file in the same folder, then a rename, so an
interrupted run never leaves a truncated npz under the final name.  The files
``prepare`` writes are replaced together as one set (``fileset.py``), and
``load_npz`` / ``ShardSet`` refuse a file that is not the one its set's
manifest lists.  Every file that cannot be used -- missing, truncated,
corrupt, off the schema, from another set -- raises ``DatasetError`` naming it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import zipfile
import zlib
from pathlib import Path

import numpy as np

from facelandmarks.data import fileset, packed
from facelandmarks.data.errors import DatasetError, OutputError, check_writable
from facelandmarks.data.fileset import check_set
from facelandmarks.files import MKSTEMP_RANDOM, remove_left_by_kills, write_json_whole, written_whole
from facelandmarks.landmarks import Scheme, get_scheme, is_builtin, register_scheme
from facelandmarks.scheme_files import definition_to_store, landmark_box_of, register_definition, scheme_json

__all__ = ["DatasetError", "check_set", "load_npz", "save_npz", "validate", "ShardSet"]

# save_npz's partial file before files.py (6 Dec 2026): mkstemp's .NAME.npz.XXXXXXXX.tmp; not 8 digits, which a
# user's dated copy (.faces.npz.20241201.tmp) has and mkstemp's random letters almost never (a 3e-5 chance: left)
OLDER_PARTIAL = re.compile(rf"\..+\.npz\.(?!\d{{8}}\.){MKSTEMP_RANDOM}\.tmp")
REQUIRED = ("landmarks", "visible", "subject", "scheme", "box")
PER_FACE = (
    "images", "features", "landmarks", "visible", "subject", "box", "name", "source", "mirrored", "vflipped", "detection",
    "path",
)


def save_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray], compress: bool = False, jpeg: int = 0) -> Path:
    """Write ``arrays`` to ``path`` whole (``files.written_whole``), removing what a writer killed before left there.

    ``jpeg``: 1-100 stores ``images`` as JPEG of that quality (``packed.py``); 0 keeps them raw.
    """
    path = Path(path)
    if jpeg and "images" in arrays:
        arrays = packed.pack(arrays, jpeg)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_left_by_kills(path.parent)  # a partial npz (as large as the file) that a kill left here
    remove_left_by_kills(path.parent, OLDER_PARTIAL)  # one an older version left (no process id in its name: a day old)
    with written_whole(path) as partial, open(partial, "wb") as handle:
        (np.savez_compressed if compress else np.savez)(handle, **arrays)
    return path


def check_output_file(out: str | os.PathLike, data: str | os.PathLike | None = None) -> None:
    """Before the work, refuse an ``--out`` that ``save_npz`` would write over its ``--data`` or a file of a prepared
    set (``PREFIX_train.npz`` beside ``PREFIX.manifest.json``: the set would be mixed), or in a folder it cannot write
    (``OutputError`` naming it, not the temporary file, after the work).  Creates no folder: of those ``out`` lacks,
    the nearest existing one must be writable."""
    out = Path(out)
    if data is not None and out.resolve() == Path(data).resolve():
        raise OutputError(f"{out}: --out is the --data file; write to another file (replacing it would lose the data)")
    located = fileset.set_name(out)
    if located is not None and fileset.manifest_path(*located).is_file():
        raise OutputError(f"{out}: a file of the prepared set {fileset.manifest_path(*located).name} (--out); writing "
                          f"it would leave a mixed set: give a name of its own, not {located[1]}_train.npz, _test.npz ...")
    if out.is_dir():
        raise OutputError(f"{out}: a folder (--out names the npz file to write)")
    folder = out.parent
    while not folder.exists() and folder != folder.parent:  # the folders save_npz would make are made then, not here:
        folder = folder.parent                                # a command that fails first leaves none behind
    check_writable(folder)


def validate(arrays: dict[str, np.ndarray], path: str | os.PathLike = "<memory>") -> None:
    """Check the schema; raise ``DatasetError`` naming ``path`` and the problem."""

    def fail(problem: str):
        raise DatasetError(f"{path}: {problem}")

    missing = [k for k in REQUIRED if k not in arrays]
    if "images" not in arrays and "features" not in arrays and not packed.is_packed(arrays):
        missing.insert(0, "images (or features)")
    if missing:
        fail(f"missing key(s) {', '.join(missing)}")
    try:
        scheme = scheme_of(arrays, "", by=path)  # fail() names the file
    except ValueError as err:
        fail(str(err))
    landmarks, visible = arrays["landmarks"], arrays["visible"]
    n, k = len(landmarks), scheme.num_points
    if landmarks.dtype != np.float32 or landmarks.shape != (n, k, 2):
        fail(f"landmarks must be float32 (N, {k}, 2) for scheme {scheme.name}, got {landmarks.dtype} {landmarks.shape}")
    if visible.dtype != np.bool_ or visible.shape != (n, k):
        fail(f"visible must be bool (N, {k}), got {visible.dtype} {visible.shape}")
    if "images" in arrays:
        images = arrays["images"]
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] != images.shape[2] or images.shape[3] not in (1, 3):
            fail(f"images must be uint8 (N, S, S, 1|3), got {images.dtype} {images.shape}")
    for key in PER_FACE:
        if key in arrays and len(arrays[key]) != n:
            fail(f"{key} has {len(arrays[key])} rows, landmarks has {n}")
    if arrays["box"].shape != (n, 4):
        fail(f"box must be (N, 4), got {arrays['box'].shape}")
    if not np.isfinite(landmarks[visible]).all():
        fail("visible landmarks contain NaN or infinity")
    if not np.isfinite(arrays["box"]).all():
        fail("box contains NaN or infinity")


# What numpy and zipfile raise on a truncated, corrupt or hostile file.
_UNREADABLE = (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError, KeyError, MemoryError, NotImplementedError)


def load_npz(path: str | os.PathLike, validate_schema: bool = True, decode_images: bool = True) -> dict[str, np.ndarray]:
    """Read a dataset file into a dict of arrays (no pickles), checking the schema and its set.

    ``decode_images=False`` leaves JPEG-packed crops (``packed.py``) as they are stored, for
    changes that keep the pixels (``datagen.py select-points``): saved again, they stay byte for byte.

    Raises:
        DatasetError: naming the file, whatever is wrong with it: missing,
            truncated, corrupt, pickled, off the schema, or not the file its
            set's manifest lists (a mixed train/test set).
    """
    path = Path(path)
    fileset.before_reading(path)
    if not path.is_file():
        raise DatasetError(f"{path}: {'a folder, not a dataset file' if path.is_dir() else 'no such dataset file'}")
    arrays = _read_arrays(path, decode_images)
    set_id = arrays.get("set_id")
    fileset.check_member(path, str(set_id) if set_id is not None and set_id.ndim == 0 else None)
    if validate_schema:
        validate(arrays, path)
    return arrays


def read_member(path: str | os.PathLike, key: str) -> np.ndarray:
    """One array of a dataset file (``subject``, say) without reading its images."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: {'a folder, not a dataset file' if path.is_dir() else 'no such dataset file'}")
    _check_magic(path)  # numpy calls any other file pickled data
    try:
        with np.load(path, allow_pickle=False) as data:
            return data[key]
    except _UNREADABLE as err:
        raise DatasetError(f"{path}: no readable {key!r} array ({_reason(err)})") from None


def _check_magic(path: Path) -> None:
    """A ``DatasetError`` for a file that does not start as an npz (a zip archive) or npy file does."""
    try:
        with open(path, "rb") as head:
            magic = head.read(6)
    except OSError as err:
        raise DatasetError(f"{path}: cannot be read ({err.strerror or err})") from None
    if not (magic.startswith(b"PK") or magic == b"\x93NUMPY"):  # numpy would call any other file pickled data
        raise DatasetError(f"{path}: not an npz file (it does not start as a zip archive does)")


def _read_arrays(path: Path, decode_images: bool = True) -> dict[str, np.ndarray]:
    _check_magic(path)
    try:
        data = np.load(path, allow_pickle=False)
    except _UNREADABLE as err:
        raise DatasetError(f"{path}: not a readable npz file ({_reason(err)})") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise DatasetError(f"{path}: not an npz archive (a single .npy array)")
    try:
        with data:
            arrays = {key: data[key] for key in data.files}
    except _UNREADABLE as err:
        raise DatasetError(f"{path}: not a readable npz file, truncated or corrupt ({_reason(err)})") from None
    odd = [key for key, value in arrays.items() if not isinstance(value, np.ndarray)]
    if odd:
        raise DatasetError(f"{path}: not an npz dataset (member {odd[0]!r} is not a .npy array)")
    if decode_images and packed.is_packed(arrays):
        try:
            arrays = packed.unpack(arrays)
        except (ValueError, IndexError, TypeError, MemoryError) as err:
            raise DatasetError(f"{path}: damaged JPEG-packed images ({_reason(err)})") from None
    return arrays


def _reason(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def scheme_of(arrays: dict[str, np.ndarray], path: str | os.PathLike = "<memory>", by=None) -> Scheme:
    """The arrays' scheme; a definition they carry (``scheme_json``) is registered first (its errors name ``path``,
    unless it is empty; a later clash names ``by`` or ``path``, the file that registered it)."""
    if "scheme_json" in arrays:
        scheme = register_definition(str(arrays["scheme_json"]), f"{path} (scheme_json)" if path else "scheme_json",
                                     f"{by or path} (scheme_json)" if by or path else None)
        if scheme.name != str(arrays["scheme"]):
            raise ValueError(f"scheme_json defines {scheme.name!r} but scheme is {str(arrays['scheme'])!r}")
        return scheme
    return get_scheme(str(arrays["scheme"]))


def select_points(arrays: dict[str, np.ndarray], scheme: Scheme, indices) -> dict[str, np.ndarray]:
    """The faces with only the points ``indices`` (in the new order), as a dataset of ``scheme``.

    Point ``i`` of ``scheme`` is point ``indices[i]`` of the arrays' scheme.  The new scheme's
    mirror must be the old one's restricted to the chosen points, since mirrored faces are in the
    data already; a mismatch names the point.  The result belongs to no prepared set (no set_id).
    """
    base = scheme_of(arrays)
    indices = [int(i) for i in indices]
    if len(indices) != scheme.num_points:
        raise ValueError(f"--points: {len(indices)} indices for the {scheme.num_points} points of {scheme.name}")
    bad = [i for i in indices if not 0 <= i < base.num_points]
    if bad:
        raise ValueError(f"--points: index {bad[0]} outside 0..{base.num_points - 1} ({base.name})")
    twice = [(indices.index(old), new) for new, old in enumerate(indices) if indices.index(old) != new]
    if twice:
        (a, b), old = twice[0], indices[twice[0][1]]
        raise ValueError(f"--points: {base.name} {old} given twice (points {a} and {b} of {scheme.name})")
    for new, old in enumerate(indices):
        twin = base.mirror[old]
        if indices[scheme.mirror[new]] != twin:
            raise ValueError(f"--points: point {scheme.point_label(new)} ({base.name} {old}) mirrors to {base.name} {twin}, "
                             f"but {scheme.name} pairs it with {base.name} {indices[scheme.mirror[new]]}")
    scheme = _with_ibug68(scheme, base, indices)
    out = {k: v for k, v in arrays.items() if k != "set_id"}
    out["landmarks"] = np.ascontiguousarray(arrays["landmarks"][:, indices])
    out["visible"] = np.ascontiguousarray(arrays["visible"][:, indices])
    out["scheme"] = np.array(scheme.name)
    if is_builtin(scheme):
        out.pop("scheme_json", None)  # a built-in's definition is the package's
    else:  # the crops were cut for the old points: where their box lies around the new ones, measured
        out["scheme_json"] = np.array(scheme_json(scheme, measured_landmark_box(out)))
    return out


def _with_ibug68(scheme: Scheme, base: Scheme, indices: list[int]) -> Scheme:
    """``scheme`` with ``ibug68`` (where its points lie in iBUG 68) as picking ``indices`` of ``base`` makes it:
    those indices from iBUG 68 data, through the data's own ``ibug68`` from other data; registered so.  One the
    scheme declares otherwise is a ValueError (the picked points are not those it says)."""
    picked = tuple((i,) for i in indices) if base.name == "ibug68" else \
        tuple(base.ibug68[i] for i in indices) if base.ibug68 is not None else None
    if picked is None or not any(picked) or is_builtin(scheme) or picked == scheme.ibug68:
        return scheme
    if scheme.ibug68 is not None:
        new = next(i for i, (a, b) in enumerate(zip(picked, scheme.ibug68)) if a != b)
        said, got = (", ".join(map(str, g)) if g else "none" for g in (scheme.ibug68[new], picked[new]))
        raise ValueError(f"--points: {scheme.name}'s \"ibug68\" puts point {scheme.point_label(new)} at iBUG 68 {said}, "
                         f"but the points picked put it at {got} (pick those, or correct its \"ibug68\")")
    picked = dataclasses.replace(scheme, ibug68=picked)
    register_scheme(picked)  # the one registered from its file learns it too
    return picked


MIN_MEASURED_FACES = 5


def landmark_box(data) -> tuple[float, float, float] | None:
    """The ``(scale, dx, dy)`` a dataset's definition carries (arrays' ``scheme_json``, a ``ShardSet``'s
    manifest): where dlib's box lies around its points (``faces.detection_like_box``); a built-in markup's own
    (``scheme_files.builtin_landmark_box``: its files store no definition); None: iBUG 68's."""
    if isinstance(data, ShardSet):
        return data.landmark_box
    stored = str(data["scheme_json"]) if "scheme_json" in data else None
    return landmark_box_of(stored, "scheme_json", str(data["scheme"]) if "scheme" in data else None)


def measured_landmark_box(arrays: dict[str, np.ndarray]) -> tuple[float, float, float] | None:
    """Where the box dlib drew, or would have drawn, lies around the points of these crops: ``(scale, dx, dy)``
    for ``faces.detection_like_box``, medians over the faces.  A crop cut around such a box (``detection``
    ``dlib`` or ``landmarks``) holds it at one place, ``faces.detection_from_crop_box`` of the whole crop, so
    the points alone measure it.  None when fewer than ``MIN_MEASURED_FACES`` faces can be measured (crops of
    the dataset's own boxes, ``given``, are not; nor bottleneck files, which have no crop size).  Measured in the
    crops' pixels, as ``Predictor`` applies it to its input's."""
    from facelandmarks.data import faces

    if "images" not in arrays and "images_shape" not in arrays:
        return None
    size = int(arrays["images"].shape[1] if "images" in arrays else arrays["images_shape"][1])  # JPEG-packed: not decoded
    rows = np.isin(arrays["detection"], ("dlib", "landmarks")) if "detection" in arrays else slice(None)
    detection = faces.detection_from_crop_box([0, 0, size, size])
    measured = [faces.box_relation(detection, uv * size - 0.5, seen)
                for uv, seen in zip(arrays["landmarks"][rows], arrays["visible"][rows]) if seen.sum() >= 2]
    return tuple(float(v) for v in np.median(measured, axis=0)) if len(measured) >= MIN_MEASURED_FACES else None


def subset(arrays: dict[str, np.ndarray], index) -> dict[str, np.ndarray]:
    """Rows ``index`` of every per-face array; file-level arrays are kept."""
    n = len(arrays["landmarks"])
    return {k: (v[index] if v.ndim and len(v) == n and k in PER_FACE else v) for k, v in arrays.items()}


def concatenate(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Join datasets of one scheme (and one image size) row-wise."""
    if not parts:
        raise ValueError("nothing to concatenate")
    schemes = {str(p["scheme"]) for p in parts}
    if len(schemes) != 1:
        raise ValueError(f"cannot combine datasets of different schemes: {sorted(schemes)}")
    out = {}
    for key in parts[0]:
        if key in PER_FACE:
            out[key] = np.concatenate([p[key] for p in parts])
        else:
            out[key] = parts[0][key]
    return out


# ----------------------------------------------------------------------------
# Shards: datasets larger than memory

MANIFEST_SUFFIX = ".shards.json"


def shard_path(prefix: str | os.PathLike, index: int) -> Path:
    return Path(f"{prefix}-{index:05d}.npz")


def write_manifest(path: str | os.PathLike, shards: list[dict], scheme: str, image_shape, set_id: str | None = None,
                   landmark_box=None) -> Path:
    """``PREFIX.shards.json``: the shard files (relative to it), their face counts, scheme, image shape and set id
    (and, for a scheme of your own, its definition, with ``landmark_box`` when measured)."""
    path = Path(path)
    body = {
        "scheme": scheme,
        "image_shape": [int(v) for v in image_shape],
        "faces": int(sum(s["faces"] for s in shards)),
        "shards": [{"file": Path(s["file"]).name, "faces": int(s["faces"])} for s in shards],
    }
    if set_id:
        body["set_id"] = set_id
    if not is_builtin(scheme):  # a scheme of your own travels with its data
        body["scheme_definition"] = definition_to_store(scheme, landmark_box)
    return write_json_whole(path, body)


def is_manifest(path: str | os.PathLike) -> bool:
    return str(path).endswith(MANIFEST_SUFFIX)


class ShardSet:
    """The shards of a manifest, read one at a time (nothing loads the whole set).

    Args:
        manifest: path of a ``.shards.json`` written by ``datagen.py prepare --shard-size``.
    """

    def __init__(self, manifest: str | os.PathLike):
        self.manifest = Path(manifest)
        fileset.before_reading(self.manifest)
        try:
            body = json.loads(self.manifest.read_text())
            self.files = [self.manifest.parent / s["file"] for s in body["shards"]]
            self.counts = [int(s["faces"]) for s in body["shards"]]
            if "scheme_definition" in body:
                register_definition(body["scheme_definition"], f"{self.manifest} (scheme_definition)")
            self.scheme = get_scheme(body["scheme"])
            self.landmark_box = landmark_box_of(body.get("scheme_definition"), f"{self.manifest} (scheme_definition)",
                                                self.scheme)
            self.image_shape = tuple(body["image_shape"])
            self.set_id = body.get("set_id")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise DatasetError(f"{self.manifest}: not a readable shard manifest ({_reason(err)})") from None
        fileset.check_member(self.manifest, self.set_id)
        missing = [str(f) for f in self.files if not f.is_file()]
        if missing:
            raise DatasetError(f"{self.manifest}: shard file(s) missing: {', '.join(missing[:3])}")

    @property
    def faces(self) -> int:
        return sum(self.counts)

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index: int) -> dict[str, np.ndarray]:
        arrays = load_npz(self.files[index])
        same_set = self.set_id is None or str(arrays.get("set_id", "")) == self.set_id
        if str(arrays["scheme"]) != self.scheme.name or len(arrays["landmarks"]) != self.counts[index] or not same_set:
            raise DatasetError(f"{self.files[index]}: does not match its manifest {self.manifest}")
        return arrays
