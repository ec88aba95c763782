"""``dermaops bench rollout``: how much traffic the judge needs to catch a worse challenger.

A challenger is made from an evaluation's scored test split (``test_predictions.npz``: calibrated
probabilities and labels; the melanoma operating point from ``metrics.json``): it answers as the
evaluated model, except that it drops the flag on ``drop`` of the melanomas the model flags
(melanoma sensitivity ``drop`` lower), and disagrees with it on ``noise`` of all images, in
either direction alike (two trainings never answer identically). Traffic draws test images with
replacement.

Two ways to see it, judged by the judge's own tests and looks (:mod:`dermaops.rollout.judge`):

- **shadow, paired**: every request is answered by both; ``melanoma_flips`` (McNemar on the
  flags each lost and gained);
- **canary, unpaired**: ``share`` of the requests go to the challenger, the rest to stable;
  ``melanoma_flag_rate_drop`` (two-proportion test, and the check's threshold on the relative
  fall of the flag rate), and the same test without that threshold.

For each number of requests, the share of simulated rollouts in which the check had failed the
challenger by then; and the least requests at which that share reaches ``power``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from dermaops.evaluation.result import EvaluationMetrics
from dermaops.labels import CLASSES
from dermaops.rollout.judge import JudgeSettings
from dermaops.rollout.stats import looks, mcnemar_lost_p, two_proportion_p

MEL = CLASSES.index("mel")
WAYS = ("shadow_paired", "canary_check", "canary_test_only")


def flags_of(evaluation: Path) -> tuple[np.ndarray, np.ndarray]:
    """The evaluated model's melanoma flags on the test split, and which images are melanomas.

    Raises:
        FileNotFoundError: the folder holds no ``test_predictions.npz``.
        MetricsFileError: its ``metrics.json`` is missing or damaged.
    """
    saved = np.load(evaluation / "test_predictions.npz")
    threshold = EvaluationMetrics.read(evaluation).melanoma.threshold
    return saved["probs"][:, MEL] >= threshold, saved["labels"] == MEL


def challenger_flags(
    stable: np.ndarray, melanoma: np.ndarray, drop: float, noise: float, rng: np.random.Generator
) -> np.ndarray:
    """The challenger's flags: ``drop`` of the melanomas lose theirs; ``noise`` of all images
    differ from stable, half gaining a flag and half losing one.

    Raises:
        ValueError: fewer flagged melanomas than ``drop`` asks to lose.
    """
    flags = stable.copy()
    hits = np.flatnonzero(stable & melanoma)
    lose = round(drop * int(melanoma.sum()))
    if lose > len(hits):
        raise ValueError(f"the model flags {len(hits)} melanomas; cannot lose {lose}")
    flags[rng.choice(hits, lose, replace=False)] = False
    pools = {have: np.flatnonzero(flags == have) for have in (True, False)}  # before any flip
    for have, pool in pools.items():
        n = min(len(pool), round(noise / 2 * len(flags)))
        flags[rng.choice(pool, n, replace=False)] = not have
    return flags


def _shadow_caught(lost: np.ndarray, gained: np.ndarray, n: int, s: JudgeSettings) -> bool:
    """Whether the paired looks had failed the challenger within ``n`` shadowed requests."""
    for size, level in looks(n, s.min_pairs, s.alpha):
        down, up = int(lost[size - 1]), int(gained[size - 1])
        if mcnemar_lost_p(down, up) < level:
            return True
    return False


def _canary_caught(
    old: np.ndarray, new: np.ndarray, n: int, s: JudgeSettings, threshold: bool
) -> bool:
    """Whether the canary's looks had failed the challenger within ``n`` requests in all (its
    share of them answered by the challenger): ``old``/``new`` are each version's cumulative
    flags and the request each answered, in order. Each look takes the challenger's first
    ``size`` answers against the stable's answers before the last of them, as the judge does."""
    each = int(np.searchsorted(new[:, 1], n, side="right"))
    for size, level in looks(each, s.min_requests, s.alpha):
        span = int(np.searchsorted(old[:, 1], new[size - 1, 1]))  # stable answers before it
        if span < s.min_requests:
            continue
        hits_old, hits_new = int(old[span - 1, 0]), int(new[size - 1, 0])
        if hits_old == 0:
            continue
        fell = (hits_old / span - hits_new / size) / (hits_old / span)
        if threshold and fell <= s.max_flag_rate_drop:
            continue
        if fell > 0 and two_proportion_p(hits_old, span, hits_new, size) < level:
            return True
    return False


def bench_rollout(
    evaluation: Path, drop: float = 0.10, noise: float = 0.02, share: float = 0.10,
    runs: int = 200, requests: int = 20_000, power: float = 0.8, seed: int = 0,
    judge: JudgeSettings | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The share of ``runs`` simulated rollouts caught by each way at each request count."""
    s = judge or JudgeSettings()
    stable, melanoma = flags_of(evaluation)
    rng = np.random.default_rng(seed)
    # Verdicts change only at looks: the paired ones, the canary's (about size / share in all).
    at_looks = [size for size, _ in looks(requests, s.min_pairs, s.alpha)] + [
        round(size / share) for size, _ in looks(round(requests * share), s.min_requests, s.alpha)
    ]
    grid = sorted({*(int(n) for n in np.geomspace(s.min_pairs, requests, 16)), *at_looks, requests})
    caught = {way: np.zeros(len(grid)) for way in WAYS}
    for _ in tqdm(range(runs), desc="rollouts", unit="run", leave=False):
        challenger = challenger_flags(stable, melanoma, drop, noise, rng)
        shown = rng.integers(0, len(stable), requests)  # one image per request
        old, new = stable[shown], challenger[shown]
        lost, gained = np.cumsum(old & ~new), np.cumsum(~old & new)
        to_challenger = rng.random(requests) < share
        position = np.arange(1, requests + 1)
        canary_new = np.column_stack([np.cumsum(new[to_challenger]), position[to_challenger]])
        canary_old = np.column_stack([np.cumsum(old[~to_challenger]), position[~to_challenger]])
        for i, n in enumerate(grid):
            caught["shadow_paired"][i] += _shadow_caught(lost, gained, n, s)
            caught["canary_check"][i] += _canary_caught(canary_old, canary_new, n, s, True)
            caught["canary_test_only"][i] += _canary_caught(canary_old, canary_new, n, s, False)
    shares = {way: (counts / runs).round(3).tolist() for way, counts in caught.items()}
    needed = {way: next((n for n, p in zip(grid, shares[way], strict=True) if p >= power), None)
              for way in WAYS}  # fmt: skip
    return {
        "benchmark": "rollout",
        "evaluation": str(evaluation),
        "test_images": len(stable),
        "melanomas": int(melanoma.sum()),
        "sensitivity": round(float((stable & melanoma).sum() / max(1, melanoma.sum())), 4),
        "flag_rate": round(float(stable.mean()), 4),
        "drop": drop,
        "noise": noise,
        "canary_share": share,
        "runs": runs,
        "power": power,
        "judge": s.model_dump(),
        "requests": grid,
        "caught": shares,
        "requests_needed": needed,
    }
