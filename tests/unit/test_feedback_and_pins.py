"""Clinician feedback merges as new lesions; split pins keep an earlier test split."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from dermaops.data.feedback import FEEDBACK_DATASET, merge_feedback, read_feedback
from dermaops.data.ingest import IngestSettings, ingest
from dermaops.data.prepare import PrepareSettings, prepare
from dermaops.data.split import extend_split, split_by_lesion
from dermaops.errors import ConfigError, DatasetLayoutError
from dermaops.settings import Home

SETTINGS = PrepareSettings(workers=2, max_share_gap=0.2)


def _feedback(folder: Path, jpeg: bytes, rows: list[tuple[str, str]]) -> Path:
    (folder / "images").mkdir(parents=True)
    for feedback_id, _ in rows:
        (folder / "images" / f"{feedback_id}.jpg").write_bytes(jpeg)
    frame = pd.DataFrame(
        {
            "feedback_id": [r[0] for r in rows],
            "image_file": [f"images/{r[0]}.jpg" for r in rows],
            "dx": [r[1] for r in rows],
            "clinician": "dr-test",
        }
    )
    frame.to_csv(folder / "feedback.csv", index=False)
    return folder


def test_a_lesions_split_never_changes_as_the_data_grows() -> None:
    """Pinned lesions keep their split; new lesions of the data set go to all three splits in
    the fractions' ratio (a champion never trained on them); feedback lesions to train or val."""
    dx = ["nv", "mel", "bkl", "bcc"]
    first = pd.DataFrame({"lesion_id": [f"L{i}" for i in range(400)], "dx": dx * 100})
    pins = split_by_lesion(first).set_axis(first["lesion_id"])
    grown = pd.concat([
        first,
        pd.DataFrame({"lesion_id": [f"N{i}" for i in range(200)], "dx": dx * 50}),
        pd.DataFrame({"lesion_id": [f"FB_{i}" for i in range(40)], "dx": dx * 10}),
    ], ignore_index=True)  # fmt: skip
    split = extend_split(grown, pins)
    assert (split[:400].to_numpy() == pins.to_numpy()).all(), "no pinned lesion moved"
    new = split[400:600].value_counts(normalize=True)
    assert new["train"] == pytest.approx(0.8, abs=0.03)
    assert new["test"] == pytest.approx(0.1, abs=0.03)
    assert set(split[600:]) == {"train", "val"}, "feedback never goes to test"
    again = extend_split(grown.sample(frac=1, random_state=3), pins)
    assert (again.sort_index() == split).all(), "a pure function of the rows, in any order"
    with pytest.raises(ValueError, match="unknown splits"):
        extend_split(grown, pd.Series(["holdout"], index=["L0"]))


def test_feedback_becomes_new_lesions_and_the_test_split_stays(
    synth_raw: Path, tmp_path: Path, jpeg_bytes: Callable[..., bytes]
) -> None:
    first = prepare(synth_raw, tmp_path / "first", SETTINGS)
    assert not first.skipped
    feedback = _feedback(tmp_path / "fb", jpeg_bytes(600, 450), [("a1", "mel"), ("a2", "bcc")])
    home = Home(tmp_path / "home")
    pins = tmp_path / "first" / "split_info.csv"
    settings = IngestSettings(
        source="path", path=str(synth_raw), feedback=str(feedback), split_pins=str(pins)
    )
    result = ingest(tmp_path / "raw", settings, home)
    assert result.feedback_images == 2 and result.images == 82

    prepare(tmp_path / "raw", tmp_path / "second", SETTINGS)
    info = {
        name: pd.read_csv(tmp_path / name / "split_info.csv").set_index("image_id")
        for name in ("first", "second")
    }
    old, new = info["first"], info["second"]
    assert (new.loc[old.index, "split"] == old["split"]).all(), "earlier lesions keep their split"
    added = new.loc[["FB_a1", "FB_a2"]]
    assert set(added["lesion_id"]) == {"FB_a1", "FB_a2"}
    assert set(added["split"]) <= {"train", "val"}
    index = pd.read_csv(tmp_path / "second" / "index.csv").set_index("image_id")
    assert (index.loc[["FB_a1", "FB_a2"], "dataset"] == FEEDBACK_DATASET).all()


