"""evaluate.py --data's tables and plots: one set of files in --out, replaced as a whole.

``results.csv``, ``results.md``, ``ced.png``, ``gallery.png`` and (where a run has a history) ``curves.png``
only make sense together: new tables beside an earlier evaluation's gallery name runs it does not show.
Several renames are never atomic together, so the set is replaced in three steps:

1. **Stage.**  Every file is written into a hidden folder in --out, ``.results-PID-XXXXXXXX``, with
   ``SET_LIST`` naming them.  A kill or an error here leaves the earlier set as it was; the next evaluation
   into that --out removes the folder (``files.remove_left_by_kills``).
2. **Commit.**  One rename makes the folder ``.results.commit``.  From then on the new set is the set.
3. **Install** (``finish_install``).  The earlier set's files go, ``results.csv`` first; the new ones move
   in, ``results.csv`` last; the folder goes.

So --out holds, at every moment, one whole set, or part of one set (never parts of two) without its
``results.csv``.  A kill during the install leaves ``.results.commit``, and the next evaluation into that
--out finishes the install before anything else.  Only the set's own names are touched: --out may hold
the user's files.  Two evaluations into one --out at once install one after the other: steps 2 and 3
hold a lock on ``.results.lock`` there (``flock``; without it the second's rename could land on the
first's emptied commit folder, which the first then removed with the second's set in it).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path

from facelandmarks.files import MKSTEMP_RANDOM, fsync_file, fsync_folder, remove_left_by_kills

RESULT_FILES = ("results.csv", "results.md", "ced.png", "gallery.png", "curves.png")  # results.csv: gone first, in last
STAGING = re.compile(rf"\.results-(\d+)-{MKSTEMP_RANDOM}")  # the staging folder in --out: .results-PID-RANDOM
COMMIT = ".results.commit"
LOCK = ".results.lock"  # in --out: held while a set is committed and installed (stays, empty)
SET_LIST = "set.txt"  # in the staging and commit folder: the new set's names, one a line


def staging_folder(out_dir: Path) -> Path:
    """A new staging folder in ``out_dir`` (made, with the folders above it), once dead ones are removed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_left_by_kills(out_dir, STAGING)  # an evaluation's killed while writing
    return Path(tempfile.mkdtemp(prefix=f".results-{os.getpid()}-", dir=out_dir))


def commit(staging: Path) -> None:
    """Make the files written into ``staging`` the set of the folder it is in, and move them into place."""
    out_dir = staging.parent
    names = [name for name in RESULT_FILES if (staging / name).is_file()]
    (staging / SET_LIST).write_text("".join(f"{name}\n" for name in names))
    for name in (*names, SET_LIST):
        fsync_file(staging / name)
    fsync_folder(staging)
    with _installing(out_dir):
        _install(out_dir)  # a set another evaluation into this folder committed and was killed installing
        os.rename(staging, out_dir / COMMIT)
        fsync_folder(out_dir)
        _install(out_dir)


@contextlib.contextmanager
def _installing(out_dir: Path):
    """One commit or install at a time in ``out_dir``: an exclusive ``flock`` on its ``LOCK`` file, waited for
    (nothing where the platform has no ``fcntl``)."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    with open(out_dir / LOCK, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
        yield


def finish_install(out_dir: Path) -> bool:
    """Move a committed set (``.results.commit``) that a killed evaluation left into place in ``out_dir``, under
    the lock; True when there was one."""
    out_dir = Path(out_dir)
    if not (out_dir / COMMIT).exists():  # the usual case: nothing to finish (and no lock file in a new --out)
        return False
    with _installing(out_dir):
        return _install(out_dir)


def _install(out_dir: Path) -> bool:
    """Move a committed set (``.results.commit``) into place in ``out_dir``; True when there was one.

    Every step can be redone: an earlier file is one the new set lacks, or whose new file is still in the
    commit folder; a new file already moved in is no longer there.
    """
    pending = out_dir / COMMIT
    try:
        names = (pending / SET_LIST).read_text().split()
    except (FileNotFoundError, NotADirectoryError):
        if pending.is_dir():  # a kill after the list went: only the folder was left to remove
            shutil.rmtree(pending, ignore_errors=True)
        return False
    for name in RESULT_FILES:
        if name not in names or (pending / name).exists():
            (out_dir / name).unlink(missing_ok=True)
    fsync_folder(out_dir)
    for name in reversed(names):  # in RESULT_FILES' order, reversed: results.csv last
        if (pending / name).exists():
            os.replace(pending / name, out_dir / name)
    fsync_folder(out_dir)
    (pending / SET_LIST).unlink()
    shutil.rmtree(pending, ignore_errors=True)
    return True
