"""What the benchmarks that measure dlib's detections on the face data share (``crop_coverage``,
``builtin_landmark_box``): the face data folder and its flags, the evenly spaced sample of its faces, the
detections in a pool of processes with a progress bar, and a reader's complaint about the folder in one line.

Not a benchmark (no ``--help``).  A benchmark imports it as ``_common`` when run as ``python benchmarks/NAME.py``
(its folder leads ``sys.path``), and as ``benchmarks._common`` where it is run from the repository root
(``runpy.run_path``, a test's import)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from facelandmarks.runtime import comma_list

ROOT = Path(__file__).resolve().parents[1]


def comma_numbers(kind, low, what: str = "numbers", example: str = ""):
    """An argparse type: comma-separated ``kind`` values (``int``, ``float``), each >= ``low``; anything else (a letter,
    an empty list, a value below ``low``) is the option's one line, '...: give comma-separated WHAT >= LOW'."""
    def parse(text: str) -> list:
        try:
            values = [kind(v) for v in comma_list(text)]
        except ValueError:
            values = []
        if not values or min(values) < low:
            raise argparse.ArgumentTypeError(f"{text!r}: give comma-separated {what} >= {low}{example}")
        return values
    return parse


def face_data_dir() -> Path:
    """``$FACE_DATA_DIR``, else ``../shared/data`` beside the repository."""
    return Path(os.environ.get("FACE_DATA_DIR", ROOT.parent / "shared" / "data"))


def add_face_data_options(parser: argparse.ArgumentParser, holds: str, limit: int, limit_help: str) -> None:
    """``--data`` (the folder holding ``holds``), ``--limit`` (``limit_help``, default ``limit``) and ``--workers``."""
    parser.add_argument("--data", type=Path, default=face_data_dir(),
                        help=f"folder holding {holds} (default $FACE_DATA_DIR or ../shared/data)")
    parser.add_argument("--limit", type=int, default=limit, help=f"{limit_help} (0: all; default {limit})")
    parser.add_argument("--workers", type=int, default=0, help="processes (default one per CPU)")


def parse_face_data_args(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """``parser``'s arguments, a negative ``--limit`` or ``--workers`` and a ``--data`` that is no folder refused in
    its line (a traceback from the reader or the process pool, after the parsing)."""
    args = parser.parse_args(argv)
    for name in ("limit", "workers"):
        if getattr(args, name) < 0:
            parser.error(f"--{name} must be >= 0, got {getattr(args, name)}")
    if not args.data.is_dir():
        parser.error(f"{args.data}: no such folder (--data: the face data; $FACE_DATA_DIR sets the default)")
    return args


def read_records(parser: argparse.ArgumentParser, read, *where) -> list:
    """``read(*where).records``, a reader's complaint (a subfolder missing, an unreadable annotation) in its line."""
    from facelandmarks.cli.common import error_line
    from facelandmarks.data.records import AnnotationError

    try:
        return read(*where).records
    except (AnnotationError, OSError) as err:
        parser.error(error_line(err))


def evenly_spaced(items: list, limit: int) -> list:
    """``limit`` of ``items``, evenly spaced from the first to the last; all of them where ``limit`` is 0."""
    if not limit or limit >= len(items):
        return items
    return [items[i] for i in np.linspace(0, len(items) - 1, limit).round().astype(int)]


def detect_in_pool(measure, items: list, workers: int, chunksize: int) -> list:
    """``measure`` of each of ``items`` in ``workers`` processes (0: one per CPU), in order, behind a progress bar."""
    from tqdm import tqdm

    from facelandmarks.data.cropping import worker_context

    with worker_context().Pool(workers or os.cpu_count()) as pool:
        return list(tqdm(pool.imap(measure, items, chunksize=chunksize), total=len(items), desc="detect", unit="face"))
