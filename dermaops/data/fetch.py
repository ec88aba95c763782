"""``dermaops data fetch``: download a public HAM10000 source and lay it out for prepare."""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path

import httpx

from dermaops.data.download import RetryPolicy, download, extract_once
from dermaops.data.sources import Credentials, resolve
from dermaops.errors import ConfigError

log = logging.getLogger(__name__)

TIMEOUT = httpx.Timeout(30.0, read=120.0)


def fetch(
    source: str,
    out: Path,
    downloads: Path,
    base_url: str | None = None,
    checksums: Path | None = None,
    policy: RetryPolicy = RetryPolicy(),
    creds: Credentials | None = None,
) -> list[Path]:
    """Download ``source`` into ``downloads`` (kept for resuming) and lay it out in ``out``.

    Zips are extracted safely into ``out``; other files are copied there.

    Args:
        source: isic2018, dataverse or kaggle.
        out: the raw data folder ``dermaops data prepare --raw`` reads.
        downloads: where archives and partial downloads live.
        base_url: a mirror with the source's paths.
        checksums: a ``sha256sum``-style file whose hashes the downloads must match.
        policy: retries and backoff.
        creds: where to find a Kaggle token (default: the environment and ~/.kaggle).

    Returns:
        The downloaded files.
    """
    known = read_checksums(checksums) if checksums else {}
    with httpx.Client(follow_redirects=True, timeout=TIMEOUT) as client:
        remotes = resolve(source, client, base_url, creds or Credentials.from_env())
        fetched = []
        for remote in remotes:
            pinned = dataclasses.replace(remote, sha256=known.get(remote.name, remote.sha256))
            fetched.append(download(client, pinned, downloads / source, policy))
    out.mkdir(parents=True, exist_ok=True)
    for path in fetched:
        if path.suffix.lower() == ".zip":
            extract_once(path, out)
        else:
            shutil.copy2(path, out / path.name)
    log.info("%s is ready in %s: run `dermaops data prepare --raw %s`", source, out, out)
    return fetched


def read_checksums(path: Path) -> dict[str, str]:
    """Parse ``HASH  NAME`` lines (sha256sum's format) into {name: hash}."""
    result: dict[str, str] = {}
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise ConfigError(f"cannot read checksums file {path}: {e}") from e
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or len(parts[0]) != 64:
            raise ConfigError(f"{path}:{number}: expected 'SHA256  NAME', got {line!r}")
        result[parts[1].strip().lstrip("*")] = parts[0].lower()
    return result
