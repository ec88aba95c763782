"""Metrics, temperature scaling and the melanoma operating point."""

from __future__ import annotations

import numpy as np
import pytest

from dermaops.evaluation.calibration import (
    apply_temperature,
    choose_threshold,
    fit_temperature,
    rates,
)
from dermaops.evaluation.metrics import expected_calibration_error, summary
from dermaops.labels import CLASSES


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_summary_keys_and_perfect_predictions() -> None:
    labels = np.repeat(np.arange(7), 5)
    probs = np.eye(7)[labels] * 0.94 + 0.01
    result = summary(labels, probs)
    assert (
        result["accuracy"] == 1.0 and result["f1_macro"] == 1.0 and result["auc_macro_ovr"] == 1.0
    )
    assert set(result["per_class"]) == set(CLASSES)
    assert result["per_class"]["mel"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 5}


def test_temperature_undoes_overconfidence() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 1.5, size=(4000, 7))
    labels = np.array([rng.choice(7, p=p) for p in _softmax(logits)])
    overconfident = _softmax(logits * 3.0)
    t = fit_temperature(overconfident, labels)
    assert t == pytest.approx(3.0, rel=0.15)
    calibrated = apply_temperature(overconfident, t)
    assert expected_calibration_error(labels, calibrated) < expected_calibration_error(
        labels, overconfident
    )
    assert np.array_equal(calibrated.argmax(axis=1), overconfident.argmax(axis=1))


def test_threshold_reaches_the_target_sensitivity_most_specifically() -> None:
    p = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05])
    positive = np.array([True, True, False, True, False, True, False, False, False, False])
    point = choose_threshold(p, positive, 0.75)
    # 0.6 is the most specific score that catches 3 of 4; the threshold sits below it, in the gap.
    assert point.threshold == pytest.approx(0.55) and point.val_sensitivity == 0.75
    assert point.val_specificity == pytest.approx(5 / 6)
    assert rates(p, positive, 0.0) == (1.0, 0.0)
    with pytest.raises(ValueError, match="no melanoma"):
        choose_threshold(p, np.zeros(10, bool), 0.85)


def test_a_confident_model_gets_a_threshold_with_margin() -> None:
    """All positives near 1, all negatives low: the threshold lands in the gap, not at 0.99x."""
    p = np.array([0.999, 0.998, 0.997, 0.996, 0.3, 0.2, 0.1])
    positive = np.array([True, True, True, True, False, False, False])
    point = choose_threshold(p, positive, 0.85)
    assert point.threshold == pytest.approx((0.996 + 0.3) / 2)
    assert (point.val_sensitivity, point.val_specificity) == (1.0, 1.0)
