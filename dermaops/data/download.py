"""Resumable, verified HTTP downloads and safe zip extraction.

A download streams into ``NAME.part`` with a progress bar, resumes with an HTTP Range request
after a dropped connection, retries connection errors, 429 and 5xx with exponential backoff,
checks the size and hash where they are known, and only then renames to ``NAME``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import stat
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import httpx
from tqdm import tqdm

from dermaops.errors import (
    ChecksumMismatchError,
    CredentialsError,
    DownloadError,
    UnsafeArchiveError,
)

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


@dataclass(frozen=True)
class RemoteFile:
    """One file to fetch, with what its publisher says about its size and content."""

    url: str
    name: str
    size: int | None = None
    sha256: str | None = None
    md5: str | None = None
    auth: tuple[str, str] | None = None


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry: waits of backoff * 2**attempt, capped."""

    attempts: int = 6
    backoff: float = 1.0
    max_backoff: float = 60.0

    def delay(self, attempt: int) -> float:
        return min(self.max_backoff, self.backoff * 2.0**attempt)


class _RetryableError(Exception):
    """A failure worth another try (a dropped connection, 429, 5xx)."""


def download(
    client: httpx.Client,
    remote: RemoteFile,
    folder: Path,
    policy: RetryPolicy = RetryPolicy(),
    sleep: Callable[[float], None] = time.sleep,
) -> Path:
    """Fetch ``remote`` into ``folder``; a verified earlier download is kept as it is.

    Raises:
        DownloadError: still failing after ``policy.attempts`` tries, or a 4xx answer.
        CredentialsError: the server refused the credentials (401/403).
        ChecksumMismatchError: the finished file has the wrong size or hash.
    """
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / remote.name
    if final.exists() and _matches(final, remote):
        log.info("%s is already downloaded and verified", final)
        return final
    part = final.with_name(final.name + ".part")
    resumed = _fetch_with_retries(client, remote, part, policy, sleep)
    try:
        _verify_or_delete(part, remote)
    except ChecksumMismatchError:
        if not resumed:
            raise
        # Pieces from two transfers may not belong together: one clean transfer decides.
        log.warning("%s failed verification after a resume; downloading it once more", remote.name)
        _fetch_with_retries(client, remote, part, policy, sleep)
        _verify_or_delete(part, remote)
    part.replace(final)
    return final


def safe_extract(archive: Path, dest: Path) -> list[Path]:
    """Extract a zip into ``dest``, refusing absolute paths, ``..`` and links before writing.

    Raises:
        UnsafeArchiveError: a member would land outside ``dest`` or is a symbolic link.
        DownloadError: the file is not a readable zip.
    """
    root = dest.resolve()
    try:
        return _extract(archive, root)
    except zipfile.BadZipFile as e:
        raise DownloadError(
            f"{archive} is not a readable zip ({e}); delete it and fetch again"
        ) from e


def _extract(archive: Path, root: Path) -> list[Path]:
    with zipfile.ZipFile(archive) as zf:
        members = zf.infolist()
        for info in members:
            _check_member(info, root, archive)
        written = []
        for info in tqdm(members, desc=f"extract {archive.name}", unit="file", leave=False):
            target = root.joinpath(*PurePosixPath(info.filename).parts)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, target.open("wb") as out:
                shutil.copyfileobj(src, out, _CHUNK)
            written.append(target)
    return written


