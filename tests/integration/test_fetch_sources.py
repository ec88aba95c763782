"""`fetch` for each public source, against a loopback mirror with the source's paths."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from dermaops.data.download import RetryPolicy
from dermaops.data.fetch import fetch
from dermaops.data.loaders import load_raw
from dermaops.data.sources import Credentials
from dermaops.errors import CredentialsError
from tests.fault_server import FaultyServer
from tests.integration.mirrors import mirror_dataverse, zip_folder

pytestmark = pytest.mark.integration
FAST = RetryPolicy(attempts=3, backoff=0.01)


def test_dataverse_lists_verifies_md5_and_lays_out_for_prepare(
    http_server: FaultyServer, synth_raw: Path, tmp_path: Path
) -> None:
    mirror_dataverse(http_server, synth_raw, faults={11: ["reset"]})

    out = tmp_path / "raw"
    fetched = fetch("dataverse", out, tmp_path / "downloads", base_url=http_server.url, policy=FAST)
    assert sorted(p.name for p in fetched) == [
        "HAM10000_images_part_1.zip", "HAM10000_images_part_2.zip", "HAM10000_metadata.csv",
    ]  # fmt: skip
    assert http_server.hits("/api/access/datafile/13?format=original"), "tabular files as originals"
    assert not http_server.hits("/api/access/datafile/14")
    raw = load_raw(out)
    assert len(raw.records) == 80 and raw.quarantined == []

    before = len(http_server.requests)
    fetch("dataverse", out, tmp_path / "downloads", base_url=http_server.url, policy=FAST)
    assert len(http_server.requests) == before + 1, "a second run only lists; files are kept"


def test_isic2018_from_a_mirror(http_server: FaultyServer, tmp_path: Path) -> None:
    source = tmp_path / "isic-src"
    (source / "ISIC2018_Task3_Training_Input").mkdir(parents=True)
    from PIL import Image

    for i in range(3):
        Image.new("RGB", (60, 45), (120 + i, 80, 60)).save(
            source / "ISIC2018_Task3_Training_Input" / f"ISIC_002430{i}.jpg"
        )
    truth = "image,MEL,NV,BCC,AKIEC,BKL,DF,VASC\n" + "".join(
        f"ISIC_002430{i},{'1.0' if i == 0 else '0.0'},{'0.0' if i == 0 else '1.0'},0,0,0,0,0\n"
        for i in range(3)
    )
    truth_zip = io.BytesIO()
    with zipfile.ZipFile(truth_zip, "w") as zf:
        zf.writestr(
            "ISIC2018_Task3_Training_GroundTruth/ISIC2018_Task3_Training_GroundTruth.csv", truth
        )
    http_server.add("/2018/ISIC2018_Task3_Training_Input.zip", zip_folder(source), "503")
    http_server.add("/2018/ISIC2018_Task3_Training_GroundTruth.zip", truth_zip.getvalue())
    groupings = "image,lesion_id,diagnosis_confirm_type\n" + "".join(
        f"ISIC_002430{i},HAM_000000{min(i, 1)},histopathology\n" for i in range(3)
    )
    http_server.add("/2018/ISIC2018_Task3_Training_LesionGroupings.csv", groupings.encode())

    out = tmp_path / "raw"
    fetch("isic2018", out, tmp_path / "dl", base_url=f"{http_server.url}/2018", policy=FAST)
    raw = load_raw(out)
    assert raw.layout == "isic2018" and raw.lesion_grouped
    assert sorted(raw.records["dx"]) == ["mel", "nv", "nv"]


def test_kaggle_without_a_token_stops_before_any_request(
    http_server: FaultyServer, tmp_path: Path
) -> None:
    with pytest.raises(CredentialsError, match="Kaggle needs your API token"):
        fetch("kaggle", tmp_path / "raw", tmp_path / "dl", base_url=http_server.url,
              creds=Credentials({}, tmp_path))  # fmt: skip
    assert http_server.requests == []


def test_kaggle_sends_the_token_and_extracts(
    http_server: FaultyServer, synth_raw: Path, tmp_path: Path
) -> None:
    http_server.add(
        "/api/v1/datasets/download/kmader/skin-cancer-mnist-ham10000",
        zip_folder(synth_raw), auth=("ada", "secret"),
    )  # fmt: skip
    creds = Credentials({"KAGGLE_USERNAME": "ada", "KAGGLE_KEY": "secret"}, tmp_path)
    fetch(
        "kaggle",
        tmp_path / "raw",
        tmp_path / "dl",
        base_url=http_server.url,
        creds=creds,
        policy=FAST,
    )
    assert len(load_raw(tmp_path / "raw").records) == 80
