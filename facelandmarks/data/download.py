"""Resumable HTTP downloads and archive extraction that refuses members landing outside the destination."""

from __future__ import annotations

import os
import re
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path, PurePosixPath

from facelandmarks.data.errors import OutputError, check_writable
from facelandmarks.files import remove_left_by_kills, write_text_whole

MUCT_ARCHIVES = (
    "muct-a-jpg-v1.tar.gz",
    "muct-b-jpg-v1.tar.gz",
    "muct-c-jpg-v1.tar.gz",
    "muct-d-jpg-v1.tar.gz",
    "muct-e-jpg-v1.tar.gz",
    "muct-landmarks-v1.tar.gz",
)


MUCT_URL = "https://raw.githubusercontent.com/StephenMilborrow/muct/master/"


class DownloadError(RuntimeError):
    """A download that failed; the message names the URL."""


class ArchiveError(ValueError):
    """An archive member that would land outside the destination, or a broken archive."""


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
        if err.code == 416 and have:  # longer than the server's file (a corrupt partial, another version): once
            part.unlink()  # "HTTP 416" on every run until the user found and deleted it; start over instead
            return download_file(url, target, progress, timeout)
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


class _Extraction:
    """The destination as extraction would leave it, member by member, with every link followed.

    ``tarfile`` writes through links: a member ``b/evil.txt`` lands wherever
    ``b`` points once ``a -> .`` and ``a/b -> ..`` were extracted.  So each
    member's final path is resolved here against the links declared earlier in
    the same archive and those already on disk (symbolic links, followed;
    chains, followed up to a depth), and must stay inside the destination.
    """

    MAX_LINKS = 40

    def __init__(self, archive: Path, dest: Path):
        self.archive, self.dest = archive, Path(os.path.realpath(dest))
        self.links: dict[Path, str] = {}  # symlinks the archive creates: path -> target as written
        self.link_members: dict[Path, tarfile.TarInfo] = {}
        self.declared: set[Path] = set()  # every path the archive creates

    def fail(self, member: tarfile.TarInfo, problem: str):
        raise ArchiveError(f"{self.archive}: member {member.name!r} {problem}; nothing extracted from this archive")

    def inside(self, path: Path) -> bool:
        return path == self.dest or self.dest in path.parents

    def _link_target(self, path: Path) -> str | None:
        """The target of a link the archive declared, or of one already on disk (files and folders
        extracted onto a link leave it in place and go through it)."""
        if path in self.links:
            return self.links[path]
        if self.inside(path) and os.path.islink(path):
            return os.readlink(path)
        return None

    def resolve(self, start: Path, parts, follow_last: bool = True, depth: int = 0) -> Path:
        """``start`` (a real folder) joined with ``parts``, every link followed as the extraction would."""
        current = start
        parts = list(parts)
        for i, part in enumerate(parts):
            if part in ("", "."):
                continue
            if part == "..":
                current = current.parent
                continue
            candidate = current / part
            target = self._link_target(candidate) if (follow_last or i < len(parts) - 1) else None
            if target is None:
                current = candidate
                continue
            if depth >= self.MAX_LINKS:
                raise RecursionError
            if PurePosixPath(target).is_absolute():
                current = Path(os.path.normpath(target))
            else:
                current = self.resolve(current, PurePosixPath(target).parts, True, depth + 1)
            if not self.inside(current):
                return current  # escaped: no need to look further
        return current

    def check(self, member: tarfile.TarInfo) -> None:
        """Raise ArchiveError unless ``member`` and whatever it links to stay inside the destination."""
        name = PurePosixPath(member.name)
        if name.is_absolute() or re.match(r"^[A-Za-z]:", member.name):
            self.fail(member, "has an absolute path")
        if ".." in name.parts:
            self.fail(member, "has '..' in its path")
        if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
            self.fail(member, "is a device, FIFO or other special file")
        parts = [p for p in name.parts if p not in ("", ".")]
        if not parts:
            if member.isdir():
                return
            self.fail(member, "names the destination itself")
        try:
            self._check_paths(member, parts)
        except RecursionError:
            self.fail(member, "goes through a loop of links")

    def _check_paths(self, member: tarfile.TarInfo, parts: list[str]) -> None:
        folder = self.resolve(self.dest, parts[:-1])
        if not self.inside(folder):
            self.fail(member, f"would land outside {self.dest} (through a link in its path, to {folder})")
        location = folder / parts[-1]
        if member.issym():
            if location in self.links or location in self.declared or os.path.lexists(location):
                self.fail(member, f"would replace what is already at {location} (a link is never re-pointed: "
                                  "extract into an empty folder)")
            link = PurePosixPath(member.linkname)
            if link.is_absolute():
                self.fail(member, f"links to the absolute path {member.linkname!r}")
            target = self.resolve(folder, link.parts)
            if not self.inside(target):
                self.fail(member, f"links outside {self.dest} ({member.linkname!r} -> {target})")
            self.links[location] = member.linkname
            self.link_members[location] = member
        else:
            final = self.resolve(folder, [parts[-1]])
            if not self.inside(final) or (final == self.dest and not member.isdir()):
                self.fail(member, f"would land outside {self.dest} (through a link, at {final})")
            if member.islnk():
                link = PurePosixPath(member.linkname)
                if link.is_absolute():
                    self.fail(member, f"links to the absolute path {member.linkname!r}")
                target = self.resolve(self.dest, link.parts)
                if not self.inside(target):
                    self.fail(member, f"links outside {self.dest} ({member.linkname!r} -> {target})")
        self.declared.add(location)

    def recheck_links(self) -> None:
        """Every link the archive creates, resolved in the final tree, must still point inside.

        A link checked early can be redirected by links declared after it
        (``a -> b/..`` before ``b -> .``); nothing was written through it in
        between (each member was checked at its turn), but it must not be left
        pointing out.
        """
        for location, target in self.links.items():
            try:
                final = self.resolve(location.parent, PurePosixPath(target).parts)
            except RecursionError:
                final = None
            if final is None or not self.inside(final):
                self.fail(self.link_members[location], f"links outside {self.dest} once the whole archive is extracted")


