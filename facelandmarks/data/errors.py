"""Errors about dataset files, shared by the npz schema (``npz.py``) and the file set (``fileset.py``).

They live apart so both modules can raise them without importing each other.  Every message starts
with the file it is about: ``datagen.py`` prints it as the one line ``datagen.py COMMAND: MESSAGE``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path


class DatasetError(ValueError):
    """A dataset file that cannot be used (unreadable, off the schema, from another set); the message names the file."""


class OutputError(ValueError):
    """An output location that cannot take the new set (unwritable, full); the message names the path."""


def check_writable(folder) -> None:
    """Create ``folder`` and a file in it now: an unwritable output folder should stop a run or an
    evaluation before its first epoch or face, not after it (``OutputError`` naming the folder)."""
    folder = Path(folder)
    if folder.is_file():
        raise OutputError(f"{folder}: a file, not a folder to write into")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as err:
        raise OutputError(f"{folder}: cannot write there ({err.strerror or ' '.join(str(err).split())})") from None
