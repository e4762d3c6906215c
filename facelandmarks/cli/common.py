"""What the command lines share: a user's mistake is told in one line, never a usage page or a traceback."""

from __future__ import annotations

import argparse
import zipfile

# What a user can cause and the scripts report in one line (exit 2).  Anything else is a bug: a traceback.
# zipfile.BadZipFile and EOFError come from numpy reading a truncated npz when the loader does not name it.
USER_ERRORS = (ValueError, OSError, zipfile.BadZipFile, EOFError)


def error_line(err: BaseException, npz_files=()) -> str:
    """``PATH: what is wrong``, on one line, for an error of ``USER_ERRORS``.

    ``npz_files``: the npz files the command reads, to name the one a bare ``BadZipFile`` is about.
    """
    if isinstance(err, (zipfile.BadZipFile, EOFError)):
        given = [str(p) for p in npz_files if p]
        broken = [p for p in given if not zipfile.is_zipfile(p)] or given or ["the data file"]
        return f"{' or '.join(broken)}: not a readable npz file, truncated or corrupt ({err or type(err).__name__})"
    if isinstance(err, OSError) and err.filename and str(err.filename) not in str(err.strerror or ""):
        return f"{err.filename}: {' '.join(str(err.strerror or err).split())}"
    return " ".join(str(err).split()) or type(err).__name__


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line (exit 2) that points at ``--help``.

    Sub-commands' parsers (``add_subparsers``) are of this class too, and name their command.
    """

    def error(self, message):
        self.exit(2, f"{self.prog}: {message} ({self.prog} --help lists the options)\n")
