"""The served model scored on clinicians' labels, per version, from the feedback store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dermaops.data.feedback import read_feedback, record_feedback
from dermaops.evaluation.live import LiveSettings, labelled, live_performance
from tests.unit.test_privacy import _photo


def _rows(version: str, dx: str, predicted: str, flag: str, n: int, day: int) -> pd.DataFrame:
    return pd.DataFrame({
        "feedback_id": [f"{version}-{dx}-{predicted}-{flag}-{day}-{i}" for i in range(n)],
        "dx": dx, "predicted_dx": predicted, "melanoma_flag": flag, "model_version": version,
        "created_at": [f"2026-11-{day:02d}T10:00:{i:02d}+00:00" for i in range(n)],
    })  # fmt: skip


def test_melanoma_sensitivity_is_scored_at_the_recorded_flags_per_version() -> None:
    feedback = pd.concat([
        _rows("3", "mel", "mel", "true", 5, 10), _rows("3", "mel", "nv", "false", 15, 11),
        _rows("3", "nv", "nv", "false", 27, 12), _rows("3", "bkl", "mel", "true", 3, 12),
        _rows("2", "mel", "mel", "true", 4, 1), _rows("", "mel", "nv", "false", 9, 1),
        _rows("3", "psoriasis", "nv", "false", 2, 12),
    ])  # fmt: skip
    live = live_performance(feedback, LiveSettings(bootstrap=500))
    assert set(live) == {"2", "3"}, "rows without a version or a known class are not scored"
    three = live["3"]
    assert (three["cases"], three["melanomas"]) == (50, 20)
    assert three["melanoma_sensitivity"] == pytest.approx(5 / 20)
    assert three["melanoma_specificity"] == pytest.approx(27 / 30)
    assert three["accuracy"] == pytest.approx(32 / 50)
    low, high = three["ci95"]["melanoma_sensitivity"]
    assert low < 0.25 < high and high - low > 0.2, "20 melanomas: a wide interval"
    assert np.isnan(live["2"]["melanoma_specificity"]), "no non-melanoma yet: undefined"


def test_the_window_keeps_the_latest_cases() -> None:
    early = _rows("3", "mel", "nv", "false", 10, 1)  # missed, long ago
    late = _rows("3", "mel", "mel", "true", 10, 20)
    live = live_performance(pd.concat([late, early]), LiveSettings(window=10, bootstrap=0))
    assert live["3"]["melanoma_sensitivity"] == 1.0
    # 10 of 10: the exact interval, not the point a bootstrap collapses to
    assert live["3"]["ci95"]["melanoma_sensitivity"] == [0.6915, 1.0]
    assert live["3"]["ci95"]["f1_macro"] == [None, None]  # no resamples asked for


def test_the_ui_records_the_flag_the_monitor_scores(tmp_path: Path) -> None:
    record_feedback(tmp_path, _photo(size=(600, 450)), "mel", "Dr A", "3", "nv",
                    melanoma_flag=True)  # fmt: skip
    record_feedback(tmp_path, _photo(size=(640, 480)), "mel", "Dr A", "3", "nv")  # no flag known
    rows = labelled(read_feedback(tmp_path))
    assert sorted(rows["flagged"].tolist()) == [False, True]  # unknown: the top class decides
