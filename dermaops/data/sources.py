"""The public homes of HAM10000 and how to ask each for its files.

``--base-url`` swaps the host part for a mirror with the same paths (hospital networks
often have one), so tests and air-gapped sites use the same code.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from dermaops.data.download import RemoteFile
from dermaops.errors import CredentialsError, DownloadError

log = logging.getLogger(__name__)

ISIC_BASE = "https://isic-challenge-data.s3.amazonaws.com/2018"
ISIC_FILES = (
    "ISIC2018_Task3_Training_Input.zip",
    "ISIC2018_Task3_Training_GroundTruth.zip",
    "ISIC2018_Task3_Training_LesionGroupings.csv",
)
DATAVERSE_BASE = "https://dataverse.harvard.edu"
DATAVERSE_DOI = "doi:10.7910/DVN/DBW86T"
DATAVERSE_FILES = (
    "HAM10000_images_part_1.zip",
    "HAM10000_images_part_2.zip",
    "HAM10000_metadata.tab",
    "HAM10000_metadata.csv",
)
KAGGLE_BASE = "https://www.kaggle.com"
KAGGLE_DATASET = "kmader/skin-cancer-mnist-ham10000"
SOURCES = ("isic2018", "dataverse", "kaggle")


@dataclass(frozen=True)
class Credentials:
    """Where to look for a Kaggle API token."""

    environ: Mapping[str, str]
    home: Path

    @classmethod
    def from_env(cls) -> Credentials:
        return cls(dict(os.environ), Path.home())


def resolve(
    source: str, client: httpx.Client, base_url: str | None, creds: Credentials
) -> list[RemoteFile]:
    """The files to download for ``source``, with whatever size and hash it publishes."""
    if source == "isic2018":
        return isic2018_files(base_url or ISIC_BASE)
    if source == "dataverse":
        return dataverse_files(client, base_url or DATAVERSE_BASE)
    if source == "kaggle":
        return kaggle_files(base_url or KAGGLE_BASE, kaggle_token(creds))
    raise ValueError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")


def isic2018_files(base_url: str) -> list[RemoteFile]:
    """ISIC 2018 Task 3 training images, one-hot ground truth, lesion groupings (no hashes)."""
    return [RemoteFile(f"{base_url.rstrip('/')}/{name}", name) for name in ISIC_FILES]


def dataverse_files(client: httpx.Client, base_url: str) -> list[RemoteFile]:
    """HAM10000's images and metadata from Harvard Dataverse, with sizes and checksums.

    Tabular files are fetched as their saved original (``format=original``), since the
    published checksum is that of the original upload.
    """
    base = base_url.rstrip("/")
    url = f"{base}/api/datasets/:persistentId/"
    try:
        response = client.get(url, params={"persistentId": DATAVERSE_DOI})
        response.raise_for_status()
        listing = response.json()["data"]["latestVersion"]["files"]
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as e:
        raise DownloadError(f"cannot list the Dataverse data set at {url}: {e}") from e
    files = [_dataverse_file(base, entry["dataFile"]) for entry in listing]
    wanted = [f for f in files if f.name in DATAVERSE_FILES]
    if not wanted:
        names = ", ".join(f.name for f in files)
        raise DownloadError(f"the Dataverse listing has none of {DATAVERSE_FILES}: {names}")
    return wanted


def _dataverse_file(base: str, data_file: Mapping[str, Any]) -> RemoteFile:
    checksum = data_file.get("checksum") or {}
    algorithm = str(checksum.get("type", "")).replace("-", "").lower()
    digest = checksum.get("value")
    url = f"{base}/api/access/datafile/{data_file['id']}"
    name, size = data_file["filename"], data_file.get("filesize")
    if data_file.get("originalFileName"):
        url += "?format=original"
        name, size = data_file["originalFileName"], data_file.get("originalFileSize")
    return RemoteFile(
        url,
        name,
        size=int(size) if size is not None else None,
        sha256=digest if algorithm == "sha256" else None,
        md5=digest if algorithm == "md5" else None,
    )


def kaggle_files(base_url: str, token: tuple[str, str]) -> list[RemoteFile]:
    """The Kaggle data set as one zip, fetched with the user's API token."""
    url = f"{base_url.rstrip('/')}/api/v1/datasets/download/{KAGGLE_DATASET}"
    return [RemoteFile(url, f"{KAGGLE_DATASET.split('/')[1]}.zip", auth=token)]


def kaggle_token(creds: Credentials) -> tuple[str, str]:
    """(username, key) from KAGGLE_USERNAME/KAGGLE_KEY or kaggle.json.

    Raises:
        CredentialsError: no token anywhere, with the steps to make one.
    """
    env = creds.environ
    if env.get("KAGGLE_USERNAME") and env.get("KAGGLE_KEY"):
        return env["KAGGLE_USERNAME"], env["KAGGLE_KEY"]
    config_dir = Path(env["KAGGLE_CONFIG_DIR"]) if env.get("KAGGLE_CONFIG_DIR") else None
    path = (config_dir or creds.home / ".kaggle") / "kaggle.json"
    try:
        data = json.loads(path.read_text())
        return str(data["username"]), str(data["key"])
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CredentialsError(f"{path} is not a Kaggle token file: {e}") from e
    raise CredentialsError(
        "Kaggle needs your API token and none was found. On kaggle.com open Settings > API > "
        f"Create New Token and save kaggle.json as {path} (chmod 600), or set KAGGLE_USERNAME "
        "and KAGGLE_KEY. Or use --source dataverse or --source isic2018, which need no account."
    )
