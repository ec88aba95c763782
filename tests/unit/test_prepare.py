"""prepare: outputs, lesion-safe split, quarantine of bad files, skip by content hash."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dermaops.data.prepare import PrepareSettings, prepare
from dermaops.errors import DatasetLayoutError, PreparedDataError

SETTINGS = PrepareSettings(workers=2, max_share_gap=0.2)


@pytest.fixture
def raw(synth_raw: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "raw"
    shutil.copytree(synth_raw, copy)
    return copy


def test_outputs_split_and_cache(raw: Path, tmp_path: Path) -> None:
    result = prepare(raw, tmp_path / "prep", SETTINGS)
    out = result.out
    assert not result.skipped
    split_info = pd.read_csv(out / "split_info.csv")
    assert list(split_info.columns) == ["image_id", "lesion_id", "dx", "split"]
    assert set(split_info["split"]) == {"train", "val", "test"}
    assert (split_info.groupby("lesion_id")["split"].nunique() == 1).all()
    assert len(split_info) == 80

    index = pd.read_csv(out / "index.csv")
    images = np.load(out / "images.npy", mmap_mode="r")
    assert images.shape == (80, 225, 300, 3) and images.dtype == np.uint8
    assert all(images[row].std() > 5 for row in index["row"]), "every cached row holds a picture"

    stats = pd.read_csv(out / "reference_stats.csv")
    assert set(stats["image_id"]) == set(split_info["image_id"])
    assert stats["brightness"].between(0, 1).all() and (stats["width"] == 600).all()

    report = json.loads((out / "data_report.json").read_text())
    assert report["dataset"]["generated"] is True and "GENERATED" in report["dataset"]["notice"]
    assert report["split_check"]["shared_lesions"] == 0
    assert report["quarantined"] == []
    assert "GENERATED DATA" in (out / "data_report.md").read_text()
    assert (out / "class_distribution.png").read_bytes().startswith(b"\x89PNG")


def test_same_inputs_skip_force_redoes_changed_inputs_redo(raw: Path, tmp_path: Path) -> None:
    out = tmp_path / "prep"
    prepare(raw, out, SETTINGS)
    stamp = (out / "manifest.json").read_text()
    assert prepare(raw, out, SETTINGS).skipped
    assert not prepare(raw, out, SETTINGS, force=True).skipped
    assert (
        json.loads((out / "manifest.json").read_text())["fingerprint"]
        == json.loads(stamp)["fingerprint"]
    )
    image = next(raw.glob("HAM10000_images_part_1/*.jpg"))
    image.write_bytes(image.read_bytes() + b"\0")  # one byte more: other content, other hash
    assert not prepare(raw, out, SETTINGS).skipped
    assert not prepare(raw, out, PrepareSettings(workers=2, seed=9, max_share_gap=0.2)).skipped


def test_corrupt_truncated_and_non_image_files_are_quarantined(raw: Path, tmp_path: Path) -> None:
    jpgs = sorted(raw.glob("HAM10000_images_part_*/*.jpg"))
    truncated, corrupt, text = jpgs[0], jpgs[1], jpgs[2]
    truncated.write_bytes(truncated.read_bytes()[:2000])
    good = corrupt.read_bytes()
    middle = len(good) // 2
    corrupt.write_bytes(good[:middle] + b"\xff" * 1600 + good[middle + 1600 :])  # scan destroyed
    text.write_bytes(b"this is a note, not a photograph")
    (raw / "HAM10000_images_part_2" / "stray.jpg").write_bytes(b"junk")

    result = prepare(raw, tmp_path / "prep", SETTINGS)
    quarantined = {q["image_id"]: q["reason"] for q in result.report["quarantined"]}
    assert quarantined == {
        truncated.stem: "truncated_image",
        corrupt.stem: "unreadable_image",
        text.stem: "not_an_image",
        "stray": "orphan_file",
    }
    assert result.report["images"] == {"prepared": 77, "quarantined": 4}
    split_info = pd.read_csv(result.out / "split_info.csv")
    assert len(split_info) == 77 and not set(quarantined) & set(split_info["image_id"])


def test_refuses_to_overwrite_a_folder_it_did_not_write(raw: Path, tmp_path: Path) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.docx").write_text("years of work")
    with pytest.raises(PreparedDataError, match="not written by"):
        prepare(raw, foreign, SETTINGS)
    assert (foreign / "thesis.docx").read_text() == "years of work"


def test_not_a_data_set_leaves_nothing_behind(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetLayoutError):
        prepare(tmp_path / "empty", tmp_path / "prep", SETTINGS)
    assert not (tmp_path / "prep").exists()
    assert not list(tmp_path.glob(".prep*"))
