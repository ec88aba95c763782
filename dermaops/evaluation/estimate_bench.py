"""``dermaops bench estimate``: label-free estimates against the labels, under prevalence shift.

Windows are drawn from an evaluation's scored test split (its calibrated probabilities and
labels, ``test_predictions.npz``) with the melanomas' weight multiplied (x0.5, x1, x2, x3):
what a screening or a referral clinic sends the same model. In each window the labels give the
realized balanced accuracy and melanoma sensitivity; our estimate (re-weighted to the window's
EM priors) and plain CBPE's are compared with them. Reported per scenario: mean absolute errors,
our intervals' coverage and mean width (coverage bought with useless widths shows there), the
noise floor (a reference, not a bound: the error expected of the estimate if each image's
probability were exactly right, the realized sensitivity's own noise in a window of that size),
and the targets (error at most 3 points, coverage at least 90 %, at most half of CBPE's error
under shift) with pass or fail.

With the prepared data (``data``), two more scenarios score the test images again as another
camera would send them (:data:`DEVICE`: darker, warmer), alone and with the melanomas doubled.
That is covariate shift, where neither assumption is claimed to hold: no target, but the errors,
and how many windows the estimate itself marked unreliable (the guard's refusals, as the
monitor counts them), say whether the estimate knows it is on unsafe ground.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from dermaops.evaluation.calibration import apply_temperature
from dermaops.evaluation.estimate import (
    MEL,
    EstimateSettings,
    Figures,
    estimate,
    realized,
    to_priors,
)
from dermaops.evaluation.result import EvaluationMetrics
from dermaops.evaluation.sources import INPUTS, Source, calibration_source
from dermaops.labels import CLASSES

SCENARIOS = {"no shift": 1.0, "melanoma x0.5": 0.5, "melanoma x2": 2.0, "melanoma x3": 3.0}
DEVICE_SCENARIOS = {"device shift": 1.0, "device shift, melanoma x2": 2.0}
DEVICE = (0.8, 0.7, 0.6)  # the other camera's gain per channel (R, G, B): darker, warmer
FIGURES = ("balanced_accuracy", "melanoma_sensitivity")
MAX_ERROR, MIN_COVERAGE, MAX_ERROR_SHARE = 0.03, 0.90, 0.5
FLOOR_DRAWS = 50  # label draws per window for its noise floor


@dataclass(frozen=True)
class Scored:
    """A test split as the model answered it: calibrated probabilities, labels, the guard's
    verdicts (None: no guard) and each image's statistics (:data:`INPUTS`; None: not read)."""

    probs: np.ndarray
    labels: np.ndarray
    admitted: np.ndarray | None = None
    inputs: np.ndarray | None = None


