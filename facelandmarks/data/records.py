"""Dataset records: one annotated face before cropping, the readers' shared types, errors and helpers."""

from __future__ import annotations

import csv
import math
import os
import struct
import sys
import tempfile
import threading
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from facelandmarks.landmarks import Scheme, get_scheme

CSV_LAYOUTS = ("xy", "xxyy")
# the pixel a CSV's coordinates count from: 0 is the toolkit's own; 1-based files (iBUG's .pts, MATLAB) lose 1 on reading
CSV_ORIGINS = (0, 1)
CSV_ORIGIN_CHOICES = ("0 (coordinates count pixels from 0, the default) or 1 (they count from 1, as iBUG's .pts "
                      "and MATLAB do: 1 is subtracted from each)")


_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
IMAGE_SUFFIXES = _SUFFIXES + tuple(s.upper() for s in _SUFFIXES)  # what an annotation's image may be called


class AnnotationError(ValueError):
    """A landmark file that does not follow its format; the message names the file."""


class ImageReadError(ValueError):
    """An image that cannot be used; the face is skipped with this reason."""


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
class ReaderOptions:
    """What the readers of markups of any kind (``coco``, ``csv``, ``dlibxml``) take besides the source.

    Args:
        scheme: the markup (``scheme_files.resolve_scheme``), or None: the reader's default.
        images: folder the image names are relative to (default: the annotation file's folder).
        use_bbox: ``coco``: the annotation's ``bbox`` serves as the face detection (no dlib).
        csv_image_column: ``csv``: 0-based column of the image name.
        csv_first_coordinate: ``csv``: 0-based column of the first coordinate; the coordinates run
            to the end of the row (2K numbers).
        csv_layout: ``csv``: ``xy`` (x0, y0, x1, y1 ...) or ``xxyy`` (x0 ... xK-1, y0 ... yK-1).
        csv_header: ``csv``: the first row is a header.
        csv_subject_column: ``csv``: 0-based column naming each face's person, or None: each image is
            its own subject.
        csv_origin: ``csv``: the pixel the coordinates count from: 0 (the toolkit's own convention, pixel
            centres on integers) or 1 (iBUG's ``.pts``, MATLAB: 1 is subtracted on reading).
    """

    scheme: Scheme | None = None
    images: str | None = None
    use_bbox: bool = False
    csv_image_column: int = 0
    csv_first_coordinate: int = 1
    csv_layout: str = "xy"
    csv_header: bool = True
    csv_subject_column: int | None = None
    csv_origin: int = 0

    def __post_init__(self):
        if self.csv_layout not in CSV_LAYOUTS:
            raise ValueError(f"--csv-layout: must be one of {', '.join(CSV_LAYOUTS)}, got {self.csv_layout!r}")
        if self.csv_image_column < 0 or self.csv_first_coordinate < 0:
            raise ValueError("--csv-image-column and --csv-first-coordinate: must be >= 0 (0-based columns), got "
                             f"{self.csv_image_column} and {self.csv_first_coordinate}")
        if self.csv_subject_column is not None and self.csv_subject_column < 0:
            raise ValueError(f"--csv-subject-column: must be >= 0 (a 0-based column), got {self.csv_subject_column}")
        if self.csv_origin not in CSV_ORIGINS:
            raise ValueError(f"--csv-origin: {CSV_ORIGIN_CHOICES}, got {self.csv_origin!r}")
        if self.images is not None and not Path(self.images).is_dir():
            raise ValueError(f"{self.images}: no such folder (--images)")


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


def check_listing(listing: Listing) -> None:
    """Refuse, in one line naming the face, a record that breaks the reader contract (docs/data.md, "Adding a
    dataset reader"): checked before any face is cropped, so a reader's mistake is not a broadcasting error
    from deep inside ``prepare`` after the cropping, or a traceback.

    Raises:
        AnnotationError: ``SOURCE: NAME: the DATASET reader gave ...``.
    """
    try:
        num_points = get_scheme(listing.scheme).num_points
    except ValueError as err:
        raise AnnotationError(f"{listing.source}: the {listing.dataset} reader's scheme: {err}") from None
    for record in listing.records:
        problem = _record_problem(record, num_points, listing.scheme)
        if problem:
            raise AnnotationError(f"{listing.source}: {record.name}: the {listing.dataset} reader gave {problem}")


