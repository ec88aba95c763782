"""Drift of served traffic against the training reference, with Evidently, on generated images."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image, ImageEnhance, ImageFilter

from dermaops.features import image_stats
from dermaops.imaging import decode
from dermaops.models import Preprocessing
from dermaops.monitoring.drift import (
    DriftError,
    DriftSettings,
    compute_drift,
    read_reference,
    read_window,
)
from dermaops.serving.telemetry import InferenceLog
from dermaops.stem import cache_pixels

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SETTINGS = DriftSettings(min_rows=20, reference_split="all")


def _darker_blurred_bluer(image: Image.Image) -> Image.Image:
    image = ImageEnhance.Brightness(image).enhance(0.55).filter(ImageFilter.GaussianBlur(4))
    r, g, b = image.split()
    return Image.merge("RGB", (r, g, b.point(lambda v: min(255, int(v * 1.4)))))


def _traffic(raw: Path, folder: Path, drifted: bool) -> Path:
    """Log every generated image as the predictor would: its statistics and a class."""
    pre = Preprocessing(image_size=32)
    metadata = pd.read_csv(raw / "HAM10000_metadata.csv").set_index("image_id")
    log = InferenceLog(folder)
    for path in sorted(raw.rglob("*.jpg")):
        decoded = decode(path, min_size=pre.cache_size)
        image = _darker_blurred_bluer(decoded.image) if drifted else decoded.image
        stats = image_stats(cache_pixels(image, pre), decoded.original_size)
        log.write({**stats, "dx": metadata.loc[path.stem, "dx"], "confidence": 0.9})
    log.close()
    return folder


def test_same_distribution_is_not_drift_and_changed_images_are(
    synth_raw: Path, prepared_small: Path, tmp_path: Path
) -> None:
    reference = read_reference(prepared_small / "reference_stats.csv", "all")
    normal = read_window(_traffic(synth_raw, tmp_path / "normal", drifted=False), 500)
    assert len(normal) == 80 and len(reference) == 80
    calm = compute_drift(reference, normal, SETTINGS, tmp_path / "calm")
    assert not calm.drifted and calm.drift_share < SETTINGS.drift_share, calm.drifted_columns

    shifted = read_window(_traffic(synth_raw, tmp_path / "shifted", drifted=True), 500)
    drift = compute_drift(reference, shifted, SETTINGS, tmp_path / "drift")
    assert drift.drifted and drift.drift_share >= SETTINGS.drift_share
    assert {"brightness", "sharpness"} <= set(drift.drifted_columns)
    assert "dx" not in drift.drifted_columns, "the class mix did not change"
    saved = json.loads((tmp_path / "drift" / "drift_summary.json").read_text())
    assert saved["drifted"] is True and saved["columns"]["brightness"]["drifted"] is True
    assert (tmp_path / "drift" / "drift_report.html").stat().st_size > 10_000


def test_window_reads_rotated_logs_newest_last_and_needs_enough_rows(tmp_path: Path) -> None:
    folder = tmp_path / "log"
    folder.mkdir()
    row = dict.fromkeys(("brightness", "contrast", "saturation", "hue_mean", "hue_spread",
                         "sharpness", "width", "height", "aspect"), 0.5)  # fmt: skip
    (folder / "predictions.jsonl.2").write_text(json.dumps(row | {"dx": "old"}) + "\n")
    (folder / "predictions.jsonl.1").write_text(json.dumps(row | {"dx": "mid"}) + "\nnot json\n")
    (folder / "predictions.jsonl").write_text(json.dumps(row | {"dx": "new"}) + "\n")
    assert read_window(folder, 10)["dx"].tolist() == ["old", "mid", "new"]
    assert read_window(folder, 2)["dx"].tolist() == ["mid", "new"]
    with pytest.raises(DriftError, match="at least 20"):
        compute_drift(pd.DataFrame(), read_window(folder, 10), SETTINGS, tmp_path / "out")
    with pytest.raises(DriftError, match=r"not a reference_stats\.csv"):
        (tmp_path / "ref.csv").write_text("a,b\n1,2\n")
        read_reference(tmp_path / "ref.csv")
