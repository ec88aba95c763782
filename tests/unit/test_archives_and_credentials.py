"""Safe zip extraction, checksum files and Kaggle credentials (no network)."""

from __future__ import annotations

import json
import stat
import zipfile
from pathlib import Path

import pytest

from dermaops.data.download import extract_once, safe_extract
from dermaops.data.fetch import read_checksums
from dermaops.data.sources import Credentials, kaggle_token
from dermaops.errors import ConfigError, CredentialsError, DownloadError, UnsafeArchiveError


def _zip(path: Path, members: dict[str, bytes], link: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        if link:
            info = zipfile.ZipInfo(link)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return path


def test_extracts_nested_members(tmp_path: Path) -> None:
    archive = _zip(
        tmp_path / "ok.zip", {"HAM10000_images_part_1/ISIC_1.jpg": b"x", "README.txt": b"y"}
    )
    written = safe_extract(archive, tmp_path / "out")
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in written) == [
        "HAM10000_images_part_1/ISIC_1.jpg",
        "README.txt",
    ]


@pytest.mark.parametrize(
    "name", ["../evil.txt", "a/../../evil.txt", "/etc/evil.txt", "C:/evil.txt"]
)
def test_path_traversal_is_refused_before_anything_is_written(tmp_path: Path, name: str) -> None:
    archive = _zip(tmp_path / "bad.zip", {"fine.txt": b"ok", name: b"owned"})
    with pytest.raises(UnsafeArchiveError, match="outside the folder"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "out" / "fine.txt").exists()
    assert not (tmp_path / "evil.txt").exists()


def test_symbolic_links_are_refused(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "link.zip", {"fine.txt": b"ok"}, link="passwd")
    with pytest.raises(UnsafeArchiveError, match="symbolic link"):
        safe_extract(archive, tmp_path / "out")


def test_a_corrupt_zip_is_a_clear_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"PK\x03\x04 this is not really a zip")
    with pytest.raises(DownloadError, match="not a readable zip"):
        safe_extract(broken, tmp_path / "out")


def test_extract_once_skips_an_archive_it_already_extracted(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "a.zip", {"f.txt": b"1"})
    out = tmp_path / "out"
    extract_once(archive, out)
    (out / "f.txt").write_text("edited by the user")
    extract_once(archive, out)
    assert (out / "f.txt").read_text() == "edited by the user"
    extract_once(archive, tmp_path / "elsewhere")
    assert (tmp_path / "elsewhere" / "f.txt").read_text() == "1"


def test_checksum_files(tmp_path: Path) -> None:
    sums = tmp_path / "SHA256SUMS"
    digest = "a" * 64
    sums.write_text(
        f"# mirror of 2026-11\n{digest}  HAM10000_images_part_1.zip\n{digest.upper()} *b.csv\n"
    )
    assert read_checksums(sums) == {"HAM10000_images_part_1.zip": digest, "b.csv": digest}
    sums.write_text("not-a-hash  file\n")
    with pytest.raises(ConfigError, match="SHA256  NAME"):
        read_checksums(sums)


def test_kaggle_token_from_env_then_file_else_clear_error(tmp_path: Path) -> None:
    env = {"KAGGLE_USERNAME": "ada", "KAGGLE_KEY": "k1"}
    assert kaggle_token(Credentials(env, tmp_path)) == ("ada", "k1")
    (tmp_path / ".kaggle").mkdir()
    (tmp_path / ".kaggle" / "kaggle.json").write_text(json.dumps({"username": "bo", "key": "k2"}))
    assert kaggle_token(Credentials({}, tmp_path)) == ("bo", "k2")
    (tmp_path / ".kaggle" / "kaggle.json").write_text("{not json")
    with pytest.raises(CredentialsError, match="not a Kaggle token file"):
        kaggle_token(Credentials({}, tmp_path))
    with pytest.raises(CredentialsError, match="Kaggle needs your API token"):
        kaggle_token(Credentials({}, tmp_path / "nobody"))
