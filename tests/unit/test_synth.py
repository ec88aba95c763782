"""The generated set: HAM10000's schema and proportions, lesion multiplicity, determinism."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from dermaops.data.schema import DATASET_COLUMN, LOCALIZATIONS, METADATA_COLUMNS, SYNTHETIC_DATASET
from dermaops.data.synth import SynthSettings, synthesize
from dermaops.labels import CLASSES, HAM10000_SHARES


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            h.update(path.relative_to(root).as_posix().encode() + path.read_bytes())
    return h.hexdigest()


def test_kaggle_layout_and_schema(synth_raw: Path) -> None:
    metadata = pd.read_csv(synth_raw / "HAM10000_metadata.csv")
    assert list(metadata.columns) == [*METADATA_COLUMNS, DATASET_COLUMN]
    assert (metadata[DATASET_COLUMN] == SYNTHETIC_DATASET).all()
    assert set(metadata["dx"]) == set(CLASSES)
    assert set(metadata["localization"]) <= set(LOCALIZATIONS)
    assert set(metadata["sex"]) <= {"male", "female", "unknown"}
    assert metadata["age"].isna().any(), "HAM10000 misses a few ages; so does the generated set"
    assert (metadata.groupby("lesion_id").size() > 1).any(), "some lesions need several images"
    assert metadata.groupby("lesion_id")["dx"].nunique().eq(1).all()
    assert metadata["image_id"].str.fullmatch(r"ISIC_\d{7}").all()
    assert metadata["lesion_id"].str.fullmatch(r"HAM_\d{7}").all()
    files = sorted(p.stem for p in synth_raw.glob("HAM10000_images_part_[12]/*.jpg"))
    assert files == sorted(metadata["image_id"])
    with Image.open(next(synth_raw.glob("HAM10000_images_part_1/*.jpg"))) as image:
        assert image.size == (600, 450) and image.format == "JPEG"


def test_class_proportions_follow_ham10000() -> None:
    from dermaops.data.synth import class_counts

    counts = class_counts(10015)
    assert sum(counts.values()) == 10015
    for dx, share in HAM10000_SHARES.items():
        assert counts[dx] / 10015 == pytest.approx(share, abs=0.002)
    assert min(class_counts(40).values()) >= 3


@pytest.mark.slow
def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    synthesize(a, SynthSettings(n=40, seed=5, workers=2))
    synthesize(b, SynthSettings(n=40, seed=5, workers=1))
    synthesize(c, SynthSettings(n=40, seed=6, workers=2))
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)


def test_too_small_a_set_is_refused() -> None:
    with pytest.raises(ValueError, match="greater than or equal to 40"):
        SynthSettings(n=10)
