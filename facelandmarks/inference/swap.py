"""One folder replaced by another, so that a kill at any moment leaves one of the two whole in its place.

The new folder is written beside the destination (``work_folder``: ``.NAME.partial``) and swapped in by
``replace_folder``. Where the system exchanges two names in one step (Linux ``renameat2`` with
``RENAME_EXCHANGE``) the destination is at every moment the old folder or the new one; elsewhere the old one
first moves aside (``.NAME.old``), and a kill between that rename and the next leaves the destination missing
until ``recover`` puts the old folder back. The old folder is deleted last. ``recover`` also removes what a kill
left beside the destination, and says what it did in one line.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
from pathlib import Path

_AT_FDCWD = -100  # renameat2's "relative to the working directory", for both paths
_RENAME_EXCHANGE = 2
_CANNOT_EXCHANGE = (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV)  # the kernel or file system cannot


def work_folder(dest: Path) -> Path:
    """Where the folder that replaces ``dest`` is written: beside it (the same file system), hidden."""
    return dest.with_name(f".{dest.name}.partial")


def _aside_folder(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.old")


def _exchange(first: Path, second: Path) -> bool:
    """Swap the names of two folders in one step; False, nothing changed, where the system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2  # glibc 2.28 and later
    except (OSError, AttributeError):  # another C library (macOS, musl), or an older glibc
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in _CANNOT_EXCHANGE:
        return False
    raise OSError(code, os.strerror(code), str(second))


def replace_folder(work: Path, dest: Path) -> None:
    """Put the finished folder ``work`` at ``dest`` (which may be missing); the old ``dest`` is deleted once the new
    one is in place.

    A ``KeyboardInterrupt`` (Ctrl-C; SIGTERM as the scripts take it) that lands after the swap, while the old folder
    is being deleted, goes on with ``replaced = True`` on it (``was_replaced``): ``dest`` holds the new folder then,
    and what is left of the old one goes at the next ``recover``."""
    work, dest = Path(work), Path(dest)
    if not dest.exists():
        os.rename(work, dest)
        return
    if _exchange(work, dest):  # work now holds the old folder
        old = work  # what is left of it goes at the next recover()
    else:
        old = _aside_folder(dest)
        os.rename(dest, old)
        try:
            os.rename(work, dest)
        except BaseException as err:
            if dest.exists() and not work.exists():  # it came just after the rename: the new folder is in place
                err.replaced = True
            else:
                os.rename(old, dest)
            raise
    try:
        shutil.rmtree(old, ignore_errors=True)
    except KeyboardInterrupt as err:
        err.replaced = True
        raise


def was_replaced(err: BaseException) -> bool:
    """Whether ``err``, out of ``replace_folder``, stopped it after the new folder was in place."""
    return getattr(err, "replaced", False) is True


def recover(dest: Path, action: str) -> str | None:
    """Mend what a kill during ``action`` (a command, as the line names it) left beside ``dest``: put back the old
    folder where it was moved aside and the destination is missing, and remove the rest. Returns the line saying so,
    or None where nothing was left."""
    dest = Path(dest)
    aside, work = _aside_folder(dest), work_folder(dest)
    said = []
    if aside.is_dir() and not dest.exists():
        os.rename(aside, dest)
        said.append(f"put {dest} back from {aside.name}")
    for leftover in (aside, work):
        if leftover.exists():
            shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
            said.append(f"removed {leftover}")
    return f"{dest}: {'; '.join(said)}, left by {action} that was stopped" if said else None
