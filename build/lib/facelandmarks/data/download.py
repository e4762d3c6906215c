"""Resumable HTTP downloads and archive extraction that refuses members landing outside the destination."""

from __future__ import annotations

import os
import re
import sys
import tarfile
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath

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


def check_archive_member(archive: Path, member: tarfile.TarInfo, dest: Path) -> None:
    """Raise ArchiveError unless ``member`` lands (and points) inside ``dest``."""

    def fail(problem: str):
        raise ArchiveError(f"{archive}: member {member.name!r} {problem}; nothing extracted from this archive")

    dest = dest.resolve()
    name = PurePosixPath(member.name)
    if name.is_absolute() or re.match(r"^[A-Za-z]:", member.name):
        fail("has an absolute path")
    if ".." in name.parts:
        fail("has '..' in its path")
    target = (dest / name).resolve()
    if target != dest and dest not in target.parents:
        fail(f"would land outside {dest}")
    if member.issym() or member.islnk():
        link = PurePosixPath(member.linkname)
        if link.is_absolute():
            fail(f"links to the absolute path {member.linkname!r}")
        base = dest / name.parent if member.issym() else dest
        resolved = Path(os.path.normpath(base / link))
        if resolved != dest and dest not in resolved.parents:
            fail(f"links outside {dest} ({member.linkname!r})")
    elif not (member.isfile() or member.isdir()):
        fail("is a device, FIFO or other special file")


def safe_extract(archive: Path, dest: Path) -> int:
    """Extract a tar archive into ``dest`` after checking every member; returns the member count."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            for member in members:
                check_archive_member(archive, member, dest)
            extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(dest, members=members, **extra)
    except (tarfile.TarError, EOFError) as err:
        raise ArchiveError(f"{archive}: not a readable tar archive ({err})") from None
    return len(members)


def download_muct(dest: str | os.PathLike, base_url: str = MUCT_URL, progress: bool = True, keep_archives: bool = True) -> Path:
    """Fetch and extract the six official MUCT tarballs into ``dest``."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    base = base_url if base_url.endswith("/") else base_url + "/"
    for archive_name in MUCT_ARCHIVES:
        archive = download_file(base + archive_name, dest / archive_name, progress)
        count = safe_extract(archive, dest)
        print(f"{archive_name}: {count} members extracted into {dest}")
        if not keep_archives:
            archive.unlink()
    return dest