def check_archive(archive: Path, members: list[tarfile.TarInfo], dest: Path) -> None:
    """Raise ArchiveError, before anything is extracted, if any member would land or point outside ``dest``."""
    extraction = _Extraction(archive, dest)
    for member in members:
        extraction.check(member)
    extraction.recheck_links()


def _filter_arguments() -> dict:
    """The standard library's own ``data`` filter where it exists (Python 3.11.4+), as a second line of defence."""
    return {"filter": "data"} if hasattr(tarfile, "data_filter") else {}


def safe_extract(archive: Path, dest: Path) -> int:
    """Extract a tar archive into ``dest`` after checking every member; returns the member count.

    All members are read and checked first (``check_archive``): a refused or
    unreadable archive extracts nothing.  They are extracted into a hidden
    folder in ``dest`` (``.NAME.PID-XXXXXXXX.partial``) and then moved into
    place, so a member is in ``dest`` whole or not at all (tarfile wrote each
    at its place: a kill left a half-written photo there, as if whole).  A
    kill leaves the folder, which the next extraction into ``dest`` removes.
    """
    dest.mkdir(parents=True, exist_ok=True)
    try:
        tar = tarfile.open(archive)
        members = tar.getmembers()  # reads the whole archive: a corrupt one fails here, before any extraction
    except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
        raise ArchiveError(f"{archive}: not a readable tar archive ({err})") from None
    with tar:
        check_archive(archive, members, dest)
        remove_left_by_kills(dest)  # what an extraction or a marker's write killed midway left
        staging = Path(tempfile.mkdtemp(prefix=f".{archive.name}.{os.getpid()}-", suffix=".partial", dir=dest))
        try:
            try:
                tar.extractall(staging, members=members, **_filter_arguments())
            except (tarfile.TarError, EOFError, zlib.error, KeyError) as err:
                why = "a hard link to a file outside the archive" if isinstance(err, KeyError) else err  # extracted apart
                raise ArchiveError(f"{archive}: cannot be extracted ({why}); nothing extracted from this archive") from None
            _move_into(staging, dest, archive.name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return len(members)


def _move_into(source: Path, target: Path, archive_name: str) -> None:
    """Move what ``source`` holds into ``target``, into the folders already there (another archive's ``jpg``); a file
    or folder of --dest's in the way is an ``OutputError`` naming it (not the hidden folder, gone once it is read)."""
    for entry in os.scandir(source):
        into = target / entry.name
        folder = entry.is_dir(follow_symlinks=False)
        if folder and into.is_dir():
            _move_into(Path(entry.path), into, archive_name)
        elif into.is_dir() or (folder and into.exists()):
            raise OutputError(f"{into}: a {'file' if folder else 'folder'} where {archive_name} has a "
                              f"{'folder' if folder else 'file'} (move it away)")
        else:
            os.replace(entry.path, into)


def extracted_marker(dest: Path, archive_name: str) -> Path:
    """The file saying that every member of ``archive_name`` is in place in ``dest`` (written once they are), and of
    which archive (``_stamp``)."""
    return dest / f".{archive_name}.extracted"


def _stamp(archive: Path) -> str:
    """What tells an archive from another copy under its name: its size and modification time."""
    status = archive.stat()
    return f"{status.st_size} bytes, modified {status.st_mtime_ns} ns"


def _marked(marker: Path, archive: Path) -> bool:
    """Whether ``marker`` says that ``archive`` is extracted: that archive, or one since removed (--delete-archives)."""
    try:
        said = marker.read_text()
    except (FileNotFoundError, IsADirectoryError):
        return False
    return not archive.is_file() or f"({_stamp(archive)})" in said


def download_muct(dest: str | os.PathLike, base_url: str = MUCT_URL, progress: bool = True, keep_archives: bool = True) -> Path:
    """Fetch and extract the six official MUCT tarballs into ``dest``.

    Each archive's members are all in place once ``extracted_marker`` is there: a rerun skips those archives
    (not downloading them again where ``keep_archives`` is off) and extracts the others anew.
    """
    dest = Path(dest)
    if not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", base_url):  # a folder holding the tarballs (once "unknown url type")
        folder = Path(base_url).expanduser()
        if not folder.is_dir():
            raise DownloadError(f"{base_url}: --url is neither a URL (http://, https://, file://) nor a folder")
        base_url = folder.resolve().as_uri()
    check_writable(dest)  # a file or a read-only place: one line naming --dest (once '/tmp/x: File exists')
    base = base_url if base_url.endswith("/") else base_url + "/"
    for archive_name in MUCT_ARCHIVES:
        archive, marker = dest / archive_name, extracted_marker(dest, archive_name)
        if _marked(marker, archive):  # by an earlier run, killed or stopped later (it extracted them all again)
            print(f"{archive_name}: extracted into {dest} already")
        else:
            download_file(base + archive_name, archive, progress)
            try:
                count = safe_extract(archive, dest)
            except ArchiveError as err:
                raise ArchiveError(f"{err}; {_forget(archive)}") from None
            write_text_whole(marker, f"{count} members of {archive_name} extracted ({_stamp(archive)})\n")
            print(f"{archive_name}: {count} members extracted into {dest}")
        if not keep_archives:
            archive.unlink(missing_ok=True)
    return dest


def _forget(archive: Path) -> str:
    """Delete a refused or corrupt download so the next run fetches it again; say what happened."""
    try:
        archive.unlink()
    except OSError as err:
        return f"delete {archive} by hand ({err.strerror}) and run download again"
    return "the archive was deleted: run download again to fetch it anew"
