"""The Kaggle/Dataverse and ISIC 2018 layouts, and what gets quarantined when."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from dermaops.data.loaders import load_raw
from dermaops.errors import DatasetLayoutError

ROWS = [
    ("HAM_0000001", "ISIC_0000001", "nv", "follow_up", "45", "male", "back"),
    ("HAM_0000001", "ISIC_0000002", "nv", "follow_up", "45", "male", "back"),
    ("HAM_0000002", "ISIC_0000003", "mel", "histo", "", "female", "face"),
    ("HAM_0000003", "ISIC_0000004", "bkl", "consensus", "70", "unknown", "trunk"),
]
COLUMNS = ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"]


@pytest.fixture
def kaggle(tmp_path: Path, jpeg_bytes: Callable[..., bytes]) -> Path:
    root = tmp_path / "kaggle"
    for i, row in enumerate(ROWS):
        folder = root / f"HAM10000_images_part_{1 + i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{row[1]}.jpg").write_bytes(jpeg_bytes())
    pd.DataFrame(ROWS, columns=COLUMNS).to_csv(root / "HAM10000_metadata.csv", index=False)
    return root


def test_kaggle_layout(kaggle: Path) -> None:
    raw = load_raw(kaggle)
    assert raw.layout == "ham10000" and raw.lesion_grouped and not raw.generated
    assert list(raw.records["image_id"]) == [r[1] for r in ROWS]
    assert raw.records["age"].isna().sum() == 1
    assert raw.records["dataset"].eq("HAM10000").all()
    assert all(Path(p).is_file() for p in raw.records["path"])
    assert raw.quarantined == []


def test_dataverse_tab_export_reads_the_same(kaggle: Path) -> None:
    metadata = kaggle / "HAM10000_metadata.csv"
    pd.read_csv(metadata, dtype=str).to_csv(kaggle / "HAM10000_metadata.tab", sep="\t", index=False)
    metadata.unlink()
    assert list(load_raw(kaggle).records["image_id"]) == [r[1] for r in ROWS]


def test_kaggles_duplicate_lowercase_folders_are_not_orphans(kaggle: Path) -> None:
    lower = kaggle / "ham10000_images_part_1"
    lower.mkdir()
    for jpg in (kaggle / "HAM10000_images_part_1").iterdir():
        (lower / jpg.name).write_bytes(jpg.read_bytes())
    raw = load_raw(kaggle)
    assert raw.quarantined == []
    assert all("HAM10000_images" in p for p in raw.records["path"])


def test_bad_rows_and_stray_files_are_quarantined_with_reasons(
    kaggle: Path, jpeg_bytes: Callable[..., bytes]
) -> None:
    rows = [
        *ROWS,
        ("HAM_0000009", "ISIC_0000009", "melanoma?", "histo", "50", "male", "back"),  # unknown dx
        ("HAM_0000001", "ISIC_0000002", "nv", "follow_up", "45", "male", "back"),  # duplicate id
        ("HAM_0000010", "ISIC_0000010", "df", "histo", "50", "male", "back"),  # no image file
        ("", "ISIC_0000011", "df", "histo", "50", "male", "back"),  # no lesion id
    ]
    pd.DataFrame(rows, columns=COLUMNS).to_csv(kaggle / "HAM10000_metadata.csv", index=False)
    (kaggle / "HAM10000_images_part_1" / "ISIC_0099999.jpg").write_bytes(jpeg_bytes())
    raw = load_raw(kaggle)
    reasons = sorted((q.reason, q.image_id) for q in raw.quarantined)
    assert reasons == [
        ("duplicate_image_id", "ISIC_0000002"),
        ("duplicate_image_id", "ISIC_0000002"),
        ("missing_field", "ISIC_0000011"),
        ("missing_image", "ISIC_0000010"),
        ("orphan_file", "ISIC_0099999"),
        ("unknown_dx", "ISIC_0000009"),
    ]
    assert set(raw.records["image_id"]) == {"ISIC_0000001", "ISIC_0000003", "ISIC_0000004"}


def test_missing_columns_name_what_is_missing(kaggle: Path) -> None:
    pd.DataFrame(ROWS, columns=COLUMNS).drop(columns=["lesion_id", "dx"]).to_csv(
        kaggle / "HAM10000_metadata.csv", index=False
    )
    with pytest.raises(DatasetLayoutError, match="lesion_id, dx"):
        load_raw(kaggle)


def test_unknown_layout_and_missing_folder_are_clear(tmp_path: Path) -> None:
    with pytest.raises(DatasetLayoutError, match="does not exist"):
        load_raw(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetLayoutError, match="dermaops data synth"):
        load_raw(tmp_path / "empty")


@pytest.fixture
def isic(tmp_path: Path, jpeg_bytes: Callable[..., bytes]) -> Path:
    root = tmp_path / "isic"
    images = root / "ISIC2018_Task3_Training_Input"
    images.mkdir(parents=True)
    (images / "ATTRIBUTION.txt").write_text("images by ISIC")
    truth = ["image,MEL,NV,BCC,AKIEC,BKL,DF,VASC"]
    mel, nv, nv_and_bcc = "1,0,0,0,0,0,0", "0.0,1.0,0.0,0.0,0.0,0.0,0.0", "0,1,1,0,0,0,0"
    for i, hot in enumerate([mel, nv, nv, nv_and_bcc]):
        (images / f"ISIC_002430{i}.jpg").write_bytes(jpeg_bytes())
        truth.append(f"ISIC_002430{i},{hot}")
    truth_dir = root / "ISIC2018_Task3_Training_GroundTruth"
    truth_dir.mkdir()
    (truth_dir / "ISIC2018_Task3_Training_GroundTruth.csv").write_text("\n".join(truth) + "\n")
    serial = "serial imaging showing no change"
    (root / "ISIC2018_Task3_Training_LesionGroupings.csv").write_text(
        "image,lesion_id,diagnosis_confirm_type\n"
        "ISIC_0024300,HAM_0000550,histopathology\n"
        f"ISIC_0024301,HAM_0003577,{serial}\n"
        f"ISIC_0024302,HAM_0003577,{serial}\n"
        "ISIC_0024303,HAM_0000001,histopathology\n"
    )
    return root


def test_isic2018_layout_with_lesion_groupings(isic: Path) -> None:
    raw = load_raw(isic)
    assert raw.layout == "isic2018" and raw.lesion_grouped
    records = raw.records.set_index("image_id")
    assert records.loc["ISIC_0024300", "dx"] == "mel"
    assert records.loc["ISIC_0024301", "lesion_id"] == records.loc["ISIC_0024302", "lesion_id"]
    assert [(q.image_id, q.reason) for q in raw.quarantined] == [
        ("ISIC_0024303", "ambiguous_label")
    ]


def test_isic2018_without_groupings_says_so_loudly(
    isic: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (isic / "ISIC2018_Task3_Training_LesionGroupings.csv").unlink()
    with caplog.at_level(logging.WARNING):
        raw = load_raw(isic)
    assert not raw.lesion_grouped
    assert "NO LESION GROUPING" in caplog.text
    assert (raw.records["lesion_id"] == raw.records["image_id"]).all()
