"""Performance without labels: what a window of traffic will score once its labels come back.

A calibrated model's probability of each class is the expected share of images like this one
that have it, so the expected confusion matrix of a window is the sum of its probabilities, by
the class each image was answered as (confidence-based performance estimation, NannyML's CBPE).
That holds while P(label | image) is what it was at calibration. The shift a dermatology service
meets most is another: a referral clinic sees three times the melanomas of a screening one
(prevalence, or label, shift: P(image | label) holds, the priors move). There the probabilities
must first be re-weighted to the window's priors, which the model's own outputs estimate (the
EM prior adjustment of Saerens, Latinne and Decaestecker, 2002). Both figures are reported, each
with the assumption it rests on; with neither assumption plausible (many images the guard
refused, too few images) the estimate is marked unreliable or not made.

Both rest on probabilities calibrated per class, not only overall: a model trained with a
class-balanced sampler answers as if every class were as common as the others, which temperature
scaling leaves in place. The class bias fitted on validation
(:func:`dermaops.evaluation.calibration.fit_class_bias`, stored in the model's calibration)
moves them to validation's shares first; the answers and flags are the served ones.

Intervals: each draw resamples the window's images and draws their labels from the (adjusted)
probabilities, then scores the answers against those labels: the spread of the value the
labels will realize, not only of the estimate. Where the model's validation probabilities came
with it (its reference's validation rows), each draw also refits the class bias on a resample of
them: the calibration was learnt from a few hundred images (a few dozen melanomas), and an
interval that took it as exact would be too narrow exactly where the estimate is most needed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from dermaops.errors import DermaOpsError
from dermaops.evaluation.calibration import apply_bias
from dermaops.evaluation.sources import INPUTS, Source
from dermaops.inference_log import PROBABILITY_FIELDS
from dermaops.labels import CLASSES

MEL = CLASSES.index("mel")
CBPE = "P(label | image) unchanged since calibration (CBPE)"
LABEL_SHIFT = "P(image | label) unchanged; class priors re-estimated from the outputs (EM)"


class EstimateSettings(BaseModel):
    """How a window is estimated (``DERMAOPS_ESTIMATE_*``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    window: int = Field(500, ge=1, description="latest answers of each version estimated")
    min_records: int = Field(100, ge=1, description="fewest images for an estimate")
    draws: int = Field(200, ge=20, description="bootstrap draws for the intervals")
    level: float = Field(0.95, gt=0, lt=1, description="interval level")
    max_ood_share: float = Field(
        0.2,
        ge=0,
        le=1,
        description="share of images the guard refused beyond which no figure "
        "is reliable (they are not the images either assumption is about)",
    )
    min_support: float = Field(
        1.0, gt=0, description="expected images of a class for it to count in macro figures"
    )
    prior_strength: float = Field(
        100.0,
        ge=0,
        description="pseudo-images of the calibration priors in the prior estimate "
        "(0: plain EM, unbiased but noisy for rare classes in small windows)",
    )
    input_alpha: float = Field(
        0.001,
        gt=0,
        lt=1,
        description="significance at which the window's image statistics differ from the "
        "reference re-weighted to the estimated class mix (Kolmogorov-Smirnov, Bonferroni): "
        "the images changed beyond their class mix, and the estimate is not reliable",
    )
    input_distance: float = Field(
        0.2,
        gt=0,
        le=1,
        description="least Kolmogorov-Smirnov distance that counts as a change (smaller ones "
        "are within what an error of the estimated priors explains)",
    )
    seed: int = 0


class Figure(BaseModel):
    """One estimated figure and its interval (None: not defined for this window)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    value: float | None
    lower: float | None
    upper: float | None


class Figures(BaseModel):
    """The estimated figures under one assumption."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    assumption: str
    priors: dict[str, float] = Field(description="the class priors the figures rest on")
    balanced_accuracy: Figure
    f1_macro: Figure
    melanoma_sensitivity: Figure
    melanoma_specificity: Figure


class Estimate(BaseModel):
    """A window's estimated performance: corrected for prevalence shift, and plain CBPE."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    images: int
    reliable: bool
    reasons: list[str] = Field(description="why the estimate is not reliable (empty: it is)")
    corrected: Figures | None = Field(description="None without the calibration's priors")
    plain: Figures
    em_iterations: int = 0


class EstimateError(DermaOpsError):
    """A window that cannot be estimated (too few images, probabilities that are not ones)."""


EM_ITERATIONS = 2000


def em_priors(
    probs: np.ndarray, source: np.ndarray, tol: float = 1e-6, start: np.ndarray | None = None,
    strength: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, int]:  # fmt: skip
    """The window's class priors by EM (Saerens et al. 2002), the probabilities re-weighted to
    them, and the iterations it took (``EM_ITERATIONS``: it did not converge). ``source``: the
    priors the probabilities were calibrated under; ``start``: where to begin (default there);
    ``strength``: pseudo-images of ``source`` added to the window (a Dirichlet prior, MAP-EM),
    which keeps a rare class's few images from swinging its prior."""
    priors = (start if start is not None else source).copy()
    adjusted = probs
    for iteration in range(1, EM_ITERATIONS + 1):
        adjusted = to_priors(probs, source, priors)
        updated = (adjusted.sum(axis=0) + strength * source) / (len(probs) + strength)
        if np.abs(updated - priors).max() < tol:
            return updated, adjusted, iteration
        priors = updated
    return priors, adjusted, EM_ITERATIONS


def to_priors(probs: np.ndarray, source: np.ndarray, priors: np.ndarray) -> np.ndarray:
    """Probabilities calibrated under the ``source`` priors, re-weighted to ``priors`` (Bayes'
    rule: each class's likelihood ratio is unchanged under label shift)."""
    weighted = probs * (priors / source)
    result: np.ndarray = weighted / weighted.sum(axis=1, keepdims=True)
    return result


def _draw_labels(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One label per row, drawn from that row's probabilities."""
    drawn: np.ndarray = (probs.cumsum(axis=1) < rng.random((len(probs), 1))).sum(axis=1)
    return drawn.clip(max=probs.shape[1] - 1)


def _confusion(
    labels: np.ndarray, answered: np.ndarray, weights: np.ndarray | None = None
) -> np.ndarray:
    """Rows: true class, columns: answered; ``weights`` (N x K): expected counts instead."""
    k = len(CLASSES)
    if weights is None:
        return np.bincount(labels * k + answered, minlength=k * k).reshape(k, k).astype(float)
    matrix = np.zeros((k, k))
    np.add.at(matrix.T, answered, weights)  # column j gets the probabilities answered as j
    return matrix


def _macro(matrix: np.ndarray, present: np.ndarray) -> tuple[float | None, float | None]:
    """Balanced accuracy and macro-F1 over the ``present`` classes (None: fewer than one)."""
    if not present.any():
        return None, None
    support, answered, hits = matrix.sum(axis=1), matrix.sum(axis=0), np.diag(matrix)
    recall = hits[present] / support[present]
    precision = np.divide(hits, answered, out=np.zeros_like(hits), where=answered > 0)[present]
    f1 = np.divide(2 * precision * recall, precision + recall,
                   out=np.zeros_like(recall), where=precision + recall > 0)  # fmt: skip
    return float(recall.mean()), float(f1.mean())


def _melanoma(truth: np.ndarray, flagged: np.ndarray) -> tuple[float | None, float | None]:
    """Sensitivity and specificity of the flags against ``truth`` (0/1, or expected shares)."""
    positives, negatives = truth.sum(), (1 - truth).sum()
    sensitivity = float(truth[flagged].sum() / positives) if positives > 0 else None
    specificity = float((1 - truth)[~flagged].sum() / negatives) if negatives > 0 else None
    return sensitivity, specificity


def expected(
    label_probs: np.ndarray, answered: np.ndarray, flagged: np.ndarray, min_support: float
) -> dict[str, float | None]:
    """The four figures of the expected confusion matrix of ``label_probs``."""
    matrix = _confusion(answered, answered, label_probs)
    balanced, f1 = _macro(matrix, matrix.sum(axis=1) >= min_support)
    sensitivity, specificity = _melanoma(label_probs[:, MEL], flagged)
    return {"balanced_accuracy": balanced, "f1_macro": f1,
            "melanoma_sensitivity": sensitivity, "melanoma_specificity": specificity}  # fmt: skip


def realized(
    labels: np.ndarray, answered: np.ndarray, flagged: np.ndarray
) -> dict[str, float | None]:
    """The four figures against real labels, macro figures over the classes present in them
    (balanced accuracy as scikit-learn counts it; macro-F1 leaves out classes answered but
    never true, where scikit-learn counts them as 0)."""
    matrix = _confusion(labels, answered)
    balanced, f1 = _macro(matrix, matrix.sum(axis=1) > 0)
    sensitivity, specificity = _melanoma((labels == MEL).astype(float), flagged)
    return {"balanced_accuracy": balanced, "f1_macro": f1,
            "melanoma_sensitivity": sensitivity, "melanoma_specificity": specificity}  # fmt: skip


def _figures(
    probs: np.ndarray, answered: np.ndarray, flagged: np.ndarray, source: np.ndarray | None,
    s: EstimateSettings, rng: np.random.Generator, shifts: np.ndarray | None = None,
) -> tuple[Figures, int]:  # fmt: skip
    """Point figures and intervals, re-weighted to the window's priors when ``source`` is given;
    ``shifts``: a class-bias shift per draw (:meth:`Source.bias_shifts`), the calibration's own
    uncertainty in the intervals."""
    iterations = 0
    label_probs = probs
    if source is not None:
        priors, label_probs, iterations = em_priors(probs, source, strength=s.prior_strength)
    else:
        priors = probs.mean(axis=0)
    point = expected(label_probs, answered, flagged, s.min_support)
    n = len(probs)
    drawn: dict[str, list[float]] = {name: [] for name in point}
    for draw in range(s.draws):
        rows = rng.integers(0, n, n)
        p = probs[rows]
        if shifts is not None:
            p = apply_bias(p, shifts[draw])
        if source is not None:
            p = em_priors(p, source, 1e-4, priors, s.prior_strength)[1]  # starts near: few steps
        for name, value in realized(_draw_labels(p, rng), answered[rows], flagged[rows]).items():
            if value is not None:
                drawn[name].append(value)
    tail = (1 - s.level) / 2

    def figure(name: str) -> Figure:
        values = drawn[name]
        if point[name] is None or len(values) < s.draws // 2:
            return Figure(value=point[name], lower=None, upper=None)
        low, high = np.quantile(values, [tail, 1 - tail])
        return Figure(value=round(point[name], 4), lower=round(float(low), 4),  # type: ignore[arg-type]
                      upper=round(float(high), 4))  # fmt: skip

    figures = Figures(
        assumption=LABEL_SHIFT if source is not None else CBPE,
        priors={c: round(float(v), 4) for c, v in zip(CLASSES, priors, strict=True)},
        **{name: figure(name) for name in point},
    )
    return figures, iterations


def estimate(
    probs: np.ndarray,
    flagged: np.ndarray,
    source: Source | None = None,
    ood_share: float = 0.0,
    s: EstimateSettings | None = None,
    inputs: np.ndarray | None = None,
) -> Estimate:
    """Estimate a window's performance from its calibrated ``probs`` (N x 7) and the melanoma
    flags its answers carried; ``source``: the class priors of the data the model was
    calibrated on and its class bias (without it, CBPE on the probabilities as they are);
    ``inputs``: the window's image statistics (N x :data:`INPUTS`), checked against the
    source's re-weighted to the estimated class mix (:func:`inputs_moved`).

    Raises:
        EstimateError: fewer than ``min_records`` images, or rows that are not probabilities.
    """
    s = s or EstimateSettings()
    probs = np.asarray(probs, dtype=float)
    if probs.ndim != 2 or probs.shape[1] != len(CLASSES):
        raise EstimateError(f"probabilities must be N x {len(CLASSES)}, not {probs.shape}")
    if len(probs) < s.min_records:
        raise EstimateError(f"{len(probs)} images; an estimate needs at least {s.min_records}")
    if (probs < 0).any() or not np.allclose(probs.sum(axis=1), 1, atol=1e-3):
        raise EstimateError("the rows are not probabilities (each must sum to 1): not calibrated "
                            "outputs of this model")  # fmt: skip
    probs = probs / probs.sum(axis=1, keepdims=True)
    answered, flagged = probs.argmax(axis=1), np.asarray(flagged, dtype=bool)
    if flagged.shape != (len(probs),):
        raise EstimateError(f"one melanoma flag per image: {flagged.shape} for {len(probs)}")
    priors, shifts = None, None
    if source is not None:
        priors = source.floored_priors
        probs = source.calibrated(probs)  # the answers and flags stay as served
        shifts = source.bias_shifts(s.draws)
    rng = np.random.default_rng(s.seed)
    plain, _ = _figures(probs, answered, flagged, None, s, rng, shifts)
    corrected, iterations = (
        _figures(probs, answered, flagged, priors, s, rng, shifts)
        if priors is not None
        else (None, 0)
    )
    reasons = []
    if ood_share > s.max_ood_share:
        reasons.append(
            f"{ood_share:.0%} of the images were refused by the guard "
            f"(more than {s.max_ood_share:.0%}): neither assumption holds for them"
        )
    if iterations >= EM_ITERATIONS:
        reasons.append("the prior estimate did not converge")
    if inputs is not None and source is not None and corrected is not None:
        estimated = np.array([corrected.priors[c] for c in CLASSES])
        moved = inputs_moved(np.asarray(inputs, dtype=float), source, estimated, s, rng)
        if moved:
            reasons.append(moved)
    return Estimate(images=len(probs), reliable=not reasons, reasons=reasons,
                    corrected=corrected, plain=plain, em_iterations=iterations)  # fmt: skip


def inputs_moved(
    inputs: np.ndarray, source: Source, priors: np.ndarray, s: EstimateSettings,
    rng: np.random.Generator,
) -> str | None:  # fmt: skip
    """Why the window's images changed beyond their class mix, or None.

    Under prevalence shift only the class mix moves: the window's image statistics must look
    like the reference's drawn with each class at its estimated prior (the reference re-weighted
    by prior / calibration prior). Each statistic is compared by a two-sample
    Kolmogorov-Smirnov test against such a draw, each image once (the same image sent twice is
    one image); a distance of at least ``input_distance`` with a p-value under
    ``input_alpha`` over the number of statistics (Bonferroni) says P(image | label) moved too
    (another camera, another light): neither assumption holds. The distance keeps an error of
    the estimated priors, which moves a statistic a little wherever classes differ in it, from
    counting as a change. None where the source has no statistics."""
    from scipy.stats import ks_2samp  # only estimating needs scipy, not serving

    if source.inputs is None or source.classes is None or not len(source.classes):
        return None
    images = np.unique(inputs, axis=0)
    weights = priors[source.classes] / source.floored_priors[source.classes]
    drawn = rng.choice(len(source.classes), len(source.classes), p=weights / weights.sum())
    level = s.input_alpha / len(INPUTS)
    found = []
    for j, name in enumerate(INPUTS):
        test = ks_2samp(images[:, j], source.inputs[drawn, j])
        if test.pvalue < level and test.statistic >= s.input_distance:
            found.append(f"{name} (distance {test.statistic:.2f}, p = {test.pvalue:.1e})")
    if not found:
        return None
    return ("the images changed beyond their class mix (another camera or light?): "
            + ", ".join(found) + " differ from the reference at the estimated priors; "
            "neither assumption holds")  # fmt: skip


def estimate_answers(
    rows: Sequence[Mapping[str, Any]], source: Source | None, s: EstimateSettings | None = None
) -> Estimate:
    """The estimate of a model's answers as the inference log holds them (each with its
    probabilities, melanoma flag and guard verdict); the guard's refusals count as
    ``ood_share``.

    Raises:
        EstimateError: too few of them, or a record without its probabilities.
    """
    try:
        probs = np.array([[float(r[name]) for name in PROBABILITY_FIELDS] for r in rows])
    except (KeyError, TypeError, ValueError) as e:
        raise EstimateError(f"an answer without its probabilities: {e}") from e
    flagged = np.array([bool(r.get("melanoma")) for r in rows])
    judged = [r.get("in_distribution") for r in rows if r.get("in_distribution") is not None]
    ood_share = sum(v is False for v in judged) / len(judged) if judged else 0.0
    stats = [[r.get(name) for name in INPUTS] for r in rows]
    inputs = np.array(stats, dtype=float) if all(None not in row for row in stats) else None
    return estimate(probs.reshape(len(rows), len(CLASSES)), flagged, source, ood_share, s,
                    inputs)  # fmt: skip


COMPARED = ("melanoma_sensitivity", "melanoma_specificity", "f1_macro")  # also scored on labels


class AgainstLabels(BaseModel):
    """One estimated figure against the value clinicians' labels gave, each with its interval.

    The two are of different windows (the latest answers; the latest labelled cases), so they
    agree while the traffic is alike; intervals that do not meet say the estimator no longer
    holds there (its calibration, or the shift it assumes)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    figure: str
    estimated: Figure
    realized: Figure
    error: float = Field(description="estimated minus realized")
    disagrees: bool = Field(description="the two intervals do not meet")


def against_labels(found: Estimate, live: Mapping[str, Any]) -> list[AgainstLabels]:
    """Each figure both the estimate and the labels (:func:`dermaops.evaluation.live`) give.

    ``live`` holds each figure's value and ``ci95`` its interval, as the monitor scores them."""
    figures = found.corrected or found.plain
    compared = []
    for name in COMPARED:
        estimated: Figure = getattr(figures, name)
        value = live.get(name)
        interval = live.get("ci95", {}).get(name)
        if estimated.value is None or value is None or not math.isfinite(value) or not interval:
            continue
        low, high = interval
        if low is None or high is None or estimated.lower is None or estimated.upper is None:
            continue
        realized = Figure(value=float(value), lower=float(low), upper=float(high))
        compared.append(AgainstLabels(
            figure=name, estimated=estimated, realized=realized,
            error=round(estimated.value - float(value), 6),
            disagrees=estimated.upper < low or estimated.lower > high,
        ))  # fmt: skip
    return compared
