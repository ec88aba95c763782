"""Intervals at the boundaries, against values computed independently (R's binom.test)."""

from __future__ import annotations

import numpy as np
import pytest

from dermaops.evaluation.intervals import clopper_pearson, stratified_bootstrap
from dermaops.evaluation.subgroups import Scores, metric_intervals
from dermaops.labels import INDEX

MEL = INDEX["mel"]


@pytest.mark.parametrize(
    ("hits", "n", "expected"),
    [
        (4, 4, [0.3976, 1.0]),  # the demo's "100% on 4 melanomas"
        (0, 10, [0.0, 0.3085]),
        (10, 10, [0.6915, 1.0]),
        (1, 1, [0.025, 1.0]),
        (5, 20, [0.0866, 0.491]),
        (50, 100, [0.3983, 0.6017]),
    ],
)
def test_clopper_pearson_matches_the_exact_binomial_interval(
    hits: int, n: int, expected: list[float]
) -> None:
    assert clopper_pearson(hits, n) == pytest.approx(expected, abs=1e-4)


def test_no_cases_no_interval_and_impossible_counts_refused() -> None:
    assert clopper_pearson(0, 0) == [None, None]
    with pytest.raises(ValueError, match="5 hits of 4 cases"):
        clopper_pearson(5, 4)


def test_the_demos_four_of_four_no_longer_reads_as_certain() -> None:
    labels = np.array([MEL] * 4 + [INDEX["nv"]] * 40)
    s = Scores(labels, labels, labels == MEL)
    intervals = metric_intervals(s, 500, np.random.default_rng(0))
    assert intervals["melanoma_sensitivity"] == pytest.approx([0.3976, 1.0], abs=1e-4)
    assert intervals["melanoma_specificity"] == pytest.approx([0.9119, 1.0], abs=1e-4)
    assert intervals["f1_macro"] == [None, None]  # 4 melanomas: fewer than the floor of cases


def test_the_stratified_bootstrap_keeps_every_class_and_brackets_the_value() -> None:
    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1, 2], [10, 30, 60])
    correct = rng.random(100) < 0.7
    seen: set[tuple[int, ...]] = set()

    def share(rows: np.ndarray) -> float:
        counts = np.bincount(labels[rows], minlength=3)
        seen.add(tuple(counts.tolist()))
        return float(correct[rows].mean())

    low, high = stratified_bootstrap(labels, share, 300, np.random.default_rng(2))
    assert seen == {(10, 30, 60)}, "every resample keeps each class's count"
    assert low is not None and high is not None
    assert low < correct.mean() < high and 0.1 < high - low < 0.3
    few = np.repeat([0, 1], [3, 50])
    assert stratified_bootstrap(few, lambda rows: 0.5, 100, rng) == [None, None]
