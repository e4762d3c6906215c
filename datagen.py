"""Datasets into the toolkit's one npz format (see ``dataset_io.py``).

Subcommands (``python datagen.py COMMAND --help`` for every option):

``download muct --dest DIR [--url BASE]``
    Fetch the six official MUCT tarballs (resuming partial downloads) and
    extract them safely into DIR.
``prepare DATASET --source DIR [DATASET --source DIR ...] --size S --out PREFIX``
    Read a landmarked dataset (muct, 300w, youtube68, kaggle, wflw, dlibxml),
    find each face with dlib, crop a square around it, move the landmarks into
    the crop, split by subject, mirror the training faces and write
    ``PREFIX_train.npz``, ``PREFIX_test.npz`` and ``PREFIX_report.{json,txt}``.
``bottleneck --backbone NAME --data X.npz --out Y.npz``
    Features of a frozen ImageNet backbone, for head-only training.
``info X.npz [Y.npz ...]``
    Counts, scheme, size, subjects, visibility, detections, mirrors.

Preparation, per face: read the image (a corrupt or missing image is skipped
with its reason), find the dlib detection that belongs to the landmarks
(``faces.FaceDetector.find_face``), make the crop box from it
(``faces.crop_box_from_detection``) or, when dlib finds no matching face, from
the landmarks (``faces.crop_box_from_landmarks``, recorded as
``detection='landmarks'``; ``--no-fallback`` skips those faces instead), cut
and resize the crop, and convert the landmarks to normalised crop coordinates.
A landmark is ``visible`` only when it is labelled and inside the crop.
Malformed annotation files (a ``.pts`` with the wrong number of points, a CSV
row of the wrong length) stop the run with an error naming the file: they
mean the data is not what the chosen reader expects.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import multiprocessing
import os
import re
import sys
import tarfile
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ElementTree
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import cv2
import numpy as np

import dataset_io
import faces
from landmarks import KAGGLE15_NAMES, get_scheme, mirror_landmarks

DATASETS = ("muct", "300w", "youtube68", "kaggle", "wflw", "dlibxml")
BACKBONES = ("inception", "resnet50", "mobilenetv2")

# The primary seed tests on MUCT's first 82 of its 276 subjects; subjects 247
# and 248 are identical twins and must not be split apart.
MUCT_SEED_TEST_SUBJECTS = 82
MUCT_SUBJECTS = 276
MUCT_TWINS = ("247", "248")
MUCT_IMAGE_WIDTH = 480

# Datasets without a usable split of their own are split by a hash of the subject.
DEFAULT_TEST_FRACTION = 0.2

# 300-W folders with a fixed role in the benchmark's split.
TEST_FOLDERS = {"testset", "test", "testing", "ibug", "01_indoor", "02_outdoor"}
TRAIN_FOLDERS = {"trainset", "train", "training", "afw"}

MUCT_ARCHIVES = (
    "muct-a-jpg-v1.tar.gz",
    "muct-b-jpg-v1.tar.gz",
    "muct-c-jpg-v1.tar.gz",
    "muct-d-jpg-v1.tar.gz",
    "muct-e-jpg-v1.tar.gz",
    "muct-landmarks-v1.tar.gz",
)
MUCT_URL = "https://raw.githubusercontent.com/StephenMilborrow/muct/master/"

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".JPG", ".JPEG", ".PNG", ".BMP")
SUMMARY_SKIPS_SHOWN = 10


# --------------------------------------------------------------------------- errors


class AnnotationError(ValueError):
    """A landmark file that does not follow its format; the message names the file."""


class ImageReadError(ValueError):
    """An image that cannot be used; the face is skipped with this reason."""


class SplitError(ValueError):
    """A train/test split that would put one subject on both sides."""


class DownloadError(RuntimeError):
    """A download that failed; the message names the URL."""


class ArchiveError(ValueError):
    """An archive member that would land outside the destination, or a broken archive."""


# --------------------------------------------------------------------------- records


@dataclass
class FaceRecord:
    """One annotated face, as read from a dataset, before cropping.

    Args:
        source: dataset name (``muct``, ``300w`` ...).
        name: image file relative to the dataset's source folder (for
            formats without image files, the CSV and row).
        image_path: absolute image path, or None when ``pixels`` holds the image.
        points: float64 (K, 2) landmark pixel coordinates (0-based, pixel
            centres on integers); unlabelled points hold 0.
        labelled: bool (K,), False where the dataset has no position.
        subject: identity used for the split, prefixed by the dataset.
        split: ``train``/``test`` from the dataset's own folders or lists, or None.
        given_box: a box supplied by the dataset, or None (dlib is asked).
        given_kind: ``detection`` (a detector-style box, enlarged like dlib's)
            or ``crop`` (the image is already the crop).
        pixels: the image itself (Kaggle CSV), uint8 (H, W) or (H, W, 3).
    """

    source: str
    name: str
    image_path: str | None
    points: np.ndarray
    labelled: np.ndarray
    subject: str
    split: str | None = None
    given_box: np.ndarray | None = None
    given_kind: str = "detection"
    pixels: np.ndarray | None = None


@dataclass
class Skip:
    """A face that did not make it into the output, and why."""

    source: str
    file: str
    reason: str

    def as_dict(self) -> dict:
        return {"dataset": self.source, "file": self.file, "reason": self.reason}


@dataclass
class Listing:
    """What a reader found in one dataset folder.

    Args:
        dataset: dataset name.
        source: the folder (or file) read.
        scheme: landmark scheme name.
        records: faces with landmarks and an image to read.
        skips: annotated faces that cannot be used (image missing ...).
        notes: facts the summary should mention.
        split_rule: ``muct`` (first subjects to test) or ``hash``.
    """

    dataset: str
    source: str
    scheme: str
    records: list[FaceRecord] = field(default_factory=list)
    skips: list[Skip] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    split_rule: str = "hash"

    @property
    def listed(self) -> int:
        return len(self.records) + len(self.skips)


# --------------------------------------------------------------------------- images


def _sniff_format(head: bytes) -> str:
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"BM"):
        return "BMP"
    return "unknown"


_SUFFIX_FORMAT = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP"}


def read_image(path: str | os.PathLike) -> tuple[np.ndarray, list[str]]:
    """Read an image file as RGB uint8, by its content rather than its name.

    Returns:
        ``(image, notes)``: the (H, W, 3) image and remarks for the summary
        (for example a PNG stored under a ``.jpg`` name).

    Raises:
        ImageReadError: the file is missing, empty, truncated or not decodable.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageReadError("image file missing") from None
    except OSError as err:
        raise ImageReadError(f"image file unreadable ({err.strerror})") from None
    if not data:
        raise ImageReadError("image file is empty")
    kind = _sniff_format(data[:8])
    # The data may hold 8 or 16 bits, gray, RGB or RGBA: IMREAD_COLOR gives 8-bit BGR for all.
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        if kind == "JPEG" and b"\xff\xd9" not in data[-4096:]:
            raise ImageReadError("truncated JPEG (no end-of-image marker)")
        if kind == "PNG" and b"IEND" not in data[-64:]:
            raise ImageReadError("truncated PNG (no IEND chunk)")
        raise ImageReadError(f"corrupt or unsupported image data ({kind} signature)")
    notes = []
    expected = _SUFFIX_FORMAT.get(path.suffix.lower())
    if expected and kind not in ("unknown", expected):
        notes.append(f"{kind} data under a {path.suffix} name")
    return np.ascontiguousarray(image[..., ::-1]), notes


def _find_image(folder: Path, stem: str) -> Path | None:
    for suffix in IMAGE_SUFFIXES:
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


# --------------------------------------------------------------------------- readers


def _parse_float(text: str) -> float:
    """A coordinate; empty or NaN means unlabelled (returned as NaN)."""
    text = text.strip()
    if not text or text.lower() in ("nan", "na", "none", "null"):
        return math.nan
    return float(text)


def _points_from_values(values: list[float], num_points: int) -> tuple[np.ndarray, np.ndarray]:
    points = np.asarray(values, np.float64).reshape(num_points, 2)
    labelled = np.isfinite(points).all(axis=1)
    points[~labelled] = 0.0
    return points, labelled


def read_pts(path: str | os.PathLike, num_points: int = 68) -> np.ndarray:
    """Landmarks of a 300-W ``.pts`` file: float64 (num_points, 2), as given.

    Accepts the ``version / n_points / { ... }`` layout and headerless files
    of one ``x y`` line per point.

    Raises:
        AnnotationError: naming the file, when the layout or the point count is wrong.
    """
    path = Path(path)
    try:
        text = path.read_text(errors="replace")
    except OSError as err:
        raise AnnotationError(f"{path}: cannot read ({err.strerror})") from None
    if "{" in text:
        head, _, rest = text.partition("{")
        body, closed, _ = rest.partition("}")
        if not closed:
            raise AnnotationError(f"{path}: '{{' without closing '}}'")
        declared = re.search(r"n_points\s*:\s*(\d+)", head)
        if declared and int(declared.group(1)) != num_points:
            raise AnnotationError(
                f"{path}: n_points is {declared.group(1)}, expected {num_points} (ibug68)"
            )
    else:
        body = text
    rows = [line.split() for line in body.splitlines() if line.strip()]
    if len(rows) != num_points:
        raise AnnotationError(f"{path}: {len(rows)} points, expected {num_points} (ibug68)")
    try:
        if any(len(row) != 2 for row in rows):
            raise ValueError("a line does not hold exactly two numbers")
        points = np.array(rows, np.float64)
    except ValueError as err:
        raise AnnotationError(f"{path}: not 'x y' number pairs ({err})") from None
    if not np.isfinite(points).all():
        raise AnnotationError(f"{path}: NaN or infinite coordinates")
    return points


def read_muct(source: str | os.PathLike) -> Listing:
    """MUCT: ``muct-landmarks/muct76-opencv.csv`` and the images in ``jpg/``.

    Rows named ``ir…`` (the official mirrored shapes) are not used: mirrors are
    made from the images.  A point at (0, 0) is unavailable.
    """
    source = Path(source)
    candidates = [source / "muct-landmarks" / "muct76-opencv.csv", source / "muct76-opencv.csv"]
    csv_path = next((p for p in candidates if p.is_file()), None)
    if csv_path is None:
        raise AnnotationError(f"{source}: no MUCT landmark file (looked for {', '.join(map(str, candidates))})")
    image_dir = source / "jpg"
    listing = Listing("muct", str(source), "muct76", split_rule="muct")
    scheme = get_scheme("muct76")
    mirror_rows = 0
    with open(csv_path, newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, [])
        if header[:4] != ["name", "tag", "x00", "y00"] or len(header) != 2 + 2 * scheme.num_points:
            raise AnnotationError(f"{csv_path}: header is not 'name,tag,x00,y00,...,x75,y75'")
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise AnnotationError(f"{csv_path}:{line}: {len(row)} fields, expected {len(header)}")
            name = row[0]
            if name.startswith("ir"):
                mirror_rows += 1
                continue
            if not re.fullmatch(r"i\d{3}\w+-\w+", name):
                raise AnnotationError(f"{csv_path}:{line}: image name {name!r} is not like 'i000qa-fn'")
            try:
                values = [_parse_float(v) for v in row[2:]]
            except ValueError:
                raise AnnotationError(f"{csv_path}:{line}: non-numeric coordinate") from None
            points, labelled = _points_from_values(values, scheme.num_points)
            labelled &= (points != 0).any(axis=1)  # (0, 0) marks an unavailable point
            relative = f"jpg/{name}.jpg"
            image = image_dir / f"{name}.jpg"
            if not image.is_file():
                listing.skips.append(Skip("muct", relative, f"image missing for landmark row {name}"))
                continue
            listing.records.append(
                FaceRecord("muct", relative, str(image), points, labelled, f"muct/{name[1:4]}")
            )
    listing.notes.append(
        f"{mirror_rows} official mirror rows (ir…) not used: mirrors are made from the images"
    )
    return listing


def _folder_role(parts: tuple[str, ...]) -> str | None:
    lowered = {p.lower() for p in parts}
    if lowered & TEST_FOLDERS:
        return "test"
    if lowered & TRAIN_FOLDERS:
        return "train"
    return None


# iBUG's annotation files (300-W ``.pts``, and YouTube68, which follows them) count pixels from 1; the
# toolkit counts from 0 with pixel centres on integers (landmarks.py).  Left as given, every face would
# carry a 1 px offset that mirroring turns into -1 px, and a model trained on both learns neither:
# MobileNetV2 trained on unconverted data sat 1.08 crop px left of YouTube68's points and 0.64 of
# 300-W's -- 1 original pixel at those crops' scales (1.07 and 0.66 crop px per pixel).
IBUG_ORIGIN = 1.0


def read_300w(source: str | os.PathLike) -> Listing:
    """300-W: every ``.pts`` under ``source`` with its image beside it; points moved to 0-based.

    The subject is the image id: the file stem without its ``_<face>``
    suffix.  Folders with a role in the 300-W benchmark (``testset``, ``ibug``,
    ``01_Indoor`` ... for testing; ``trainset``, ``afw`` for training) give the
    split when at least one testing folder is present.
    """
    source = Path(source)
    if not source.is_dir():
        raise AnnotationError(f"{source}: not a folder")
    pts_files = sorted(source.rglob("*.pts"))
    if not pts_files:
        raise AnnotationError(f"{source}: no .pts files found")
    listing = Listing("300w", str(source), "ibug68")
    roles = []
    for pts in pts_files:
        relative = pts.relative_to(source)
        points = read_pts(pts, 68) - IBUG_ORIGIN
        image = _find_image(pts.parent, pts.stem)
        image_name = str(relative.with_suffix(image.suffix if image else ".jpg"))
        if image is None:
            listing.skips.append(Skip("300w", image_name, f"image missing for {relative}"))
            continue
        group = relative.parts[0] if len(relative.parts) > 1 else ""
        image_id = re.sub(r"_\d{1,2}$", "", pts.stem)
        subject = f"300w/{group}/{image_id}" if group else f"300w/{image_id}"
        roles.append(_folder_role(relative.parts[:-1]))
        listing.records.append(
            FaceRecord("300w", image_name, str(image), points, np.ones(68, bool), subject)
        )
    if "test" in roles:
        for record, role in zip(listing.records, roles):
            record.split = role
        listing.notes.append("300-W test folders present: folder roles give the split")
    return listing


def _read_keypoint_csv(csv_path: Path, num_points: int) -> list[tuple[int, str, np.ndarray, np.ndarray]]:
    """Rows ``name, x0, y0, ...`` of a YouTube68-style CSV (first row a header)."""
    rows = []
    with open(csv_path, newline="") as handle:
        reader = csv.reader(handle)
        next(reader, None)
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != 1 + 2 * num_points:
                raise AnnotationError(f"{csv_path}:{line}: {len(row)} fields, expected {1 + 2 * num_points}")
            try:
                values = [_parse_float(v) for v in row[1:]]
            except ValueError:
                raise AnnotationError(f"{csv_path}:{line}: non-numeric coordinate") from None
            points, labelled = _points_from_values(values, num_points)
            rows.append((line, row[0], points, labelled))
    return rows


def read_youtube68(source: str | os.PathLike) -> Listing:
    """YouTube68: ``{training,test}_frames_keypoints.csv`` and the ``training/``, ``test/`` folders.

    Points are moved to 0-based (``IBUG_ORIGIN``).

    The subject is the file name without its trailing ``_NN``.
    """
    source = Path(source)
    listing = Listing("youtube68", str(source), "ibug68")
    found = False
    for split, folder, csv_name in (
        ("train", "training", "training_frames_keypoints.csv"),
        ("test", "test", "test_frames_keypoints.csv"),
    ):
        csv_path = source / csv_name
        if not csv_path.is_file():
            continue
        found = True
        named = set()
        for _, name, points, labelled in _read_keypoint_csv(csv_path, 68):
            points[labelled] -= IBUG_ORIGIN
            relative = f"{folder}/{name}"
            named.add(name)
            image = source / folder / name
            if not image.is_file():
                listing.skips.append(Skip("youtube68", relative, f"image missing for row of {csv_name}"))
                continue
            subject = "youtube68/" + re.sub(r"_\d+$", "", Path(name).stem)
            listing.records.append(
                FaceRecord("youtube68", relative, str(image), points, labelled, subject, split=split)
            )
        if (source / folder).is_dir():
            unlabelled = sum(1 for p in (source / folder).iterdir() if p.name not in named)
            if unlabelled:
                listing.notes.append(f"{unlabelled} images in {folder}/ have no landmark row (not used)")
    if not found:
        raise AnnotationError(
            f"{source}: no training_frames_keypoints.csv or test_frames_keypoints.csv"
        )
    return listing


def read_kaggle(source: str | os.PathLike) -> Listing:
    """Kaggle facial keypoints: a CSV of 30 coordinate columns and an ``Image`` column.

    ``source`` is the CSV or a folder holding ``training.csv``.  Each image is
    already a face crop (96 x 96 gray), so the crop box is the whole image.
    Empty or NaN coordinates are unlabelled points.  Rows carry no identity,
    so the split is by row.
    """
    source = Path(source)
    csv_path = source / "training.csv" if source.is_dir() else source
    if not csv_path.is_file():
        raise AnnotationError(f"{source}: no training.csv")
    columns = [f"{name}_{axis}" for name in KAGGLE15_NAMES for axis in ("x", "y")]
    listing = Listing("kaggle", str(source), "kaggle15")
    with open(csv_path, newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, [])
        missing = [c for c in columns + ["Image"] if c not in header]
        if missing:
            raise AnnotationError(f"{csv_path}: missing column(s) {', '.join(missing)}")
        where = [header.index(c) for c in columns]
        image_at = header.index("Image")
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise AnnotationError(f"{csv_path}:{line}: {len(row)} fields, expected {len(header)}")
            try:
                values = [_parse_float(row[i]) for i in where]
            except ValueError:
                raise AnnotationError(f"{csv_path}:{line}: non-numeric coordinate") from None
            points, labelled = _points_from_values(values, len(KAGGLE15_NAMES))
            name = f"{csv_path.name}:{line}"
            try:
                pixels = np.array(row[image_at].split(), np.int64)
            except ValueError:
                listing.skips.append(Skip("kaggle", name, "corrupt image: non-numeric pixel values"))
                continue
            side = math.isqrt(len(pixels))
            if side < 8 or side * side != len(pixels) or pixels.min() < 0 or pixels.max() > 255:
                listing.skips.append(
                    Skip("kaggle", name, f"corrupt image: {len(pixels)} pixel values, not a square 8-bit image")
                )
                continue
            listing.records.append(
                FaceRecord(
                    "kaggle", name, None, points, labelled, f"kaggle/{csv_path.stem}:{line}",
                    given_box=np.array([0, 0, side, side], np.float32), given_kind="crop",
                    pixels=pixels.astype(np.uint8).reshape(side, side),
                )
            )
    return listing


WFLW_OFFICIAL = {"list_98pt_rect_attr_train.txt": "train", "list_98pt_rect_attr_test.txt": "test"}


def read_wflw(source: str | os.PathLike) -> Listing:
    """WFLW: annotation lines ``x0 y0 … x97 y97 [x_min y_min x_max y_max 6 attributes] image``.

    Uses the official ``list_98pt_rect_attr_{train,test}.txt`` when present
    (their split is kept), otherwise every annotation ``.txt`` under
    ``source`` (duplicate lines counted once).  Images are looked up under
    ``WFLW_images/``, ``images/``, ``source`` and the list's own folder.
    WFLW carries no identity: the subject is the image.
    """
    source = Path(source)
    texts = sorted(p for p in source.rglob("*.txt") if p.name not in ("README.txt", "PROVENANCE.txt"))
    official = [p for p in texts if p.name in WFLW_OFFICIAL]
    lists = official or texts
    if not lists:
        raise AnnotationError(f"{source}: no WFLW annotation .txt files")
    listing = Listing("wflw", str(source), "wflw98")
    seen = set()
    for list_path in lists:
        split = WFLW_OFFICIAL.get(list_path.name)
        for line, text in enumerate(list_path.read_text(errors="replace").splitlines(), start=1):
            fields = text.split()
            if not fields:
                continue
            if len(fields) not in (197, 207):
                raise AnnotationError(
                    f"{list_path}:{line}: {len(fields)} fields, expected 196 coordinates "
                    "(+ 4 box + 6 attributes) + image name"
                )
            key = (fields[-1], tuple(fields[:196]))
            if key in seen:
                continue
            seen.add(key)
            try:
                values = [_parse_float(v) for v in fields[:196]]
            except ValueError:
                raise AnnotationError(f"{list_path}:{line}: non-numeric coordinate") from None
            points, labelled = _points_from_values(values, 98)
            image_name = fields[-1]
            image = None
            for folder in (source / "WFLW_images", source / "images", source, list_path.parent):
                if (folder / image_name).is_file():
                    image = folder / image_name
                    break
            if image is None:
                listing.skips.append(Skip("wflw", image_name, f"image missing for {list_path.name}:{line}"))
                continue
            listing.records.append(
                FaceRecord("wflw", image_name, str(image), points, labelled, f"wflw/{image_name}", split=split)
            )
    if official:
        listing.notes.append("official WFLW train/test lists give the split")
    return listing


def read_dlibxml(source: str | os.PathLike) -> Listing:
    """dlib imglab XML: ``<image file=…><box top left width height><part name x y/>``.

    ``source`` is an XML file or a folder of them (files without any
    ``<part>`` are ignored).  Parts ``00``-``67`` are iBUG 68 points; a missing
    part is unlabelled.  The XML box serves as the face detection.  When the
    folder holds both a ``*train*`` and a ``*test*`` file, their roles give
    the split; otherwise it is by image.
    """
    source = Path(source)
    xml_files = [source] if source.is_file() else sorted(source.glob("*.xml"))
    listing = Listing("dlibxml", str(source), "ibug68")
    parsed = []
    for xml_path in xml_files:
        try:
            root = ElementTree.parse(xml_path).getroot()
        except ElementTree.ParseError as err:
            raise AnnotationError(f"{xml_path}: not well-formed XML ({err})") from None
        if root.find("./images/image/box/part") is None:
            if source.is_file():
                raise AnnotationError(f"{xml_path}: no <part> landmarks in any <box>")
            listing.notes.append(f"{xml_path.name}: no landmark parts, not used")
            continue
        parsed.append((xml_path, root))
    if not parsed:
        raise AnnotationError(f"{source}: no dlib XML with landmark parts")
    roles = {p: ("test" if "test" in p.stem.lower() else "train" if "train" in p.stem.lower() else None) for p, _ in parsed}
    use_roles = {"test", "train"} <= set(roles.values())
    for xml_path, root in parsed:
        for image_el in root.iter("image"):
            file_name = image_el.get("file", "")
            image = (xml_path.parent / file_name).resolve()
            for index, box_el in enumerate(image_el.findall("box")):
                label = f"{file_name} (box {index})"
                if box_el.get("ignore", "0") == "1":
                    listing.skips.append(Skip("dlibxml", label, "box marked ignore='1'"))
                    continue
                try:
                    left, top = float(box_el.get("left")), float(box_el.get("top"))
                    width, height = float(box_el.get("width")), float(box_el.get("height"))
                except (TypeError, ValueError):
                    raise AnnotationError(f"{xml_path}: {label}: box without numeric left/top/width/height") from None
                points = np.zeros((68, 2), np.float64)
                labelled = np.zeros(68, bool)
                for part in box_el.findall("part"):
                    try:
                        index_ = int(part.get("name"))
                        x, y = float(part.get("x")), float(part.get("y"))
                    except (TypeError, ValueError):
                        raise AnnotationError(f"{xml_path}: {label}: part {part.attrib} is not name/x/y numbers") from None
                    if not 0 <= index_ < 68:
                        raise AnnotationError(f"{xml_path}: {label}: part name {index_:02d} outside 00-67 (ibug68)")
                    points[index_], labelled[index_] = (x, y), True
                if not labelled.any():
                    listing.skips.append(Skip("dlibxml", label, "box without landmark parts"))
                    continue
                if not image.is_file():
                    listing.skips.append(Skip("dlibxml", file_name, f"image missing for {xml_path.name}"))
                    continue
                listing.records.append(
                    FaceRecord(
                        "dlibxml", file_name, str(image), points, labelled, f"dlibxml/{file_name}",
                        split=roles[xml_path] if use_roles else None,
                        given_box=np.array([left, top, left + width, top + height], np.float32),
                    )
                )
    if use_roles:
        listing.notes.append("XML files named *train*/*test* give the split")
    return listing


READERS = {
    "muct": read_muct,
    "300w": read_300w,
    "youtube68": read_youtube68,
    "kaggle": read_kaggle,
    "wflw": read_wflw,
    "dlibxml": read_dlibxml,
}


# --------------------------------------------------------------------------- splits


def subject_hash(subject: str, seed: int) -> float:
    """A deterministic number in [0, 1) per subject and seed."""
    digest = hashlib.sha256(f"{seed}:{subject}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def hash_test_subjects(subjects, fraction: float, seed: int) -> set[str]:
    """Subjects whose hash falls below ``fraction``; at least one on each side when there are two."""
    subjects = sorted(set(subjects))
    ranked = sorted(subjects, key=lambda s: subject_hash(s, seed))
    test = {s for s in subjects if subject_hash(s, seed) < fraction}
    if len(subjects) >= 2 and 0 < fraction < 1:
        if not test:
            test = {ranked[0]}
        elif len(test) == len(subjects):
            test.discard(ranked[-1])
    return test


def muct_test_subjects(
    subjects, test_subjects: int | None = None, test_fraction: float | None = None
) -> tuple[set[str], str]:
    """MUCT's split: the first subjects (by number) go to the test set.

    By default the proportion of the primary seed (82 of 276), applied to the
    subjects present; the twins 247 and 248 always end on one side.

    Args:
        subjects: subject ids present (``muct/000`` or ``000``).
        test_subjects: exactly this many first subjects to test.
        test_fraction: this fraction of the subjects present to test.

    Returns:
        ``(test set, description for the summary)``.
    """
    ordered = sorted(set(subjects), key=lambda s: s.rsplit("/", 1)[-1])
    n = len(ordered)
    if test_subjects is not None:
        count, rule = test_subjects, f"--test-subjects {test_subjects}"
    elif test_fraction is not None:
        count, rule = round(test_fraction * n), f"--test-fraction {test_fraction}"
    else:
        count = round(MUCT_SEED_TEST_SUBJECTS / MUCT_SUBJECTS * n)
        rule = f"the seed's first {MUCT_SEED_TEST_SUBJECTS} of {MUCT_SUBJECTS}"
        if n != MUCT_SUBJECTS:
            rule += f", same proportion applied to the {n} subjects present"
    if n >= 2:
        count = min(max(count, 1), n - 1)
    test = set(ordered[:count])
    ids = {s.rsplit("/", 1)[-1]: s for s in ordered}
    twins = [ids[t] for t in MUCT_TWINS if t in ids]
    if len(twins) == 2 and len(test & set(twins)) == 1:
        test |= set(twins)
        rule += "; twins 247/248 kept together"
    return test, f"first {len(test)} of {n} subjects to test ({rule})"


@dataclass
class SplitOptions:
    """How to split; see ``prepare --help``."""

    test_fraction: float | None = None
    test_subjects: int | None = None
    seed: int = 0
    official_split: str = "auto"


def assign_splits(listing: Listing, options: SplitOptions) -> tuple[list[str], str, bool]:
    """``train``/``test`` for each record of a listing.

    Returns:
        ``(sides, description, overlap_allowed)``; ``overlap_allowed`` is True
        only when ``--official-split keep`` kept a split that shares subjects.
    """
    records = listing.records
    subjects = [r.subject for r in records]
    if not records:
        return [], "nothing to split", False
    fraction = DEFAULT_TEST_FRACTION if options.test_fraction is None else options.test_fraction
    if listing.split_rule == "muct":
        if options.test_subjects is not None and options.test_fraction is not None:
            raise SplitError("give --test-subjects or --test-fraction, not both")
        test, text = muct_test_subjects(subjects, options.test_subjects, options.test_fraction)
        return ["test" if s in test else "train" for s in subjects], f"by subject: {text}", False

    def by_hash():
        test = hash_test_subjects(subjects, fraction, options.seed)
        unit = "image" if listing.dataset in ("wflw", "dlibxml", "300w") else "row" if listing.dataset == "kaggle" else "subject"
        text = (
            f"by {unit} (hash, seed {options.seed}): {len(test)} of {len(set(subjects))} "
            f"{unit}s to test (fraction {fraction})"
        )
        return ["test" if s in test else "train" for s in subjects], text

    has_official = any(r.split for r in records)
    if not has_official or options.official_split == "ignore":
        sides, text = by_hash()
        if has_official:
            text += "; the dataset's own split ignored (--official-split ignore)"
        return sides, text, False

    official_side = {}
    for r in records:
        if r.split:
            official_side.setdefault(r.subject, set()).add(r.split)
    rest = [r.subject for r in records if not r.split and r.subject not in official_side]
    test_rest = hash_test_subjects(rest, fraction, options.seed) if rest else set()
    sides = []
    for r in records:
        if r.split:
            sides.append(r.split)
        elif r.subject in official_side:
            sides.append(sorted(official_side[r.subject])[-1])  # 'train' when on both
        else:
            sides.append("test" if r.subject in test_rest else "train")
    shared = _shared_subjects(subjects, sides)
    text = "the dataset's own train/test split"
    if rest:
        text += f" ({len(set(rest))} subjects outside it split by hash)"
    if not shared:
        return sides, text, False
    n_subjects = len(set(subjects))
    if options.official_split == "keep":
        return sides, (
            f"{text}, kept by --official-split keep although {len(shared)} of {n_subjects} "
            "subjects are on both sides"
        ), True
    sides, hashed = by_hash()
    return sides, (
        f"{hashed} -- the dataset's own split puts {len(shared)} of {n_subjects} subjects on both "
        "sides, so it is not used (--official-split keep keeps it)"
    ), False


def _shared_subjects(subjects, sides) -> set[str]:
    train = {s for s, side in zip(subjects, sides) if side == "train"}
    return {s for s, side in zip(subjects, sides) if side == "test"} & train


def check_subject_split(train_subjects, test_subjects, allowed=frozenset()) -> None:
    """Raise SplitError if a subject (outside ``allowed``) is on both sides."""
    shared = (set(train_subjects) & set(test_subjects)) - set(allowed)
    if shared:
        examples = ", ".join(sorted(shared)[:5])
        raise SplitError(f"{len(shared)} subject(s) on both sides of the split, e.g. {examples}")


# --------------------------------------------------------------------------- cropping (workers)


@dataclass(frozen=True)
class CropSettings:
    """Per-face processing settings, shared by every worker."""

    size: int
    gray: bool = False
    fallback: bool = True
    upsample: int = 0


@dataclass
class CroppedFace:
    """One face ready for the output arrays (before mirroring)."""

    image: np.ndarray  # uint8 (S, S, C)
    landmarks: np.ndarray  # float32 (K, 2), normalised crop coordinates
    visible: np.ndarray  # bool (K,)
    labelled: np.ndarray  # bool (K,)
    box: np.ndarray  # float32 (4,)
    detection: str  # 'dlib', 'landmarks' or 'given'
    notes: list[str]


_WORKER: dict = {}


def _init_worker(settings: CropSettings, pooled: bool = True) -> None:
    if pooled:
        cv2.setNumThreads(1)  # the pool already uses every core
    _WORKER["settings"] = settings
    _WORKER["detector"] = faces.FaceDetector(upsample=settings.upsample)


@dataclass
class FaceSkipped:
    """Why a face was not written; ``image_read`` tells whether its image was usable."""

    reason: str
    image_read: bool


def crop_record(record: FaceRecord, settings: CropSettings, detector: faces.FaceDetector) -> CroppedFace | FaceSkipped:
    """Detect, crop and move the landmarks of one face, or say why it is skipped."""
    try:
        if record.pixels is not None:
            image, notes = record.pixels, []
        else:
            image, notes = read_image(record.image_path)
    except ImageReadError as err:
        return FaceSkipped(str(err), image_read=False)
    if image.ndim == 2 and not settings.gray:
        image = np.repeat(image[..., None], 3, axis=2)
    labelled = record.labelled
    if labelled.sum() < 2:
        return FaceSkipped(f"only {int(labelled.sum())} labelled landmark(s)", image_read=True)
    if record.given_box is not None:
        detection = "given"
        box = record.given_box if record.given_kind == "crop" else faces.crop_box_from_detection(record.given_box)
    else:
        found = detector.find_face(image, record.points, labelled)
        if found is not None:
            detection, box = "dlib", faces.crop_box_from_detection(found)
        elif settings.fallback:
            detection, box = "landmarks", faces.crop_box_from_landmarks(record.points, labelled)
        else:
            return FaceSkipped("dlib found no face matching the landmarks (--no-fallback)", image_read=True)
    crop = faces.crop_face(image, box, settings.size)
    if settings.gray and crop.shape[2] == 3:
        crop = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)[..., None]
    uv = faces.points_to_crop(record.points, box)
    uv[~labelled] = 0.0
    inside = ((uv >= 0.0) & (uv <= 1.0)).all(axis=1)
    return CroppedFace(crop, uv, labelled & inside, labelled.copy(), np.asarray(box, np.float32), detection, notes)


def _crop_task(item: tuple[int, FaceRecord]):
    index, record = item
    return index, crop_record(record, _WORKER["settings"], _WORKER["detector"])


# --------------------------------------------------------------------------- output buffers


class SplitBuffer:
    """Preallocated arrays of one output file, filled face by face.

    ``np.empty`` only reserves address space: rows never written (skipped
    faces) cost no memory.
    """

    def __init__(self, capacity: int, size: int, channels: int, num_points: int):
        self.images = np.empty((capacity, size, size, channels), np.uint8)
        self.landmarks = np.empty((capacity, num_points, 2), np.float32)
        self.visible = np.empty((capacity, num_points), bool)
        self.box = np.empty((capacity, 4), np.float32)
        self.mirrored = np.zeros(capacity, bool)
        self.vflipped = np.zeros(capacity, bool)
        self.strings = {"subject": [], "name": [], "source": [], "detection": [], "path": []}
        self.count = 0

    def add(self, face: CroppedFace, record: FaceRecord, image, landmarks, visible, mirrored=False, vflipped=False):
        i = self.count
        self.images[i] = image
        self.landmarks[i] = landmarks
        self.visible[i] = visible
        self.box[i] = face.box
        self.mirrored[i] = mirrored
        self.vflipped[i] = vflipped
        strings = (("subject", record.subject), ("name", record.name), ("source", record.source),
                   ("detection", face.detection), ("path", record.image_path or ""))
        for key, value in strings:
            self.strings[key].append(value)
        self.count += 1

    def arrays(self, scheme: str) -> dict[str, np.ndarray]:
        n = self.count
        out = {
            "images": self.images[:n],
            "landmarks": self.landmarks[:n],
            "visible": self.visible[:n],
            "box": self.box[:n],
            "mirrored": self.mirrored[:n],
            "vflipped": self.vflipped[:n],
            "scheme": np.array(scheme),
        }
        for key, values in self.strings.items():
            out[key] = np.array(values, dtype=str) if values else np.zeros(0, "<U1")
        return out


def _add_with_copies(buffer: SplitBuffer, face: CroppedFace, record: FaceRecord, scheme, mirror: bool, vflip: bool):
    buffer.add(face, record, face.image, face.landmarks, face.visible)
    if mirror:
        uv, visible = mirror_landmarks(face.landmarks, face.visible, scheme)
        _, labelled = mirror_landmarks(face.landmarks, face.labelled, scheme)
        uv[~labelled] = 0.0
        buffer.add(face, record, face.image[:, ::-1], uv, visible, mirrored=True)
    if vflip:
        # The seed's vertical flip: y' = 1 - y, identities unchanged.
        uv = face.landmarks.copy()
        uv[:, 1] = np.where(face.labelled, 1.0 - uv[:, 1], 0.0)
        buffer.add(face, record, face.image[::-1], uv, face.visible, vflipped=True)


# --------------------------------------------------------------------------- prepare


@dataclass
class PrepareOptions:
    """Everything ``prepare`` needs besides the datasets; see ``prepare --help``."""

    size: int
    out: str
    gray: bool = False
    mirror: bool = True
    vflip: bool = False
    fallback: bool = True
    workers: int = 0
    upsample: int = 0
    compress: bool = False
    progress: bool = True
    shard_size: int = 0
    split: SplitOptions = field(default_factory=SplitOptions)

    def __post_init__(self):
        if not 8 <= self.size <= 4096:
            raise ValueError(f"size must be between 8 and 4096 pixels, got {self.size}")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0 (0: one per CPU), got {self.workers}")
        if self.upsample < 0:
            raise ValueError(f"upsample must be >= 0, got {self.upsample}")
        if self.shard_size < 0:
            raise ValueError(f"shard size must be >= 0 (0: one file per side), got {self.shard_size}")
        frac = self.split.test_fraction
        if frac is not None and not 0.0 <= frac <= 1.0:
            raise ValueError(f"test fraction must be in [0, 1], got {frac}")
        if self.split.test_subjects is not None and self.split.test_subjects < 0:
            raise ValueError(f"test subjects must be >= 0, got {self.split.test_subjects}")
        if self.split.official_split not in ("auto", "keep", "ignore"):
            raise ValueError(f"official split must be auto, keep or ignore, got {self.split.official_split!r}")


class ShardedBuffer:
    """Faces of one side written ``shard_size`` rows at a time to numbered npz files.

    Memory stays at one shard whatever the dataset's size; ``finish`` writes
    the manifest (``PREFIX_train.shards.json``) that ``train.py --data`` reads.
    """

    def __init__(self, prefix: Path, shard_size: int, copies: int, size: int, channels: int, num_points: int,
                 scheme: str, compress: bool):
        self.prefix, self.shard_size, self.scheme, self.compress = prefix, shard_size, scheme, compress
        self.shape = (size, size, channels)
        self.buffer = SplitBuffer(shard_size + copies, size, channels, num_points)
        self._fresh = lambda: SplitBuffer(shard_size + copies, size, channels, num_points)
        self.shards, self.subjects = [], set()
        self.count = 0

    def add(self, face, record, scheme, mirror: bool, vflip: bool) -> None:
        before = self.buffer.count
        _add_with_copies(self.buffer, face, record, scheme, mirror, vflip)
        self.count += self.buffer.count - before
        self.subjects.add(record.subject)
        if self.buffer.count >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        if self.buffer.count == 0:
            return
        path = dataset_io.shard_path(self.prefix, len(self.shards))
        arrays = self.buffer.arrays(self.scheme)
        dataset_io.validate(arrays, path)
        dataset_io.save_npz(path, arrays, compress=self.compress)
        self.shards.append({"file": str(path), "faces": int(self.buffer.count)})
        self.buffer = self._fresh()

    def finish(self) -> Path:
        self.flush()
        return dataset_io.write_manifest(f"{self.prefix}{dataset_io.MANIFEST_SUFFIX}", self.shards, self.scheme, self.shape)


def output_paths(prefix: str | os.PathLike) -> dict[str, Path]:
    prefix = str(prefix)
    return {
        "train": Path(f"{prefix}_train.npz"),
        "test": Path(f"{prefix}_test.npz"),
        "report_json": Path(f"{prefix}_report.json"),
        "report_txt": Path(f"{prefix}_report.txt"),
    }


def worker_context():
    """Processes started from a clean server, never forked from this one.

    Forking a process whose OpenCV, TensorFlow or JAX thread pools are running
    (a test session, a notebook, train.py preparing data) can leave a lock
    held forever in the child; the forkserver forks from a fresh process
    that has only imported this module.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["datagen"])
    return context


def _iterate_crops(records, settings: CropSettings, workers: int):
    """Yield ``(index, CroppedFace | FaceSkipped)`` in record order, streaming from a process pool."""
    items = list(enumerate(records))
    if workers <= 1 or len(records) < 4:
        _init_worker(settings, pooled=False)
        yield from map(_crop_task, items)
        return
    chunk = max(1, min(16, len(items) // (workers * 8)))
    with worker_context().Pool(workers, initializer=_init_worker, initargs=(settings,)) as pool:
        yield from pool.imap(_crop_task, items, chunksize=chunk)


def _write_text_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def prepare(datasets: list[tuple[str, str]], options: PrepareOptions) -> dict:
    """Read, crop, split and write one or more datasets of one scheme.

    Args:
        datasets: ``(dataset name, source folder)`` pairs, combined into one output.
        options: sizes, flags and split rules.

    Returns:
        The report (also written to ``PREFIX_report.json``; its text form to
        ``PREFIX_report.txt`` and stdout).
    """
    started = time.time()
    if not datasets:
        raise ValueError("no dataset given")
    for name, _ in datasets:
        if name not in READERS:
            raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    listings = [READERS[name](source) for name, source in datasets]
    schemes = {listing.scheme for listing in listings}
    if len(schemes) != 1:
        described = ", ".join(f"{l.dataset} is {l.scheme}" for l in listings)
        raise ValueError(f"cannot combine datasets of different landmark schemes ({described}); prepare them separately")
    scheme_name = schemes.pop()
    scheme = get_scheme(scheme_name)

    records, sides, dataset_reports, allowed_overlap = [], [], [], set()
    for listing in listings:
        listing_sides, split_text, overlap_ok = assign_splits(listing, options.split)
        if overlap_ok:
            allowed_overlap |= _shared_subjects([r.subject for r in listing.records], listing_sides)
        records += listing.records
        sides += listing_sides
        dataset_reports.append({
            "dataset": listing.dataset, "source": listing.source, "scheme": listing.scheme,
            "listed": listing.listed, "split": split_text, "notes": list(listing.notes),
        })
    if not records:
        skipped = sum(len(l.skips) for l in listings)
        raise ValueError(f"no usable faces in {', '.join(s for _, s in datasets)} ({skipped} annotated faces without an image)")
    check_subject_split(
        [r.subject for r, s in zip(records, sides) if s == "train"],
        [r.subject for r, s in zip(records, sides) if s == "test"],
        allowed_overlap,
    )

    copies = 1 + options.mirror + options.vflip
    channels = 1 if options.gray else 3
    n_train = sides.count("train")
    if options.shard_size:
        # shards hold random samples of the faces, not one dataset or subject after another
        order = np.random.default_rng(options.split.seed).permutation(len(records))
        records, sides = [records[i] for i in order], [sides[i] for i in order]
        buffers = {
            side: ShardedBuffer(Path(f"{options.out}_{side}"), options.shard_size, copies, options.size, channels,
                                scheme.num_points, scheme_name, options.compress)
            for side in ("train", "test")
        }
    else:
        buffers = {
            "train": SplitBuffer(n_train * copies, options.size, channels, scheme.num_points),
            "test": SplitBuffer(len(records) - n_train, options.size, channels, scheme.num_points),
        }
    skips = [skip for listing in listings for skip in listing.skips]
    counts = Counter()
    notes = Counter()
    note_example = {}
    settings = CropSettings(options.size, options.gray, options.fallback, options.upsample)
    workers = options.workers or os.cpu_count() or 1
    from tqdm import tqdm

    progress = tqdm(total=len(records), desc="prepare", unit="face", disable=not options.progress, file=sys.stderr)
    for index, outcome in _iterate_crops(records, settings, workers):
        record = records[index]
        progress.update(1)
        if isinstance(outcome, FaceSkipped):
            skips.append(Skip(record.source, record.name, outcome.reason))
            counts["read"] += outcome.image_read
            continue
        counts["read"] += 1
        counts[outcome.detection] += 1
        for note in outcome.notes:
            notes[note] += 1
            note_example.setdefault(note, record.name)
        side = sides[index]
        mirror, vflip = side == "train" and options.mirror, side == "train" and options.vflip
        if options.shard_size:
            buffers[side].add(outcome, record, scheme, mirror, vflip)
        else:
            _add_with_copies(buffers[side], outcome, record, scheme, mirror, vflip)
    progress.close()

    written = counts["dlib"] + counts["landmarks"] + counts["given"]
    if written == 0:
        raise ValueError(f"every face was skipped ({len(skips)}); first: {skips[0].file}: {skips[0].reason}")
    paths = output_paths(options.out)
    outputs = {}
    for side in ("train", "test") if options.shard_size else ():
        manifest = buffers[side].finish()
        outputs[side] = {"path": str(manifest), "faces": buffers[side].count, "shards": len(buffers[side].shards),
                         "subjects": len(buffers[side].subjects)}
    for side in () if options.shard_size else ("train", "test"):
        arrays = buffers[side].arrays(scheme_name)
        dataset_io.validate(arrays, paths[side])
        dataset_io.save_npz(paths[side], arrays, compress=options.compress)
        outputs[side] = {
            "path": str(paths[side]),
            "faces": int(buffers[side].count),
            "originals": int(buffers[side].count - arrays["mirrored"].sum() - arrays["vflipped"].sum()),
            "mirrored": int(arrays["mirrored"].sum()),
            "vflipped": int(arrays["vflipped"].sum()),
            "subjects": len(set(buffers[side].strings["subject"])),
        }
        del arrays
    listed = sum(l.listed for l in listings)
    report = {
        "scheme": scheme_name,
        "size": options.size,
        "channels": channels,
        "datasets": dataset_reports,
        "counts": {
            "listed": listed,
            "read": counts["read"],
            "detected": counts["dlib"],
            "fallback": counts["landmarks"],
            "given": counts["given"],
            "written": written,
            "skipped": len(skips),
        },
        "notes": [f"{n} faces: {note} (e.g. {note_example[note]})" for note, n in notes.items()],
        "outputs": outputs,
        "subjects_on_both_sides": sorted(allowed_overlap),
        "seconds": round(time.time() - started, 1),
        "skips": [s.as_dict() for s in skips],
    }
    summary = format_summary(report, paths)
    _write_text_atomically(paths["report_json"], json.dumps(report, indent=1) + "\n")
    full = summary + "\n\nAll skipped faces:\n" + "".join(f"  {s.source}: {s.file}: {s.reason}\n" for s in skips)
    _write_text_atomically(paths["report_txt"], full)
    print(summary)
    return report


def format_summary(report: dict, paths: dict[str, Path]) -> str:
    """The end-of-run summary: per dataset, counts, outputs, skips."""
    c = report["counts"]
    lines = [f"Prepared {report['scheme']} faces at {report['size']} px ({report['channels']} channel(s)):"]
    for d in report["datasets"]:
        lines.append(f"  {d['dataset']} ({d['source']}): {d['listed']} annotated faces; split {d['split']}")
        lines += [f"    note: {n}" for n in d["notes"]]
    lines += [f"  note: {n}" for n in report["notes"]]
    lines.append(
        f"  read {c['read']} / detected by dlib {c['detected']} / fallback box from landmarks {c['fallback']}"
        f" / given box {c['given']} / skipped {c['skipped']} (of {c['listed']} annotated faces)"
    )
    for side, out in report["outputs"].items():
        if "shards" in out:
            lines.append(f"  {side}: {out['faces']} faces in {out['shards']} shards, {out['subjects']} subjects -> {out['path']}")
            continue
        lines.append(
            f"  {side}: {out['faces']} faces ({out['originals']} + {out['mirrored']} mirrored"
            f" + {out['vflipped']} vertically flipped), {out['subjects']} subjects -> {out['path']}"
        )
    if report["subjects_on_both_sides"]:
        lines.append(f"  WARNING: {len(report['subjects_on_both_sides'])} subjects on both sides (--official-split keep)")
    skips = report["skips"]
    if skips:
        reasons = Counter(re.sub(r" for .*| \(.*", "", s["reason"]) for s in skips)
        lines.append("  skipped by reason: " + "; ".join(f"{r}: {n}" for r, n in reasons.most_common()))
        for s in skips[:SUMMARY_SKIPS_SHOWN]:
            lines.append(f"    {s['dataset']}: {s['file']}: {s['reason']}")
        if len(skips) > SUMMARY_SKIPS_SHOWN:
            lines.append(f"    ... {len(skips) - SUMMARY_SKIPS_SHOWN} more in {paths['report_txt']}")
    lines.append(f"  report: {paths['report_json']}, {paths['report_txt']} ({report['seconds']} s)")
    return "\n".join(lines)


# --------------------------------------------------------------------------- download


def download_file(url: str, target: Path, progress: bool = True, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``target``, resuming ``target.part`` with an HTTP Range request.

    Raises:
        DownloadError: naming the URL, on HTTP or network errors or a short body.
    """
    if target.is_file():
        return target
    part = target.with_name(target.name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        total = _range_total(err.headers.get("Content-Range"))
        if err.code == 416 and have and total == have:
            os.replace(part, target)  # the partial file was already complete
            return target
        raise DownloadError(f"{url}: HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError) as err:
        raise DownloadError(f"{url}: {getattr(err, 'reason', err)}") from None
    from tqdm import tqdm

    with response:
        if have and response.status == 206:
            start = _range_start(response.headers.get("Content-Range"))
            if start != have:
                raise DownloadError(f"{url}: server resumed at byte {start}, expected {have}")
            total, mode = _range_total(response.headers.get("Content-Range")), "ab"
        else:
            have, mode = 0, "wb"
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        bar = tqdm(total=total, initial=have, unit="B", unit_scale=True, desc=target.name, disable=not progress, file=sys.stderr)
        try:
            with open(part, mode) as handle:
                while chunk := response.read(1 << 16):
                    handle.write(chunk)
                    bar.update(len(chunk))
        except OSError as err:
            raise DownloadError(f"{url}: interrupted ({err}); run again to resume") from None
        finally:
            bar.close()
    size = part.stat().st_size
    if total is not None and size != total:
        raise DownloadError(f"{url}: got {size} of {total} bytes; run again to resume")
    os.replace(part, target)
    return target


def _range_start(header: str | None) -> int | None:
    match = re.match(r"bytes (\d+)-\d+/", header or "")
    return int(match.group(1)) if match else None


def _range_total(header: str | None) -> int | None:
    match = re.search(r"/(\d+)$", header or "")
    return int(match.group(1)) if match else None


def check_archive_member(archive: Path, member: tarfile.TarInfo, dest: Path) -> None:
    """Raise ArchiveError unless ``member`` lands (and points) inside ``dest``."""

    def fail(problem: str):
        raise ArchiveError(f"{archive}: member {member.name!r} {problem}; nothing extracted from this archive")

    dest = dest.resolve()
    name = PurePosixPath(member.name)
    if name.is_absolute() or re.match(r"^[A-Za-z]:", member.name):
        fail("has an absolute path")
    if ".." in name.parts:
        fail("has '..' in its path")
    target = (dest / name).resolve()
    if target != dest and dest not in target.parents:
        fail(f"would land outside {dest}")
    if member.issym() or member.islnk():
        link = PurePosixPath(member.linkname)
        if link.is_absolute():
            fail(f"links to the absolute path {member.linkname!r}")
        base = dest / name.parent if member.issym() else dest
        resolved = Path(os.path.normpath(base / link))
        if resolved != dest and dest not in resolved.parents:
            fail(f"links outside {dest} ({member.linkname!r})")
    elif not (member.isfile() or member.isdir()):
        fail("is a device, FIFO or other special file")


def safe_extract(archive: Path, dest: Path) -> int:
    """Extract a tar archive into ``dest`` after checking every member; returns the member count."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            for member in members:
                check_archive_member(archive, member, dest)
            extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(dest, members=members, **extra)
    except (tarfile.TarError, EOFError) as err:
        raise ArchiveError(f"{archive}: not a readable tar archive ({err})") from None
    return len(members)


def download_muct(dest: str | os.PathLike, base_url: str = MUCT_URL, progress: bool = True, keep_archives: bool = True) -> Path:
    """Fetch and extract the six official MUCT tarballs into ``dest``."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    base = base_url if base_url.endswith("/") else base_url + "/"
    for archive_name in MUCT_ARCHIVES:
        archive = download_file(base + archive_name, dest / archive_name, progress)
        count = safe_extract(archive, dest)
        print(f"{archive_name}: {count} members extracted into {dest}")
        if not keep_archives:
            archive.unlink()
    return dest


# --------------------------------------------------------------------------- bottleneck


def bottleneck(data: str | os.PathLike, out: str | os.PathLike, backbone: str, weights: str = "imagenet", batch_size: int = 32) -> dict:
    """Write the features of a frozen backbone for every face of ``data``.

    The output keeps every key of the input except ``images`` and adds
    ``features`` float32 (N, F) and ``backbone``.
    """
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; known: {', '.join(BACKBONES)}")
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    arrays = dataset_io.load_npz(data)
    if "images" not in arrays:
        raise dataset_io.DatasetError(f"{data}: has no images (already a bottleneck file?)")
    try:
        import backbones
    except ModuleNotFoundError as err:
        if err.name != "backbones":
            raise
        raise ValueError("bottleneck needs backbones.py beside datagen.py") from None

    features = np.asarray(backbones.extract_features(arrays["images"], backbone, weights, batch_size=batch_size), np.float32)
    n = len(arrays["images"])
    if features.ndim != 2 or len(features) != n:
        raise ValueError(f"backbone {backbone} returned features of shape {features.shape} for {n} images")
    out_arrays = {k: v for k, v in arrays.items() if k != "images"}
    out_arrays["features"] = features
    out_arrays["backbone"] = np.array(backbone)
    dataset_io.validate(out_arrays, out)
    dataset_io.save_npz(out, out_arrays)
    print(f"{out}: {n} faces, {features.shape[1]} {backbone} features each ({weights} weights)")
    return out_arrays


# --------------------------------------------------------------------------- info


def describe(path: str | os.PathLike) -> str:
    """A human summary of a dataset (or bottleneck) file."""
    arrays = dataset_io.load_npz(path)
    scheme = dataset_io.scheme_of(arrays)
    n = len(arrays["landmarks"])
    lines = [f"{path}: {n} faces, scheme {scheme.name} ({scheme.num_points} points)"]
    if "images" in arrays:
        _, s, _, c = arrays["images"].shape
        lines.append(f"  images: {s} x {s} px, {c} channel(s)")
    if "features" in arrays:
        lines.append(f"  features: {arrays['features'].shape[1]} per face from {arrays.get('backbone', '?')}")
    if "source" in arrays and n:
        lines.append("  sources: " + ", ".join(f"{k} {v}" for k, v in Counter(arrays["source"].tolist()).most_common()))
    subjects = Counter(arrays["subject"].tolist())
    if subjects:
        per = np.array(sorted(subjects.values()))
        lines.append(
            f"  subjects: {len(subjects)}; faces per subject min {per.min()}, median {np.median(per):g}, "
            f"max {per.max()}; most: " + ", ".join(f"{k} ({v})" for k, v in subjects.most_common(3))
        )
    visible = arrays["visible"]
    if n:
        per_point = visible.mean(axis=0)
        worst = np.argsort(per_point)[:3]
        lines.append(
            f"  visible: {visible.mean():.1%} of points; {int((~visible).any(axis=1).sum())} faces with hidden "
            "points; least visible points: " + ", ".join(f"{i} ({per_point[i]:.0%})" for i in worst)
        )
    for key in ("detection",):
        if key in arrays and n:
            lines.append("  detection: " + ", ".join(f"{k} {v}" for k, v in Counter(arrays[key].tolist()).most_common()))
    for key in ("mirrored", "vflipped"):
        if key in arrays:
            lines.append(f"  {key}: {int(arrays[key].sum())}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- CLI


def _build_parsers() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(
        prog="datagen.py",
        description="Landmarked face datasets into one npz format: download, prepare, bottleneck, info.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    down = sub.add_parser("download", help="fetch and extract the official MUCT release")
    down.add_argument("dataset", choices=["muct"], help="dataset to download (muct)")
    down.add_argument("--dest", required=True, help="folder to download and extract into")
    down.add_argument("--url", default=MUCT_URL, help=f"base URL of the tarballs (default {MUCT_URL})")
    down.add_argument("--delete-archives", action="store_true", help="remove each tarball once extracted")
    down.add_argument("--quiet", action="store_true", help="no progress bars")

    prep = sub.add_parser(
        "prepare",
        help="datasets -> PREFIX_train.npz, PREFIX_test.npz",
        description=(
            "Crop faces with dlib, move the landmarks, split by subject, mirror the training faces. "
            "Several 'DATASET --source DIR' pairs of one landmark scheme combine into one output, "
            "e.g. 'prepare 300w --source data/300w youtube68 --source data/youtube68 --size 128 --out dataset/ibug128'."
        ),
    )
    prep.add_argument("datasets", nargs="+", choices=DATASETS, metavar="DATASET", help=f"one of {', '.join(DATASETS)}")
    prep.add_argument("--source", action="append", required=True, help="dataset folder (one per DATASET, in order)")
    prep.add_argument("--size", type=int, required=True, help="side of the square crops in pixels")
    prep.add_argument("--out", required=True, help="output prefix: writes PREFIX_train.npz, PREFIX_test.npz, PREFIX_report.json/.txt")
    prep.add_argument("--gray", action="store_true", help="1-channel (grayscale) images")
    prep.add_argument("--no-mirror", dest="mirror", action="store_false", help="do not add mirrored training faces")
    prep.add_argument("--vflip", action="store_true", help="also add vertically flipped training faces (y' = 1 - y, the seed's augmentation)")
    prep.add_argument("--no-fallback", dest="fallback", action="store_false", help="skip faces dlib does not find instead of boxing them from the landmarks")
    prep.add_argument("--test-fraction", type=float, help=f"fraction of subjects to test (hash split default {DEFAULT_TEST_FRACTION}; MUCT default 82/276)")
    prep.add_argument("--test-subjects", type=int, help="MUCT: the first N subjects to test")
    prep.add_argument("--seed", type=int, default=0, help="seed of the hash-based subject split (default 0)")
    prep.add_argument(
        "--official-split", choices=("auto", "keep", "ignore"), default="auto",
        help="a dataset's own train/test folders or lists: auto keeps them unless they share subjects "
        "(YouTube68's do), keep always, ignore never (default auto)",
    )
    prep.add_argument("--workers", type=int, default=0, help="processes (default: one per CPU)")
    prep.add_argument("--shard-size", type=int, default=0,
                      help="write numbered shards of N faces and a PREFIX_{train,test}.shards.json manifest "
                           "(for sets larger than memory; train.py streams them)")
    prep.add_argument("--upsample", type=int, default=0, help="dlib upsampling before detection (one more is tried on a miss)")
    prep.add_argument("--compress", action="store_true", help="write compressed npz files")
    prep.add_argument("--quiet", action="store_true", help="no progress bar")

    bott = sub.add_parser("bottleneck", help="frozen-backbone features for head-only training")
    bott.add_argument("--backbone", required=True, choices=BACKBONES)
    bott.add_argument("--data", required=True, help="input dataset npz (from prepare)")
    bott.add_argument("--out", required=True, help="output npz (features instead of images)")
    bott.add_argument("--weights", default="imagenet", help="imagenet, none or a weights file (default imagenet)")
    bott.add_argument("--batch-size", type=int, default=32)

    info = sub.add_parser("info", help="summary of dataset files")
    info.add_argument("files", nargs="+", help="npz files")
    return parser, {"download": down, "prepare": prep, "bottleneck": bott, "info": info}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, commands = _build_parsers()
    if not argv or argv[0] not in commands:
        parser.parse_args(argv)  # --help, or an error naming the valid commands
        parser.print_help()
        return 2
    command, sub = argv[0], commands[argv[0]]
    # parse_intermixed_args pairs repeated DATASET and --source by order.
    args = sub.parse_intermixed_args(argv[1:])
    try:
        if command == "prepare":
            if len(args.source) != len(args.datasets):
                sub.error(f"{len(args.datasets)} dataset(s) but {len(args.source)} --source: give one --source per dataset")
            options = PrepareOptions(
                size=args.size, out=args.out, gray=args.gray, mirror=args.mirror, vflip=args.vflip,
                fallback=args.fallback, workers=args.workers, upsample=args.upsample, compress=args.compress,
                shard_size=args.shard_size, progress=not args.quiet,
                split=SplitOptions(args.test_fraction, args.test_subjects, args.seed, args.official_split),
            )
            prepare(list(zip(args.datasets, args.source)), options)
        elif command == "download":
            download_muct(args.dest, args.url, progress=not args.quiet, keep_archives=not args.delete_archives)
        elif command == "bottleneck":
            bottleneck(args.data, args.out, args.backbone, args.weights, args.batch_size)
        else:
            for path in args.files:
                print(describe(path))
    except (AnnotationError, SplitError, DownloadError, ArchiveError, dataset_io.DatasetError, ValueError) as err:
        print(f"datagen.py {command}: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
