"""Drift of served traffic against the training reference, with Evidently, on generated images."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from dermaops.data.features import STAT_NAMES
from dermaops.monitoring.drift import (
    DriftError,
    DriftSettings,
    compute_drift,
    read_reference,
    read_window,
)
from tests.integration.traffic import log_traffic

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SETTINGS = DriftSettings(min_rows=20, reference_split="all")


def test_same_distribution_is_not_drift_and_changed_images_are(
    synth_raw: Path, prepared_small: Path, tmp_path: Path
) -> None:
    reference = read_reference(prepared_small / "reference_stats.csv", "all")
    normal = read_window(log_traffic(synth_raw, tmp_path / "normal", drifted=False), 500)
    assert len(normal) == 80 and len(reference) == 80
    calm = compute_drift(reference, normal, SETTINGS, tmp_path / "calm")
    assert not calm.drifted and calm.drift_share < SETTINGS.drift_share, calm.drifted_columns

    shifted = read_window(log_traffic(synth_raw, tmp_path / "shifted", drifted=True), 500)
    drift = compute_drift(reference, shifted, SETTINGS, tmp_path / "drift")
    assert drift.drifted and drift.drift_share >= SETTINGS.drift_share
    assert {"brightness", "sharpness"} <= set(drift.drifted_columns)
    assert set(drift.columns) == set(STAT_NAMES), "prepare's reference has no model outputs"
    saved = json.loads((tmp_path / "drift" / "drift_summary.json").read_text())
    assert saved["drifted"] is True and saved["columns"]["brightness"]["drifted"] is True
    assert (tmp_path / "drift" / "drift_report.html").stat().st_size > 10_000


def test_window_reads_rotated_logs_newest_last_and_needs_enough_rows(tmp_path: Path) -> None:
    folder = tmp_path / "log"
    folder.mkdir()
    row = dict.fromkeys(("brightness", "contrast", "saturation", "hue_mean", "hue_spread",
                         "sharpness", "width", "height", "aspect"), 0.5)  # fmt: skip
    (folder / "predictions.jsonl.2").write_text(json.dumps(row | {"prediction": "old"}) + "\n")
    (folder / "predictions.jsonl.1").write_text(
        json.dumps(row | {"prediction": "mid"}) + "\nnot json\n"
    )
    (folder / "predictions.jsonl").write_text(json.dumps(row | {"prediction": "new"}) + "\n")
    assert read_window(folder, 10)["prediction"].tolist() == ["old", "mid", "new"]
    assert read_window(folder, 2)["prediction"].tolist() == ["mid", "new"]
    with pytest.raises(DriftError, match="at least 20"):
        compute_drift(pd.DataFrame(), read_window(folder, 10), SETTINGS, tmp_path / "out")
    with pytest.raises(DriftError, match=r"not a reference_stats\.csv"):
        (tmp_path / "ref.csv").write_text("a,b\n1,2\n")
        read_reference(tmp_path / "ref.csv")
