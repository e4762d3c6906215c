"""Errors about dataset files, shared by the npz schema (``npz.py``) and the file set (``fileset.py``).

They live apart so both modules can raise them without importing each other.  Every message starts
with the file it is about: ``datagen.py`` prints it as the one line ``datagen.py COMMAND: MESSAGE``.
"""

from __future__ import annotations


class DatasetError(ValueError):
    """A dataset file that cannot be used (unreadable, off the schema, from another set); the message names the file."""


class OutputError(ValueError):
    """An output location that cannot take the new set (unwritable, full); the message names the path."""
