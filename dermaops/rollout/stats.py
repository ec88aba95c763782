"""The statistics of the rollout judge, each a pure function of counts or samples: the
sequence of looks and its levels, the exact McNemar tests, the two-proportion z-test, the
Mann-Whitney U test, a p99, and the Jensen-Shannon distance."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence


def looks(n: int, first: int, alpha: float) -> list[tuple[int, float]]:
    """The looks reached with ``n`` samples: (the first ``size`` samples, the level to test them
    at), at sizes ``first * 2**k``."""
    found, size, level = [], first, alpha / 2
    while size <= n:
        found.append((size, level))
        size, level = size * 2, level / 2
    return found


def first_rejection(
    test: Callable[[int], float], n: int, first: int, alpha: float
) -> tuple[int, float, float] | None:
    """The first look whose test rejects: (size, p-value, level), or None. ``test(size)`` is the
    p-value of the first ``size`` samples."""
    for size, level in looks(n, first, alpha):
        p_value = test(size)
        if p_value < level:
            return size, p_value, level
    return None


def mcnemar_p(lost: int, gained: int) -> float:
    """Two-sided exact McNemar test: the binomial probability of a split of the discordant
    pairs at least this uneven, were either direction equally likely."""
    return min(1.0, 2 * _binomial_half_tail(lost + gained, min(lost, gained)))


def mcnemar_lost_p(lost: int, gained: int) -> float:
    """One-sided exact McNemar test that the challenger loses more flags than it gains: the
    probability of at least ``lost`` of the discordant pairs going its way by chance. The judge
    rolls back on this direction only, so its level is all spent on it."""
    return _binomial_half_tail(lost + gained, gained)


def _binomial_half_tail(n: int, k: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2); 1 when there is nothing to split."""
    if n == 0:
        return 1.0
    log_half = n * math.log(0.5)
    return min(1.0, sum(
        math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + log_half)
        for i in range(k + 1)
    ))  # fmt: skip


def two_proportion_p(hits_a: int, n_a: int, hits_b: int, n_b: int) -> float:
    """One-sided p-value that proportion b is below proportion a (pooled z-test)."""
    if n_a == 0 or n_b == 0:
        return 1.0
    pooled = (hits_a + hits_b) / (n_a + n_b)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    if spread == 0:
        return 1.0
    z = (hits_a / n_a - hits_b / n_b) / spread
    return 0.5 * math.erfc(z / math.sqrt(2))


def mann_whitney_greater_p(slower: Sequence[float], faster: Sequence[float]) -> float:
    """One-sided Mann-Whitney U test that ``slower`` tends to exceed ``faster`` (the
    probability of a U at least this large were both one distribution): the normal
    approximation with the tie correction and a continuity correction, as Kayenta compares a
    canary's latencies; 1 when either is empty."""
    n1, n2 = len(slower), len(faster)
    if not n1 or not n2:
        return 1.0
    ranked = sorted([(v, 0) for v in slower] + [(v, 1) for v in faster])
    ranks, ties, i = [0.0] * len(ranked), 0.0, 0
    while i < len(ranked):  # average ranks over runs of equal values
        j = i
        while j + 1 < len(ranked) and ranked[j + 1][0] == ranked[i][0]:
            j += 1
        for k in range(i, j + 1):
            ranks[k] = (i + j) / 2 + 1
        ties += (j - i + 1) ** 3 - (j - i + 1)
        i = j + 1
    u = sum(r for r, (_, side) in zip(ranks, ranked, strict=True) if side == 0) - n1 * (n1 + 1) / 2
    n = n1 + n2
    variance = n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1)))
    if variance <= 0:
        return 1.0
    z = (u - n1 * n2 / 2 - 0.5) / math.sqrt(variance)
    return 0.5 * math.erfc(z / math.sqrt(2))


def p99(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]


def js_distance(p: Sequence[float], q: Sequence[float]) -> float:
    """Jensen-Shannon distance (base 2, so between 0 and 1) of two distributions."""
    m = [(a + b) / 2 for a, b in zip(p, q, strict=True)]

    def kl(x: Sequence[float]) -> float:
        return sum(a * math.log2(a / b) for a, b in zip(x, m, strict=True) if a > 0)

    return math.sqrt(max(0.0, (kl(p) + kl(q)) / 2))
