"""Downloads against a real loopback HTTP server that drops, truncates and refuses."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import httpx
import pytest

from dermaops.data.download import RemoteFile, RetryPolicy, download
from dermaops.errors import ChecksumMismatchError, DownloadError
from tests.fault_server import FaultyServer

pytestmark = pytest.mark.integration

BODY = os.urandom(3 * 2**20 + 123)
SHA = hashlib.sha256(BODY).hexdigest()


def _fetch(
    server: FaultyServer, tmp_path: Path, sleeps: list[float] | None = None, **remote: object
) -> Path:
    spec = {"url": f"{server.url}/f.zip", "name": "f.zip", "sha256": SHA} | remote
    with httpx.Client(timeout=10) as client:
        return download(
            client, RemoteFile(**spec),  # type: ignore[arg-type]
            tmp_path, RetryPolicy(attempts=3, backoff=0.5),
            sleep=(sleeps if sleeps is not None else []).append,
        )  # fmt: skip


def test_connection_reset_mid_transfer_resumes_with_range(
    http_server: FaultyServer, tmp_path: Path
) -> None:
    http_server.add("/f.zip", BODY, "reset")
    sleeps: list[float] = []
    path = _fetch(http_server, tmp_path, sleeps)
    assert path.read_bytes() == BODY
    first, second = http_server.hits("/f.zip")
    assert "Range" not in first
    assert int(second["Range"].removeprefix("bytes=").rstrip("-")) > 0
    assert sleeps == [0.5]
    assert not path.with_name("f.zip.part").exists()


def test_503_then_success_backs_off_exponentially(
    http_server: FaultyServer, tmp_path: Path
) -> None:
    http_server.add("/f.zip", BODY, "503", "503")
    sleeps: list[float] = []
    assert _fetch(http_server, tmp_path, sleeps).read_bytes() == BODY
    assert sleeps == [0.5, 1.0]


def test_truncated_body_is_completed(http_server: FaultyServer, tmp_path: Path) -> None:
    http_server.add("/f.zip", BODY, "truncate")
    assert _fetch(http_server, tmp_path, size=len(BODY)).read_bytes() == BODY
    assert len(http_server.hits("/f.zip")) == 2


def test_server_that_ignores_range_restarts_cleanly(
    http_server: FaultyServer, tmp_path: Path
) -> None:
    http_server.add("/f.zip", BODY, "reset", "no-range")
    assert _fetch(http_server, tmp_path).read_bytes() == BODY


def test_wrong_checksum_is_an_error_and_keeps_nothing(
    http_server: FaultyServer, tmp_path: Path
) -> None:
    http_server.add("/f.zip", BODY)
    with pytest.raises(ChecksumMismatchError, match="sha256"):
        _fetch(http_server, tmp_path, sha256="0" * 64)
    assert list(tmp_path.iterdir()) == []
    assert len(http_server.hits("/f.zip")) == 1, "a clean transfer with a bad hash is not retried"


def test_bad_checksum_after_a_resume_gets_one_clean_retry(
    http_server: FaultyServer, tmp_path: Path
) -> None:
    http_server.add("/f.zip", BODY, "reset")
    with pytest.raises(ChecksumMismatchError):
        _fetch(http_server, tmp_path, sha256="0" * 64)
    assert len(http_server.hits("/f.zip")) == 3  # reset, resume, one fresh transfer
    assert list(tmp_path.iterdir()) == []


def test_md5_and_size_are_checked_too(http_server: FaultyServer, tmp_path: Path) -> None:
    http_server.add("/f.zip", BODY)
    with pytest.raises(ChecksumMismatchError, match="bytes, the source says"):
        _fetch(http_server, tmp_path, sha256=None, size=len(BODY) + 1)
    md5 = hashlib.md5(BODY, usedforsecurity=False).hexdigest()
    assert _fetch(http_server, tmp_path, sha256=None, md5=md5).read_bytes() == BODY


def test_gives_up_after_the_policy_and_keeps_the_partial_file(
    http_server: FaultyServer, tmp_path: Path
) -> None:
    http_server.add("/f.zip", BODY, "reset", "503", "503")
    with pytest.raises(DownloadError, match="still failing after 3 tries"):
        _fetch(http_server, tmp_path)
    assert 0 < (tmp_path / "f.zip.part").stat().st_size < len(BODY)
    assert _fetch(http_server, tmp_path).read_bytes() == BODY  # the next run resumes


def test_not_found_is_not_retried(http_server: FaultyServer, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="HTTP 404"):
        _fetch(http_server, tmp_path, url=f"{http_server.url}/missing.zip")
    assert len(http_server.requests) == 1


def test_a_verified_file_is_not_downloaded_again(http_server: FaultyServer, tmp_path: Path) -> None:
    http_server.add("/f.zip", BODY)
    _fetch(http_server, tmp_path)
    _fetch(http_server, tmp_path)
    assert len(http_server.hits("/f.zip")) == 1