def bench_estimate(
    evaluation: Path, model: Path, windows: int = 100, size: int = 500, seed: int = 0,
    draws: int = 100, data: Path | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Each scenario's errors and coverage over ``windows`` windows of ``size`` images; with
    ``data`` (the prepared set the evaluation scored), the device scenarios too."""
    saved = np.load(evaluation / "test_predictions.npz")
    metrics = EvaluationMetrics.read(evaluation)
    source = calibration_source(model)
    plan = Plan(metrics.melanoma.threshold, source, EstimateSettings(draws=draws, min_records=1),
                np.random.default_rng(seed), windows, size, seed)  # fmt: skip
    test = Scored(saved["probs"], saved["labels"])
    if data is not None:  # scored again as evaluation did, for the images' statistics too
        test = score_test_split(model, data, metrics.temperature, (1.0, 1.0, 1.0))
    results = {name: _scenario(name, test, factor, plan) for name, factor in SCENARIOS.items()}
    if data is not None:
        shifted = score_test_split(model, data, metrics.temperature, DEVICE)
        results |= {name: _scenario(name, shifted, factor, plan)
                    for name, factor in DEVICE_SCENARIOS.items()}  # fmt: skip
    return {
        "benchmark": "estimate",
        "windows": windows,
        "window_size": size,
        "test_images": len(test.labels),
        "device_gain": list(DEVICE) if data is not None else None,
        "scenarios": results,
        "checks": _checks({k: v for k, v in results.items() if k in SCENARIOS}),
    }


@dataclass(frozen=True)
class Plan:
    """How every scenario's windows are drawn and estimated."""

    threshold: float  # the melanoma operating point
    source: Source
    settings: EstimateSettings
    rng: np.random.Generator
    windows: int
    size: int
    seed: int


def _scenario(name: str, test: Scored, factor: float, plan: Plan) -> dict[str, Any]:
    """One scenario's windows: melanomas weighted by ``factor``, each window estimated (with
    the guard's refusals where there are verdicts) and set against its labels."""
    probs, labels = test.probs, test.labels
    windows, size, seed = plan.windows, plan.size, plan.seed
    weights = np.where(labels == MEL, factor, 1.0)
    weights = weights / weights.sum()
    rows: dict[str, list[float]] = {f"{k}_{f}": [] for k in ("ours", "cbpe") for f in FIGURES}
    covered = dict.fromkeys(FIGURES, 0)
    counted = dict.fromkeys(FIGURES, 0)
    widths: dict[str, list[float]] = {f: [] for f in FIGURES}
    floors: list[float] = []
    unreliable = 0
    for w in tqdm(range(windows), desc=name, unit="window", leave=False):
        picked = plan.rng.choice(len(labels), size, p=weights)
        p, y = probs[picked], labels[picked]
        flags = p[:, MEL] >= plan.threshold
        truth = realized(y, p.argmax(axis=1), flags)
        refused = 0.0 if test.admitted is None else float(1 - test.admitted[picked].mean())
        found = estimate(p, flags, plan.source, refused,
                         plan.settings.model_copy(update={"seed": seed + w}),
                         None if test.inputs is None else test.inputs[picked])  # fmt: skip
        unreliable += not found.reliable
        corrected = found.corrected or found.plain  # priors are given: always corrected
        floor = noise_floor(p, flags, plan.source, corrected, np.random.default_rng([seed, w]))
        if floor is not None:
            floors.append(floor)
        for figure in FIGURES:
            real = truth[figure]
            ours, plain = getattr(corrected, figure), getattr(found.plain, figure)
            if real is None or ours.value is None or plain.value is None:
                continue
            rows[f"ours_{figure}"].append(abs(ours.value - real))
            rows[f"cbpe_{figure}"].append(abs(plain.value - real))
            counted[figure] += 1
            if ours.lower is not None and ours.upper is not None:
                covered[figure] += ours.lower <= real <= ours.upper
                widths[figure].append(ours.upper - ours.lower)
    return {
        "melanoma_weight": factor,
        **{f"mae_{k}": round(float(np.mean(v)), 4) if v else None for k, v in rows.items()},
        **{f"coverage_{f}": round(covered[f] / counted[f], 3) if counted[f] else None
           for f in FIGURES},
        **{f"width_{f}": round(float(np.mean(w)), 4) if w else None
           for f, w in widths.items()},
        "floor_melanoma_sensitivity": round(float(np.mean(floors)), 4) if floors else None,
        "unreliable_windows": round(unreliable / windows, 3),
    }  # fmt: skip


def noise_floor(
    probs: np.ndarray, flags: np.ndarray, source: Source, found: Figures,
    rng: np.random.Generator,
) -> float | None:  # fmt: skip
    """How far the melanoma sensitivity realized when each image's melanoma label is drawn from
    the probability the estimate read (the class bias applied, re-weighted to the window's
    estimated priors) lands from the estimate, on average: the error expected of the estimate
    if each of those probabilities were exactly right, the realized figure's own noise. A
    reference, not a bound: probabilities less sure than the labels turn out (an uncalibrated
    tail) raise it above what the estimate errs. None: the estimate has no sensitivity."""
    point = found.melanoma_sensitivity.value
    if point is None:
        return None
    priors = np.array([found.priors[c] for c in CLASSES])
    melanoma = to_priors(source.calibrated(probs), source.floored_priors, priors)[:, MEL]
    drawn = rng.random((FLOOR_DRAWS, len(melanoma))) < melanoma
    positives = drawn.sum(axis=1)
    hits = (drawn & flags).sum(axis=1)
    gaps = np.abs(hits[positives > 0] / positives[positives > 0] - point)
    return float(gaps.mean()) if len(gaps) else None


def score_test_split(
    model: Path, data: Path, temperature: float, gain: tuple[float, float, float]
) -> Scored:
    """The prepared set's test split as a camera with ``gain`` per channel would send it, scored
    by the model in ``model`` as evaluation scores it (softmax, then ``temperature``), with its
    guard's verdicts where it has a guard."""
    import torch

    from dermaops.data.features import image_stats
    from dermaops.data.prepared import PreparedSet
    from dermaops.model.artifact import ModelArtifact
    from dermaops.model.embedding import WithEmbedding
    from dermaops.model.inference import predict_with_embeddings
    from dermaops.model.stem import fit_short_side

    artifact = ModelArtifact.load(model)
    pre = artifact.preprocessing
    cache, labels, _ = PreparedSet.open(data).split("test")
    cache = (cache * np.asarray(gain, dtype=np.float32)).round().clip(0, 255).astype(np.uint8)
    stats = [image_stats(image, (image.shape[1], image.shape[0])) for image in cache]
    shifted = fit_short_side(torch.from_numpy(cache), pre.image_size)
    net = WithEmbedding(artifact.torch_model(), artifact.arch)
    probs, embedding = predict_with_embeddings(net, shifted, pre, batch=128)
    guard, admitted = artifact.guard, None
    if guard is not None:
        with torch.no_grad():
            logits = net.head(torch.from_numpy(embedding)).float().numpy()
        admitted = np.asarray(guard.admits(guard.scores(logits, embedding)), dtype=bool)
    inputs = np.array([[row[name] for name in INPUTS] for row in stats])
    return Scored(apply_temperature(probs, temperature), labels, admitted, inputs)


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