def extract_once(archive: Path, dest: Path) -> None:
    """:func:`safe_extract` unless this archive (same size and time) was extracted into ``dest``."""
    marker = archive.with_name(archive.name + ".extracted")
    st = archive.stat()
    stamp = {"dest": str(dest.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if marker.exists() and json.loads(marker.read_text()) == stamp:
        log.info("%s was already extracted into %s", archive.name, dest)
        return
    safe_extract(archive, dest)
    marker.write_text(json.dumps(stamp))


def _fetch_with_retries(
    client: httpx.Client,
    remote: RemoteFile,
    part: Path,
    policy: RetryPolicy,
    sleep: Callable[[float], None],
) -> bool:
    """Run transfers until the file is whole; True if any transfer resumed a partial file."""
    resumed = False
    for attempt in range(policy.attempts):
        try:
            resumed |= _transfer(client, remote, part)
            return resumed
        except (_RetryableError, httpx.TransportError) as e:
            if attempt + 1 == policy.attempts:
                raise DownloadError(
                    f"{remote.url}: still failing after {policy.attempts} tries ({e}); the "
                    f"partial file {part} is kept, so running again resumes it"
                ) from e
            wait = policy.delay(attempt)
            log.warning("%s: %s; retrying in %.1fs", remote.name, e, wait)
            sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover


def _transfer(client: httpx.Client, remote: RemoteFile, part: Path) -> bool:
    """One GET, resuming from the partial file's size; True when it resumed."""
    offset = part.stat().st_size if part.exists() else 0
    if remote.size is not None and offset == remote.size:
        return False
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    with client.stream("GET", remote.url, headers=headers, auth=remote.auth) as response:
        _check_status(response, remote, part)
        resumed = response.status_code == 206 and _range_start(response) == offset
        if offset and not resumed:
            log.info("%s: server ignored the range; starting over", remote.name)
        start = offset if resumed else 0
        served = _served_size(response, start)
        bar = tqdm(total=remote.size or served, initial=start, unit="B", unit_scale=True,
                   desc=remote.name, leave=False)  # fmt: skip
        with part.open("ab" if resumed else "wb") as f, bar:
            for chunk in response.iter_bytes(_CHUNK):
                f.write(chunk)
                bar.update(len(chunk))
    got = part.stat().st_size
    if served is not None and got < served:
        raise _RetryableError(f"body ended early ({got:,} of {served:,} bytes)")
    return resumed


def _check_status(response: httpx.Response, remote: RemoteFile, part: Path) -> None:
    code = response.status_code
    if code in (200, 206):
        return
    if code == 416:  # our partial file is longer than the remote: start over
        part.unlink(missing_ok=True)
        raise _RetryableError("range not satisfiable")
    if code == 429 or code >= 500:
        raise _RetryableError(f"HTTP {code}")
    if code in (401, 403):
        raise CredentialsError(f"{remote.url}: HTTP {code}; check the credentials for this source")
    raise DownloadError(f"{remote.url}: HTTP {code} {response.reason_phrase}")


def _range_start(response: httpx.Response) -> int | None:
    """The first byte of a ``Content-Range: bytes START-END/TOTAL`` answer."""
    value = response.headers.get("content-range", "")
    try:
        return int(value.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


def _served_size(response: httpx.Response, offset: int) -> int | None:
    """The file size the server promises (its Content-Length after ``offset``), if it says."""
    length = response.headers.get("content-length")
    return offset + int(length) if length and length.isdigit() else None


def _digests(path: Path) -> dict[str, str]:
    sha256, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        while block := f.read(_CHUNK):
            sha256.update(block)
            md5.update(block)
    return {"sha256": sha256.hexdigest(), "md5": md5.hexdigest()}


def _verify(path: Path, remote: RemoteFile) -> None:
    size = path.stat().st_size
    if remote.size is not None and size != remote.size:
        raise ChecksumMismatchError(
            f"{remote.name}: {size:,} bytes, the source says {remote.size:,}"
        )
    if remote.sha256 is None and remote.md5 is None:
        log.warning("%s: the source publishes no hash; only the size was checked", remote.name)
        return
    digests = _digests(path)
    for algorithm, expected in (("sha256", remote.sha256), ("md5", remote.md5)):
        if expected is not None and digests[algorithm] != expected.lower():
            raise ChecksumMismatchError(
                f"{remote.name}: {algorithm} {digests[algorithm]} but the source says {expected}; "
                "the corrupt file was deleted"
            )


def _verify_or_delete(path: Path, remote: RemoteFile) -> None:
    try:
        _verify(path, remote)
    except ChecksumMismatchError:
        path.unlink(missing_ok=True)
        raise


def _matches(path: Path, remote: RemoteFile) -> bool:
    try:
        _verify(path, remote)
    except ChecksumMismatchError:
        return False
    return True


def _check_member(info: zipfile.ZipInfo, root: Path, archive: Path) -> None:
    name = info.filename
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or (parts and ":" in parts[0]) or ".." in parts:
        raise UnsafeArchiveError(f"{archive.name}: member {name!r} points outside the folder")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise UnsafeArchiveError(f"{archive.name}: member {name!r} is a symbolic link")
    target = root.joinpath(*parts).resolve()
    if not target.is_relative_to(root):
        raise UnsafeArchiveError(f"{archive.name}: member {name!r} points outside the folder")