def _record_problem(record: FaceRecord, num_points: int, scheme: str) -> str | None:
    points, labelled = np.asarray(record.points), np.asarray(record.labelled)
    if points.shape != (num_points, 2):
        return f"points of shape {points.shape}, not ({num_points}, 2): {scheme} has {num_points} points"
    if points.dtype.kind not in "iuf":
        return f"points of dtype {points.dtype}, not numbers"
    if labelled.shape != (num_points,) or labelled.dtype != bool:
        return f"labelled of shape {labelled.shape} and dtype {labelled.dtype}, not bool ({num_points},)"
    if record.split not in (None, "train", "test"):
        return f"split {record.split!r} (a split is 'train', 'test' or None)"
    if not isinstance(record.subject, str) or not record.subject:
        return f"subject {record.subject!r} (a subject is a non-empty string)"
    if record.image_path is None and record.pixels is None:
        return "neither image_path nor pixels"
    return None


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
    """Read an image file as RGB uint8, by its content rather than its name, turned as its EXIF orientation says.

    Returns:
        ``(image, notes)``: the (H, W, 3) image and remarks for the summary
        (for example a PNG stored under a ``.jpg`` name).

    Raises:
        ImageReadError: the file is missing, empty, truncated or not decodable.
    """
    views, notes = read_image_views(path, stored=False)
    return views[0][1], notes


def read_image_views(path: str | os.PathLike, stored: bool = True) -> tuple[list[tuple[str, np.ndarray]], list[str]]:
    """The image as viewers show it and, when its EXIF orientation turns or flips it, as stored.

    Annotation tools disagree on EXIF: some placed the points on the turned
    image, some on the stored pixels.  ``prepare`` keeps the view the points
    fit (``cropping.choose_view``).

    Returns:
        ``([(label, RGB image), ...], notes)``, the EXIF-turned view first (the only one without ``stored``).
    """
    path = Path(path)
    data = _read_bytes(path)
    kind = _sniff_format(data[:8])
    # The data may hold 8 or 16 bits, gray, RGB or RGBA: IMREAD_COLOR gives 8-bit BGR for all.
    views = [("as displayed", _decode(data, kind, cv2.IMREAD_COLOR))]
    orientation = exif_orientation(data) if kind == "JPEG" else None
    if orientation and orientation != 1 and stored:
        views[0] = (f"image turned by its EXIF orientation {orientation}", views[0][1])
        stored = _decode(data, kind, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        views.append((f"stored pixels (EXIF orientation {orientation} ignored)", stored))
    notes = []
    expected = _SUFFIX_FORMAT.get(path.suffix.lower())
    if expected and kind not in ("unknown", expected):
        notes.append(f"{kind} data under a {path.suffix} name")
    return views, notes


def _read_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageReadError("image file missing") from None
    except OSError as err:
        raise ImageReadError(f"image file unreadable ({err.strerror})") from None
    if not data:
        raise ImageReadError("image file is empty")
    return data


def _decode(data: bytes, kind: str, flags: int) -> np.ndarray:
    image, said = _imdecode_quietly(data, flags)
    if image is None and kind == "JPEG" and b"\xff\xd9" not in data[-4096:]:
        # OpenCV's decoder from memory refuses a JPEG without its end marker, which its file reader takes: a
        # file cut off after its last pixel decodes with the marker put back, and libjpeg says nothing
        image, said = _imdecode_quietly(data + b"\xff\xd9", flags)
        if image is None or said.strip():
            raise ImageReadError("truncated JPEG (no end-of-image marker)")
    if image is None:
        if kind == "PNG" and b"IEND" not in data[-64:]:
            raise ImageReadError("truncated PNG (no IEND chunk)")
        raise ImageReadError(f"corrupt or unsupported image data ({kind} signature)")
    return np.ascontiguousarray(image[..., ::-1])


_STDERR = threading.Lock()  # one decoder at a time borrows the process's stderr


def _imdecode_quietly(data: bytes, flags: int) -> tuple[np.ndarray | None, str]:
    """``cv2.imdecode``, with what libjpeg, libpng and OpenCV's log print on the process's stderr (``libpng error:
    PNG input buffer is incomplete``) caught instead of shown: the caller turns a failure into one line."""
    with _STDERR:
        try:
            if sys.stderr is not None:
                sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError):  # no stderr to borrow: decode as it is
            return cv2.imdecode(np.frombuffer(data, np.uint8), flags), ""
        try:
            with tempfile.TemporaryFile() as sink:
                try:
                    os.dup2(sink.fileno(), 2)
                    image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
                finally:
                    os.dup2(saved, 2)
                sink.seek(0)
                return image, sink.read().decode(errors="replace")
        except OSError:  # no temporary file to be had: decode as it is
            return cv2.imdecode(np.frombuffer(data, np.uint8), flags), ""
        finally:
            os.close(saved)


