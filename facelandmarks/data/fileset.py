"""A prepared dataset is one set of files, replaced as a whole or not at all.

``prepare`` writes ``PREFIX_train.npz`` and ``PREFIX_test.npz`` (or numbered shards with their
``PREFIX_{train,test}.shards.json``) and ``PREFIX_report.json``/``.txt``.  They only make sense
together: a train file of one run beside a test file of another can put one subject on both sides
of the split, the one promise the split makes.  Several renames are never atomic together, so the
set is replaced the way a database commits a transaction:

1. **Stage.**  Every file of the new set is written into a hidden folder beside the prefix,
   ``.NAME.staging-PID-XXXX`` (same file system, so renames stay renames), with
   ``NAME.manifest.json``: the set's id and each file's size and SHA-256.  Each npz and shard
   manifest also carries the id (key ``set_id``).  Everything is fsynced.  A kill, an error or a
   full disk here leaves the old set as it was; the next run deletes the dead staging folder.
2. **Commit.**  One rename turns the staging folder into ``.NAME.commit``.  From that instant the
   new set *is* the set.
3. **Install.**  The files move to their final names, files of the old set that the new one lacks
   (old shards, say) are deleted, the manifest moves last, the folder goes.  Every step can be
   redone, so whoever finds ``.NAME.commit`` -- the next ``prepare``, or any reader -- finishes the
   install before using a file.

Readers (``npz.load_npz``, ``npz.ShardSet``) check each file of a set against ``NAME.manifest.json``
beside it: listed, same size, same set id.  A file that does not match (copied in from another run,
rewritten by an older version of the toolkit) is refused with one line naming it, so a mixed set is
never used.  Files without a manifest beside them (sets prepared before manifests existed, files
renamed by hand) are read unchecked.

For tests, ``FACELANDMARKS_FAULT_AT=N`` ends the process (``os._exit``) at the N-th step of the write
path, ``N:enospc`` raises "No space left on device" there instead, and ``FACELANDMARKS_FAULT_LOG=FILE``
lists the steps; ``tests/data/test_prepare_faults.py`` kills ``prepare`` at every one of them.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from facelandmarks.data.errors import DatasetError, OutputError
from facelandmarks.files import fsync_file, fsync_folder, left_by_a_kill

MANIFEST_SUFFIX = ".manifest.json"
SET_FORMAT = "facelandmarks-set/1"
FAULT_ENV, FAULT_LOG_ENV = "FACELANDMARKS_FAULT_AT", "FACELANDMARKS_FAULT_LOG"
FAULT_EXIT = 86

# The files a set named NAME may hold; group 1 is NAME.
_MEMBER = re.compile(r"^(.+?)(?:_(?:train|test)(?:-\d{5})?\.npz|_(?:train|test)\.shards\.json|_report\.(?:json|txt))$")

_faults_passed = 0


def fault_point(label: str) -> None:
    """Test hook on the write path: log the step, and end the process (or fake a full disk) at step N."""
    spec, log = os.environ.get(FAULT_ENV), os.environ.get(FAULT_LOG_ENV)
    if not spec and not log:
        return
    global _faults_passed
    _faults_passed += 1
    if log:
        with open(log, "a") as handle:
            handle.write(f"{_faults_passed} {label}\n")
    at, _, mode = (spec or "").partition(":")
    if at.isdigit() and int(at) == _faults_passed:
        if mode == "enospc":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), label)
        os._exit(FAULT_EXIT)


# ----------------------------------------------------------------------------- names


def set_name(path: str | os.PathLike) -> tuple[Path, str] | None:
    """``(folder, NAME)`` of the set a file belongs to by its name, or None for other files."""
    path = Path(path)
    if path.name.endswith(MANIFEST_SUFFIX):
        return path.parent, path.name[: -len(MANIFEST_SUFFIX)]
    match = _MEMBER.match(path.name)
    return (path.parent, match.group(1)) if match else None


def test_side_of(path: str | os.PathLike) -> Path | None:
    """The training file beside ``path`` when ``path`` is the test file (npz or shards manifest) of a set that
    ``datagen.py prepare`` wrote, its training file or the set's manifest beside it; else None."""
    path = Path(path)
    match = re.fullmatch(r"(.+)_test(\.npz|\.shards\.json)", path.name)
    if match is None:
        return None
    train = path.with_name(f"{match.group(1)}_train{match.group(2)}")
    beside = train.exists() or manifest_path(path.parent, match.group(1)).is_file()
    return train if beside else None


