"""``dermaops bench estimate``: label-free estimates against the labels, under prevalence shift.

Windows are drawn from an evaluation's scored test split (its calibrated probabilities and
labels, ``test_predictions.npz``) with the melanomas' weight multiplied (x0.5, x1, x2, x3):
what a screening or a referral clinic sends the same model. In each window the labels give the
realized balanced accuracy and melanoma sensitivity; our estimate (re-weighted to the window's
EM priors) and plain CBPE's are compared with them. Reported per scenario: mean absolute errors,
our intervals' coverage, and the targets (error at most 3 points, coverage at least 90 %, at
most half of CBPE's error under shift) with pass or fail.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from dermaops.evaluation.estimate import (
    MEL,
    EstimateSettings,
    calibration_source,
    estimate,
    realized,
)
from dermaops.evaluation.result import EvaluationMetrics

SCENARIOS = {"no shift": 1.0, "melanoma x0.5": 0.5, "melanoma x2": 2.0, "melanoma x3": 3.0}
FIGURES = ("balanced_accuracy", "melanoma_sensitivity")
MAX_ERROR, MIN_COVERAGE, MAX_ERROR_SHARE = 0.03, 0.90, 0.5


def bench_estimate(
    evaluation: Path, model: Path, windows: int = 100, size: int = 500, seed: int = 0,
    draws: int = 100,
) -> dict[str, Any]:  # fmt: skip
    """Each scenario's errors and coverage over ``windows`` windows of ``size`` images."""
    saved = np.load(evaluation / "test_predictions.npz")
    probs, labels = saved["probs"], saved["labels"]
    threshold = EvaluationMetrics.read(evaluation).melanoma.threshold
    source = calibration_source(model)
    rng = np.random.default_rng(seed)
    settings = EstimateSettings(draws=draws, min_records=1)
    results: dict[str, Any] = {}
    for name, factor in SCENARIOS.items():
        weights = np.where(labels == MEL, factor, 1.0)
        weights = weights / weights.sum()
        rows: dict[str, list[float]] = {f"{k}_{f}": [] for k in ("ours", "cbpe") for f in FIGURES}
        covered = dict.fromkeys(FIGURES, 0)
        counted = dict.fromkeys(FIGURES, 0)
        for w in tqdm(range(windows), desc=name, unit="window", leave=False):
            picked = rng.choice(len(labels), size, p=weights)
            p, y = probs[picked], labels[picked]
            flags = p[:, MEL] >= threshold
            truth = realized(y, p.argmax(axis=1), flags)
            found = estimate(p, flags, source, s=settings.model_copy(update={"seed": seed + w}))
            corrected = found.corrected or found.plain  # priors are given: always corrected
            for figure in FIGURES:
                real = truth[figure]
                ours, plain = getattr(corrected, figure), getattr(found.plain, figure)
                if real is None or ours.value is None or plain.value is None:
                    continue
                rows[f"ours_{figure}"].append(abs(ours.value - real))
                rows[f"cbpe_{figure}"].append(abs(plain.value - real))
                counted[figure] += 1
                covered[figure] += ours.lower is not None and ours.lower <= real <= ours.upper
        results[name] = {
            "melanoma_weight": factor,
            **{f"mae_{k}": round(float(np.mean(v)), 4) if v else None for k, v in rows.items()},
            **{f"coverage_{f}": round(covered[f] / counted[f], 3) if counted[f] else None
               for f in FIGURES},
        }  # fmt: skip
    return {
        "benchmark": "estimate",
        "windows": windows,
        "window_size": size,
        "test_images": len(labels),
        "scenarios": results,
        "checks": _checks(results),
    }


def _checks(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The targets, each with its value and pass or fail."""
    checks = []
    for name, r in results.items():
        for figure in FIGURES:
            ours, cbpe, coverage = (r[f"mae_ours_{figure}"], r[f"mae_cbpe_{figure}"],
                                    r[f"coverage_{figure}"])  # fmt: skip
            checks.append(_target(f"{name}: {figure} error", ours, "<=", MAX_ERROR))
            checks.append(_target(f"{name}: {figure} coverage", coverage, ">=", MIN_COVERAGE))
            if r["melanoma_weight"] != 1.0 and figure == "melanoma_sensitivity" and cbpe:
                share = ours / cbpe if ours is not None else None
                checks.append(_target(f"{name}: {figure} error / CBPE's", share, "<=",
                                      MAX_ERROR_SHARE))  # fmt: skip
    return checks


def _target(name: str, value: float | None, op: str, bound: float) -> dict[str, Any]:
    if value is None:
        return {"check": name, "value": None, "target": f"{op} {bound}", "passed": False}
    passed = value <= bound if op == "<=" else value >= bound
    return {"check": name, "value": round(value, 4), "target": f"{op} {bound}", "passed": passed}