def exif_orientation(data: bytes) -> int | None:
    """The EXIF orientation (1-8) in JPEG data, or None; 1 is upright, 6 and 8 are turned 90 degrees."""
    i = 2
    while data[:2] == b"\xff\xd8" and i + 4 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if marker in (0xD9, 0xDA):  # end of image, start of scan: no more metadata
            return None
        if marker == 0xFF or 0xD0 <= marker <= 0xD7 or marker == 0x01:  # fill byte, markers without length
            i += 1 if marker == 0xFF else 2
            continue
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if marker == 0xE1 and data[i + 4:i + 10] == b"Exif\0\0":
            return _tiff_orientation(data[i + 10:i + 2 + length])
        i += 2 + length
    return None


def _tiff_orientation(tiff: bytes) -> int | None:
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None:
        return None
    try:
        (ifd,) = struct.unpack_from(order + "I", tiff, 4)
        (count,) = struct.unpack_from(order + "H", tiff, ifd)
        for k in range(count):
            tag, kind, _, value = struct.unpack_from(order + "HHIH", tiff, ifd + 2 + 12 * k)
            if tag == 0x0112 and kind == 3:
                return value if 1 <= value <= 8 else None
    except struct.error:
        return None
    return None


def named_image(path: Path) -> Path:
    """``path``, or the file it names where only another spelling of it exists: the other Unicode form (a folder
    copied from macOS names 'séance' with e + a combining accent, NFD; a CSV typed elsewhere with 'é', NFC), or '/' for
    the '\\' of a name written on Windows ('séance 1\\face.jpg'). Every face was an 'image missing' whose path looked
    like the file's."""
    if path.is_file():
        return path
    text = str(path)
    for spelling in (text, text.replace("\\", "/")):
        for form in ("NFC", "NFD"):
            other = Path(unicodedata.normalize(form, spelling))
            if other.is_file():
                return other
    return path


def _find_image(folder: Path, stem: str) -> Path | None:
    for suffix in IMAGE_SUFFIXES:
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _parse_float(text: str) -> float:
    """A coordinate; empty or NaN means unlabelled (returned as NaN)."""
    text = text.strip()
    if not text or text.lower() in ("nan", "na", "none", "null"):
        return math.nan
    return float(text)


def _points_from_values(values: list[float], num_points: int) -> tuple[np.ndarray, np.ndarray]:
    """Points and their labelled mask: NaN (an empty cell) is unlabelled; infinity stays, for the face to be skipped."""
    points = np.asarray(values, np.float64).reshape(num_points, 2)
    labelled = ~np.isnan(points).any(axis=1)
    points[~labelled] = 0.0
    return points, labelled


def csv_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """``(line, fields)`` of a CSV file; anything unreadable is an AnnotationError naming the file.

    Undecodable bytes become U+FFFD, so they surface as a bad number or a
    missing image on their line rather than as a decoding error.
    """
    line = 0
    try:
        with open(path, newline="", errors="replace") as handle:
            reader = csv.reader(handle)
            for line, row in enumerate(reader, start=1):
                if line == 1 and row and row[0].startswith("\ufeff"):  # the byte-order mark of Excel's "CSV UTF-8"
                    row[0] = row[0][1:]
                yield line, row
    except csv.Error as err:
        raise AnnotationError(f"{path}:{line + 1}: not a readable CSV ({err})") from None
    except OSError as err:
        raise AnnotationError(f"{path}: cannot read ({err.strerror or err})") from None


def read_text(path: Path) -> str:
    """A text annotation file; an unreadable one is an AnnotationError naming it."""
    try:
        return path.read_text(errors="replace")
    except OSError as err:
        raise AnnotationError(f"{path}: cannot read ({err.strerror or err})") from None
