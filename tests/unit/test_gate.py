"""The quality gate."""

from __future__ import annotations

from dermaops.evaluation.gate import GateFailedError, GateThresholds, check, compare
from dermaops.evaluation.result import EvaluationMetrics
from tests.formats import metrics

GOOD = metrics(f1_macro=0.7, ece=0.05, melanoma_sensitivity=0.86)


def test_passes_when_every_threshold_is_met() -> None:
    result = check(GOOD, GateThresholds())
    assert result.passed and result.reasons == []


def test_every_miss_is_a_reason() -> None:
    bad = metrics(f1_macro=0.589, ece=0.3, melanoma_sensitivity=0.5495)
    result = check(bad, GateThresholds())
    assert not result.passed
    assert result.reasons == [
        "macro-F1 0.5890 is not >= 0.6000",
        "melanoma sensitivity 0.5495 is not >= 0.8000",
        "calibration error (ECE) 0.3000 is not <= 0.1500",
    ]


def test_unmeasured_metrics_fail() -> None:
    unmeasured = metrics(f1_macro=0.9, ece=float("nan"), melanoma_sensitivity=float("nan"))
    result = check(unmeasured, GateThresholds())
    assert not result.passed
    assert result.reasons == [
        "melanoma sensitivity could not be measured",
        "calibration error (ECE) could not be measured",
    ]
    stricter = GateThresholds(min_f1_macro=0.75)
    assert check(GOOD, stricter).reasons == ["macro-F1 0.7000 is not >= 0.7500"]


def _scores(f1: float, mel: float) -> EvaluationMetrics:
    return metrics(f1_macro=f1, melanoma_sensitivity=mel)


def test_challenger_must_beat_the_champion_when_asked() -> None:
    assert compare(_scores(0.80, 0.9), _scores(0.80, 0.9), must_beat=False).passed
    tie = compare(_scores(0.80, 0.9), _scores(0.80, 0.9), must_beat=True)
    assert not tie.passed and tie.reasons == ["macro-F1 0.8000 does not beat the champion's 0.8000"]
    assert compare(_scores(0.81, 0.9), _scores(0.80, 0.9), must_beat=True).passed


def test_a_better_average_never_pays_for_missed_melanomas() -> None:
    result = compare(_scores(0.95, 0.70), _scores(0.80, 0.90), must_beat=True)
    assert result.reasons == ["melanoma sensitivity 0.7000 is below the champion's 0.9000"]
    assert compare(_scores(0.95, 0.89), _scores(0.80, 0.90), False, tolerance=0.02).passed


def test_gate_failure_names_every_reason() -> None:
    error = GateFailedError(["a", "b"])
    assert str(error) == "quality gate failed: a; b" and error.reasons == ["a", "b"]