def manifest_path(folder: Path, name: str) -> Path:
    return folder / f"{name}{MANIFEST_SUFFIX}"


def commit_folder(folder: Path, name: str) -> Path:
    return folder / f".{name}.commit"


def _in_namespace(name: str, file_name: str) -> bool:
    """True for the file names a set called ``name`` may use (its manifest aside)."""
    match = _MEMBER.match(file_name)
    return bool(match) and match.group(1) == name


# ----------------------------------------------------------------------------- durability


def file_hash(path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in 1 MB blocks."""
    sha = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            sha.update(block)
    return sha.hexdigest()


def digest(path: Path) -> tuple[int, str]:
    """Size and SHA-256 of a file (read back from the page cache right after writing)."""
    return path.stat().st_size, file_hash(path)


# ----------------------------------------------------------------------------- install and recovery


def read_manifest(path: Path) -> dict:
    """A set manifest, or DatasetError naming it when it is not one."""
    try:
        body = json.loads(path.read_text())
        if body.get("format") != SET_FORMAT or not isinstance(body.get("files"), dict):
            raise ValueError(f"not a {SET_FORMAT} manifest")
        for entry in body["files"].values():
            int(entry["bytes"])
        str(body["set_id"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise DatasetError(f"{path}: not a readable set manifest ({err})") from None
    return body


def finish_install(folder: Path, name: str) -> bool:
    """Move a committed set (``.NAME.commit``) into place; True when there was one.

    Idempotent and tolerant of a second finisher running at the same time: a
    file already moved is simply no longer there.
    """
    pending = commit_folder(folder, name)
    if not pending.is_dir():
        return False
    staged_manifest = pending / manifest_path(folder, name).name
    if staged_manifest.is_file():
        files = read_manifest(staged_manifest)["files"]
        for file_name in files:
            _move(pending / file_name, folder / file_name, f"install {file_name}")
        for stale in sorted(folder.iterdir()):
            if _in_namespace(name, stale.name) and stale.name not in files:
                fault_point(f"remove {stale.name}")
                _unlink(stale)
        fsync_folder(folder)
        _move(staged_manifest, manifest_path(folder, name), "install manifest")
        fsync_folder(folder)
    fault_point("remove commit folder")
    shutil.rmtree(pending, ignore_errors=True)
    fsync_folder(folder)
    return True


def _move(source: Path, target: Path, label: str) -> None:
    fault_point(f"{label}: before")
    try:
        os.replace(source, target)
    except FileNotFoundError:
        return  # already moved (by an earlier, interrupted install, or another process)
    fault_point(f"{label}: after")


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def remove_dead_staging(folder: Path, name: str) -> None:
    """Delete staging folders left by killed runs (their process is gone, or they are a day old)."""
    pattern = re.compile(re.escape(f".{name}.staging-") + r"(\d+)-")
    for path in folder.glob(f".{glob_escape(name)}.staging-*"):
        match = pattern.match(path.name)
        if not match or not path.is_dir():
            continue
        if left_by_a_kill(path, int(match.group(1))):
            shutil.rmtree(path, ignore_errors=True)


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


# ----------------------------------------------------------------------------- readers


def before_reading(path: str | os.PathLike) -> None:
    """Finish an interrupted install of ``path``'s set, so the reader sees one whole set."""
    located = set_name(path)
    if located is None:
        return
    folder, name = located
    try:
        finish_install(folder, name)
    except OSError as err:
        raise DatasetError(
            f"{commit_folder(folder, name)}: an interrupted prepare left its new set here and it cannot be moved "
            f"into place ({err.strerror}); give write access to {folder} or run datagen.py prepare again"
        ) from None


def check_member(path: str | os.PathLike, set_id: str | None) -> None:
    """Raise DatasetError unless ``path`` is the file its set's manifest lists (size and set id).

    ``set_id`` is the id stored in the file (None when it has none).  Files
    without a manifest beside them are not checked.
    """
    path = Path(path)
    located = set_name(path)
    if located is None or path.name.endswith(MANIFEST_SUFFIX):
        return
    manifest = manifest_path(*located)
    if not manifest.is_file():
        return
    body = read_manifest(manifest)
    entry = body["files"].get(path.name)
    if entry is None:
        raise DatasetError(f"{path}: not part of the set in {manifest.name} (a file left from another prepare run?); "
                           "run datagen.py prepare again")
    try:
        size = path.stat().st_size
    except OSError as err:
        raise DatasetError(f"{path}: cannot read ({err.strerror})") from None
    if size != int(entry["bytes"]) or set_id != body["set_id"]:
        found = f"set {set_id}" if set_id else "no set id"
        raise DatasetError(f"{path}: a mixed set -- this file ({found}, {size} bytes) is not the one {manifest.name} "
                           f"lists (set {body['set_id']}, {entry['bytes']} bytes); run datagen.py prepare again")


def check_set(path: str | os.PathLike, hashes: bool = False) -> dict:
    """Check a whole set: every listed file present with its size (and SHA-256 with ``hashes``), no stray member.

    Args:
        path: any file of the set, its manifest, or the prefix itself.
        hashes: also read every file and compare its SHA-256 (slow on large sets).

    Returns:
        The manifest (``set_id``, ``files`` ...).

    Raises:
        DatasetError: naming the first file that does not match.
    """
    path = Path(path)
    located = set_name(path) or (path.parent, path.name)
    folder, name = located
    before_reading(manifest_path(folder, name))
    manifest = manifest_path(folder, name)
    if not manifest.is_file():
        raise DatasetError(f"{manifest}: no set manifest (prepared before manifests existed, or not a prepared set)")
    body = read_manifest(manifest)
    for file_name, entry in body["files"].items():
        member = folder / file_name
        if not member.is_file():
            raise DatasetError(f"{member}: missing from the set {manifest.name} lists; run datagen.py prepare again")
        size, sha = digest(member) if hashes else (member.stat().st_size, entry.get("sha256"))
        if size != int(entry["bytes"]) or sha != entry.get("sha256"):
            raise DatasetError(f"{member}: a mixed set -- differs from what {manifest.name} lists; run datagen.py prepare again")
    strays = sorted(p.name for p in folder.iterdir() if _in_namespace(name, p.name) and p.name not in body["files"])
    if strays:
        raise DatasetError(f"{folder / strays[0]}: not part of the set in {manifest.name} (a file left from another run?)")
    return body


# ----------------------------------------------------------------------------- the writer


class SetWriter:
    """Writes one set into a staging folder beside ``prefix``, then commits it (see the module docstring).

    Creating the writer is the preflight check of the output location: it
    finishes or cleans up what earlier runs left, creates the folder and the
    staging folder and writes a probe, so an unwritable ``--out`` fails
    before any face is processed.

    Args:
        prefix: the output prefix (``dataset/ibug128``).
    """

    def __init__(self, prefix: str | os.PathLike):
        self.prefix = Path(prefix)
        self.folder, self.name = self.prefix.parent, self.prefix.name
        self.set_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(4)}"
        self.files: dict[str, dict] = {}
        self.committed = False
        self._created = _missing_parents(self.folder)
        self.staging = None
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            finish_install(self.folder, self.name)
            remove_dead_staging(self.folder, self.name)
            self.staging = Path(tempfile.mkdtemp(prefix=f".{self.name}.staging-{os.getpid()}-", dir=self.folder))
            probe = self.staging / ".probe"
            with open(probe, "wb") as handle:
                handle.write(b"\0" * 4096)
                handle.flush()
                os.fsync(handle.fileno())
            probe.unlink()
        except OSError as err:
            self.abort()
            blocking = next((p for p in (self.folder, *self.folder.parents) if p.is_file()), None)
            if blocking is not None:  # mkdir's "File exists" would not say which
                raise OutputError(f"{blocking}: a file, not a folder, so the output set {self.prefix}_* cannot go "
                                  f"under it") from None
            where = err.filename or self.folder  # the folder, not the staging name mkdtemp tried in a read-only one
            where = self.folder if Path(where).name.startswith(f".{self.name}.staging-") else where
            raise OutputError(f"{where}: cannot write the output set {self.prefix}_* here ({err.strerror or err})") from None

    def path(self, file_name: str) -> Path:
        """Where a file of the set is written now (inside the staging folder)."""
        return self.staging / file_name

    def final(self, file_name: str) -> Path:
        """Where a file of the set ends up."""
        return self.folder / file_name

    def write(self, file_name: str, write: Callable[[Path], object]) -> Path:
        """Write one file of the set with ``write(path)``, fsync it and record its size and hash."""
        path = self.path(file_name)
        try:
            fault_point(f"write {file_name}: before")
            write(path)
            fsync_file(path)
            size, sha = digest(path)
            fault_point(f"write {file_name}: after")
        except OSError as err:
            raise OutputError(f"{self.final(file_name)}: cannot write ({err.strerror or err}); "
                              f"the previous set {self.prefix}_* is unchanged") from None
        self.files[file_name] = {"bytes": size, "sha256": sha}
        return path

    def write_text(self, file_name: str, text: str) -> Path:
        return self.write(file_name, lambda path: path.write_text(text))

    def commit(self) -> Path:
        """Make the staged set the set (one rename), then move it into place.  Returns the manifest path."""
        body = {"format": SET_FORMAT, "set_id": self.set_id, "prefix": self.name,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "files": self.files}
        manifest = manifest_path(self.folder, self.name)
        self.write(manifest.name, lambda path: path.write_text(json.dumps(body, indent=1) + "\n"))
        del self.files[manifest.name]
        pending = commit_folder(self.folder, self.name)
        try:
            fsync_folder(self.staging)
            finish_install(self.folder, self.name)  # another run's commit, finished first
            fault_point("commit: before")
            os.rename(self.staging, pending)
            self.committed = True
            fault_point("commit: after")
            fsync_folder(self.folder)
        except OSError as err:
            if not self.committed:
                raise OutputError(f"{pending}: cannot commit the new set ({err.strerror or err}); "
                                  f"the previous set {self.prefix}_* is unchanged") from None
            raise self._pending_error(err) from None
        try:
            finish_install(self.folder, self.name)
        except OSError as err:
            raise self._pending_error(err) from None
        return manifest

    def _pending_error(self, err: OSError) -> OutputError:
        return OutputError(f"{commit_folder(self.folder, self.name)}: the new set is committed but not yet in place "
                           f"({err.strerror or err}); the next prepare or load of {self.prefix}_* finishes it")

    def abort(self) -> None:
        """Forget the staged files (the old set was never touched); remove folders this writer created."""
        if not self.committed:
            if self.staging is not None:
                shutil.rmtree(self.staging, ignore_errors=True)
            self._remove_created()

    def _remove_created(self) -> None:
        for folder in self._created:
            try:
                folder.rmdir()
            except OSError:
                break


def _missing_parents(folder: Path) -> list[Path]:
    """The folders ``mkdir(parents=True)`` would create, deepest first (removed again on abort)."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing
