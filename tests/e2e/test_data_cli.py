"""The data commands end to end, through the installed `dermaops` script."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import zipfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from dermaops.data.sources import DATAVERSE_DOI
from tests.fault_server import FaultyServer

pytestmark = pytest.mark.e2e
Cli = Callable[..., subprocess.CompletedProcess[str]]


def test_synth_then_prepare_then_skip(cli: Cli, tmp_path: Path) -> None:
    raw, prepared = tmp_path / "S", tmp_path / "P"
    cli("data", "synth", "--out", str(raw), "--n", "60", "--seed", "1")
    first = cli("data", "prepare", "--raw", str(raw), "--out", str(prepared))
    assert "prepared:" in first.stdout and "GENERATED DATA" in first.stdout
    split_info = pd.read_csv(prepared / "split_info.csv")
    assert split_info.groupby("lesion_id")["split"].nunique().max() == 1
    again = cli("data", "prepare", "--raw", str(raw), "--out", str(prepared))
    assert "up to date" in again.stdout


def test_defaults_live_under_dermaops_home(cli: Cli, dermaops_home: Path) -> None:
    cli("data", "synth", "--n", "40")
    cli("data", "prepare", "--raw", str(dermaops_home / "data" / "synth"))
    assert (dermaops_home / "data" / "prepared" / "split_info.csv").is_file()


def test_user_errors_are_one_line_and_exit_1(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = cli("data", "prepare", "--raw", str(tmp_path / "empty"), check=False)
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error:") and "Traceback" not in result.stderr
    kaggle = cli("data", "fetch", "--source", "kaggle", check=False)
    assert kaggle.returncode == 1 and "Kaggle needs your API token" in kaggle.stderr
    unknown = cli("data", "fetch", "--source", "imagenet", check=False)
    assert unknown.returncode == 2 and "isic2018, dataverse, kaggle" in unknown.stderr
    noisy = cli("--log-level", "LOUD", "data", "synth", check=False)
    assert noisy.returncode == 2 and "--log-level" in noisy.stderr


def test_fetch_from_a_mirror_then_prepare(
    cli: Cli, http_server: FaultyServer, synth_raw: Path, tmp_path: Path
) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path in sorted(synth_raw.rglob("*.jpg")):
            zf.write(path, path.relative_to(synth_raw).as_posix())
    images, metadata = buf.getvalue(), (synth_raw / "HAM10000_metadata.csv").read_bytes()
    listing = [
        {"dataFile": {"id": 1, "filename": "HAM10000_images_part_1.zip", "filesize": len(images),
                      "checksum": {"type": "MD5", "value": hashlib.md5(images).hexdigest()}}},
        {"dataFile": {"id": 2, "filename": "HAM10000_metadata.csv", "filesize": len(metadata)}},
    ]  # fmt: skip
    http_server.add("/api/access/datafile/1", images, "truncate", "503")
    http_server.add("/api/access/datafile/2", metadata)
    body = json.dumps({"data": {"latestVersion": {"files": listing}}}).encode()
    http_server.add(f"/api/datasets/:persistentId/?persistentId={DATAVERSE_DOI}", body)

    raw = tmp_path / "raw"
    cli("data", "fetch", "--source", "dataverse", "--base-url", http_server.url, "--out", str(raw))
    result = cli("data", "prepare", "--raw", str(raw), "--out", str(tmp_path / "P"))
    assert "80 images, 0 quarantined" in result.stdout


@pytest.mark.slow
def test_bench_prepare_prints_a_ratio_and_writes_json(cli: Cli, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = cli("bench", "prepare", "--n", "40", "--json", str(out))
    data = json.loads(out.read_text())
    assert data["images"] == 40 and data["ratio"] > 0
    assert data["prepare_images_per_s"] > 0 and data["baseline_images_per_s"] > 0
    assert f"{data['ratio']}x the plain PIL loop" in result.stdout
