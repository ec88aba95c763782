"""The quality gate."""

from __future__ import annotations

from typing import Any

from dermaops.gate import GateThresholds, check

GOOD: dict[str, Any] = {"f1_macro": 0.7, "ece": 0.05, "melanoma": {"test_sensitivity": 0.86}}


def test_passes_when_every_threshold_is_met() -> None:
    result = check(GOOD, GateThresholds())
    assert result.passed and result.reasons == []


def test_every_miss_is_a_reason() -> None:
    bad = {"f1_macro": 0.589, "ece": 0.3, "melanoma": {"test_sensitivity": 0.5495}}
    result = check(bad, GateThresholds())
    assert not result.passed
    assert result.reasons == [
        "macro-F1 0.5890 is not >= 0.6000",
        "melanoma sensitivity 0.5495 is not >= 0.8000",
        "calibration error (ECE) 0.3000 is not <= 0.1500",
    ]


def test_missing_or_nan_metrics_fail() -> None:
    unmeasured = {"f1_macro": 0.9, "melanoma": {"test_sensitivity": float("nan")}}
    result = check(unmeasured, GateThresholds())
    assert not result.passed
    assert result.reasons == [
        "melanoma sensitivity is missing from the metrics",
        "calibration error (ECE) is missing from the metrics",
    ]
    stricter = GateThresholds(min_f1_macro=0.75)
    assert check(GOOD, stricter).reasons == ["macro-F1 0.7000 is not >= 0.7500"]