def test_feedback_copies_of_test_images_are_refused_and_of_train_images_join_their_lesion(
    synth_raw: Path, tmp_path: Path
) -> None:
    """Clinicians send back images the model has seen, without metadata and re-encoded: a copy
    of a test image would leak the test split into training; a copy of a train image is that
    lesion, not a new one."""
    import io

    from PIL import Image

    prepare(synth_raw, tmp_path / "first", SETTINGS)
    first = pd.read_csv(tmp_path / "first" / "split_info.csv").set_index("image_id")
    in_test, in_train = (first.index[first["split"] == s][0] for s in ("test", "train"))
    folder = tmp_path / "fb"
    (folder / "images").mkdir(parents=True)
    for name, image_id in (("t1", in_test), ("r1", in_train)):
        original = Image.open(next(synth_raw.rglob(f"{image_id}.jpg"))).convert("RGB")
        copy = io.BytesIO()
        original.save(copy, "JPEG", quality=70)  # what a re-export would send
        (folder / "images" / f"{name}.jpg").write_bytes(copy.getvalue())
    pd.DataFrame({"feedback_id": ["t1", "r1"], "image_file": ["images/t1.jpg", "images/r1.jpg"],
                  "dx": ["mel", "nv"], "clinician": "dr-test"}).to_csv(
        folder / "feedback.csv", index=False)  # fmt: skip
    settings = IngestSettings(source="path", path=str(synth_raw), feedback=str(folder),
                              split_pins=str(tmp_path / "first" / "split_info.csv"))  # fmt: skip
    ingest(tmp_path / "raw", settings, Home(tmp_path / "home"))

    prepare(tmp_path / "raw", tmp_path / "second", SETTINGS)
    second = pd.read_csv(tmp_path / "second" / "split_info.csv").set_index("image_id")
    assert "FB_t1" not in second.index, "a copy of a test image never trains a model"
    report = json.loads((tmp_path / "second" / "data_report.json").read_text())
    (refused,) = [q for q in report["quarantined"] if q["image_id"] == "FB_t1"]
    assert refused["reason"] == "feedback_copy_of_test"
    assert first.loc[in_test, "lesion_id"] in refused["detail"]
    joined = second.loc["FB_r1"]
    assert joined["lesion_id"] == first.loc[in_train, "lesion_id"] and joined["split"] == "train"


def test_merging_never_writes_through_hard_links(
    synth_raw: Path, tmp_path: Path, jpeg_bytes: Callable[..., bytes]
) -> None:
    feedback = _feedback(tmp_path / "fb", jpeg_bytes(), [("b1", "nv")])
    before = (synth_raw / "HAM10000_metadata.csv").read_bytes()
    ingest(tmp_path / "raw", IngestSettings(source="path", path=str(synth_raw)), Home(tmp_path))
    linked = tmp_path / "raw" / "HAM10000_metadata.csv"
    assert linked.stat().st_ino == (synth_raw / "HAM10000_metadata.csv").stat().st_ino
    merge_feedback(tmp_path / "raw", feedback)
    assert (synth_raw / "HAM10000_metadata.csv").read_bytes() == before
    assert "FB_b1" in linked.read_text()


def test_unusable_feedback_names_each_bad_row(
    tmp_path: Path, jpeg_bytes: Callable[..., bytes]
) -> None:
    folder = _feedback(tmp_path / "fb", jpeg_bytes(), [("c1", "nv"), ("c2", "psoriasis")])
    frame = pd.read_csv(folder / "feedback.csv")
    frame.loc[len(frame)] = ["c1", "images/gone.jpg", "mel", "dr-test"]
    frame.to_csv(folder / "feedback.csv", index=False)
    with pytest.raises(DatasetLayoutError) as caught:
        read_feedback(folder)
    message = str(caught.value)
    assert "line 3: dx 'psoriasis'" in message
    assert "line 4: image_file 'images/gone.jpg' does not exist" in message
    assert "feedback_id repeated: c1" in message
    with pytest.raises(DatasetLayoutError, match="lacks the column"):
        (folder / "feedback.csv").write_text("id,dx\n1,nv\n")
        read_feedback(folder)


def test_ingest_settings_errors_are_clear(tmp_path: Path, synth_raw: Path) -> None:
    home = Home(tmp_path)
    with pytest.raises(ConfigError, match="needs the raw folder"):
        ingest(tmp_path / "a", IngestSettings(source="path"), home)
    with pytest.raises(ConfigError, match="does not exist"):
        ingest(tmp_path / "b", IngestSettings(source="path", path=str(tmp_path / "nope")), home)
    bad_pins = tmp_path / "pins.csv"
    bad_pins.write_text("image_id,split\nx,test\n")
    with pytest.raises(ConfigError, match="lesion_id and split"):
        settings = IngestSettings(source="path", path=str(synth_raw), split_pins=str(bad_pins))
        ingest(tmp_path / "c", settings, home)
    shutil.rmtree(tmp_path / "c")
