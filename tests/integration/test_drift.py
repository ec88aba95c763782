"""Drift of served traffic against the training reference, with Evidently, on generated images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
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


CALM_WINDOWS = 30


def test_calm_traffic_from_another_generated_set_rarely_drifts(
    raw_1000: Path, prepared_small: Path, tmp_path: Path
) -> None:
    """The false alarm rate: 1,000 images from the generator with another seed (the same
    camera, other lesions), 30 windows of 80 drawn from them, each judged against the
    reference of the 80 the model knows. Measured here: 0 of 30 (and 0 of 30 on 400 images of
    seed 8 before); the bound asserted, at most 3 (10 %), leaves room for a generator that
    changes a little."""
    reference = read_reference(prepared_small / "reference_stats.csv", "all")
    calm = read_window(log_traffic(raw_1000, tmp_path / "log", drifted=False), 10_000)
    assert len(calm) == 1000 and len(reference) == 80
    rng = np.random.default_rng(0)
    alarms = []
    for i in range(CALM_WINDOWS):
        window = calm.iloc[rng.choice(len(calm), 80, replace=False)].reset_index(drop=True)
        result = compute_drift(reference, window, SETTINGS, tmp_path / f"w{i}")
        if result.drifted:
            alarms.append(result.drifted_columns)
    assert len(alarms) <= CALM_WINDOWS // 10, alarms


def test_changed_images_are_drift(synth_raw: Path, prepared_small: Path, tmp_path: Path) -> None:
    reference = read_reference(prepared_small / "reference_stats.csv", "all")
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
