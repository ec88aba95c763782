"""95 % intervals that mean what they say, on few cases as on many.

A percentile bootstrap of a proportion collapses to a point when every case is a hit (or every
one a miss): 4 melanomas of 4 caught gives "100 % (100 % to 100 %)", though a true sensitivity
near 40 % would catch all four about one time in forty. So:

- proportions (sensitivity, specificity, accuracy) get the exact Clopper-Pearson interval,
  which is never narrower than it should be: 4 of 4 gives 39.8 % to 100 %, 0 of 10 gives 0 % to
  30.8 %;
- macro-F1, which is no proportion, gets a percentile bootstrap stratified by true class (each
  resample keeps every class's count, so a rare class never vanishes from a draw), and none at
  all where the bootstrap cannot bound it: a class present with fewer than ``min_class`` cases,
  or every resample giving the same value (a perfect score on few cases).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

LEVEL = 0.95
MIN_CLASS = 5  # fewer cases of a present class: no bootstrap interval for macro-F1

Interval = list[float | None]  # [low, high], or [None, None] where nothing honest can be said


def clopper_pearson(hits: int, n: int, level: float = LEVEL) -> Interval:
    """The exact binomial interval of ``hits`` of ``n`` ([None, None] when ``n`` is 0)."""
    if n == 0:
        return [None, None]
    if not 0 <= hits <= n:
        raise ValueError(f"{hits} hits of {n} cases")
    from scipy.stats import beta

    tail = (1 - level) / 2
    low = 0.0 if hits == 0 else float(beta.ppf(tail, hits, n - hits + 1))
    high = 1.0 if hits == n else float(beta.ppf(1 - tail, hits + 1, n - hits))
    return [round(low, 4), round(high, 4)]


def stratified_bootstrap(
    labels: np.ndarray,
    metric: Callable[[np.ndarray], float],
    draws: int,
    rng: np.random.Generator,
    level: float = LEVEL,
    min_class: int = MIN_CLASS,
) -> Interval:
    """Percentile interval of ``metric(rows)`` over ``draws`` resamples that each keep every
    true class's count; [None, None] where a class has fewer than ``min_class`` cases or every
    resample gives the same value."""
    classes = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    if draws == 0 or not classes or min(len(rows) for rows in classes) < min_class:
        return [None, None]
    values = np.array([
        metric(np.concatenate([rng.choice(rows, len(rows)) for rows in classes]))
        for _ in range(draws)
    ])  # fmt: skip
    values = values[~np.isnan(values)]
    if len(values) == 0 or np.ptp(values) < 1e-12:
        return [None, None]
    tail = 100 * (1 - level) / 2
    return [round(float(np.percentile(values, tail)), 4),
            round(float(np.percentile(values, 100 - tail)), 4)]  # fmt: skip
