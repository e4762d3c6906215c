"""Files written whole: a kill, an error or a full disk at any moment leaves the earlier file (or none), never part
of one.

``written_whole(path)`` gives a partial name beside ``path`` -- the same folder, so the rename stays a rename;
hidden; with ``path``'s suffix, by which OpenCV, Matplotlib and NumPy choose the format; unique, so two writers of
one file never write into one partial -- and once the block has written it, fsyncs it, renames it over ``path``
(``os.replace``) and fsyncs the folder.  An error or Ctrl-C in the block removes the partial file; a kill leaves it,
under a name ``is_partial`` knows, so a reader of the folder passes it over, and with the writer's process id in
it, so ``remove_left_by_kills`` can clear it once that process is gone.  ``write_text_whole`` and
``write_json_whole`` are the common cases.

Files that must change together need more than this: a prepared set (``data/fileset.py``), evaluate.py --data's
tables and plots (``evaluation/result_set.py``), a run's checkpoints (``training/resume.py``), an export or a
shipped model (a folder replaced whole, ``inference/swap.py``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

_PARTIAL = re.compile(r"\..*\.partial(?:\.[^.]*)?")
MKSTEMP_RANDOM = "[a-z0-9_]{8}"  # what mkstemp and mkdtemp put in a name: a user's ".notes.2024-draft.partial.txt" is no match
OWN_PARTIAL = re.compile(rf"\..*\.(\d+)-{MKSTEMP_RANDOM}\.partial(?:\.[^.]*)?")  # written_whole's: .STEM.PID-RANDOM.partial.SUFFIX
STALE_SECONDS = 24 * 3600  # a partial file or staging folder this old is a dead writer's, whatever its process id says


def is_partial(name: str) -> bool:
    """Whether a file name is one ``written_whole`` writes into (left behind by a process killed mid-write)."""
    return bool(_PARTIAL.fullmatch(name))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def left_by_a_kill(path: Path, pid: int | None) -> bool:
    """Whether ``path``, which the process ``pid`` was writing, is a leftover: that process is gone, or it is a day old
    (the one sign there is where its name gives no process id, ``pid`` None)."""
    try:
        old = time.time() - path.stat().st_mtime > STALE_SECONDS
    except FileNotFoundError:
        return False
    if pid is None:
        return old
    return pid != os.getpid() and (old or not alive(pid))


def remove_left_by_kills(folder, pattern: re.Pattern = OWN_PARTIAL) -> int:
    """Remove from ``folder`` what writers killed mid-write left: the files and folders whose name ``pattern`` matches
    (group 1: the writer's process id, where it has a group; by default ``written_whole``'s partial files) that
    ``left_by_a_kill``.
    What cannot be removed (a read-only folder) is left. Returns how many were."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    removed = 0
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match and left_by_a_kill(Path(entry.path), int(match[1]) if pattern.groups else None):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                try:
                    Path(entry.path).unlink(missing_ok=True)
                except OSError:
                    continue
            removed += 1
    return removed


def umask() -> int:
    """The process's umask: read from /proc where Linux gives it, since setting it to read it (the only portable way)
    leaves, for a moment, every file another thread creates open to all."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_file(path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def fsync_folder(folder) -> None:
    """Make renames and new names in ``folder`` durable (a no-op where folders cannot be opened or synced)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def written_whole(path) -> Iterator[Path]:
    """A partial name beside ``path`` for the block to write, renamed onto ``path`` once it has (module docstring)."""
    path = Path(path)
    partial = None
    try:
        # the stem cut to 100 bytes: a name the file system takes (255 bytes) stays one with what the partial name adds
        stem = os.fsencode(path.stem)[:100].decode("utf-8", "ignore")
        fd, name = tempfile.mkstemp(prefix=f".{stem}.{os.getpid()}-", suffix=f".partial{path.suffix}", dir=path.parent)
        os.close(fd)
        partial = Path(name)
        os.chmod(partial, 0o666 & ~umask())  # mkstemp makes it 0600: the file gets the permissions of any other
        yield partial
        fsync_file(partial)
        os.replace(partial, path)
    except OSError as err:
        raise _naming(err, path, partial) from err
    finally:
        if partial is not None:
            partial.unlink(missing_ok=True)
    fsync_folder(path.parent)


def _naming(err: OSError, path: Path, partial: Path | None) -> OSError:
    """``err`` about ``path``, the file asked for, where it named no file (a full disk) or the hidden partial one (or,
    ``partial`` None, the name ``mkstemp`` tried)."""
    named_other = err.filename is not None and partial is not None and err.filename not in (str(partial), partial)
    if err.errno is None or named_other:
        return err
    return type(err)(err.errno, err.strerror, str(path))


def write_text_whole(path, text: str) -> Path:
    with written_whole(path) as partial:
        partial.write_text(text)
    return Path(path)


def write_json_whole(path, value, indent: int = 1, sort_keys: bool = False) -> Path:
    """``value`` as JSON and a newline; a value JSON cannot hold fails before anything is written."""
    return write_text_whole(path, json.dumps(value, indent=indent, sort_keys=sort_keys) + "\n")
