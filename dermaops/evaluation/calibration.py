"""Temperature scaling, the class bias the label-free estimates read, and the melanoma operating
point, all fitted on validation only."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T minimising validation NLL of softmax(log p / T).

    Log-probabilities differ from logits by a per-row constant, which softmax ignores.
    """
    from scipy.optimize import minimize_scalar  # only fitting needs scipy, not serving

    log_p = np.log(np.clip(probs, 1e-12, 1.0))

    def nll(log_t: float) -> float:
        scaled = apply_temperature(log_p, float(np.exp(log_t)), already_log=True)
        return float(-np.log(np.clip(scaled[np.arange(len(labels)), labels], 1e-12, 1.0)).mean())

    result = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(result.x))


BIAS_BOUND = 6.0  # a class seen a few times in validation cannot swing its bias further
BIAS_MIN_IMAGES = 5  # a class seen fewer times in validation keeps bias 0: no share to match


def fit_class_bias(
    probs: np.ndarray, labels: np.ndarray, fitted: np.ndarray | None = None,
    shares: np.ndarray | None = None,
) -> np.ndarray:  # fmt: skip
    """The per-class bias b minimising validation NLL of softmax(log p + b).

    Temperature scaling leaves the class shares a model was trained toward (a class-balanced
    sampler trains toward equal shares) in its probabilities; this bias moves them to the shares
    validation has, so that each class's probabilities are calibrated in the mean, which is
    what re-weighting to another clinic's priors needs (bias-corrected calibration, Alexandari,
    Kundaje and Shrikumar, ICML 2020). The answers keep the temperature-scaled probabilities.
    A class validation holds fewer than ``BIAS_MIN_IMAGES`` images of has no share to match
    there: the fit runs among the others (its images and its column left out). With ``shares``
    (each class's share of a larger labelled set: the training and validation images) its
    bias then moves its mean probability on validation to that share; without, it gets the
    others' mean bias, its odds against the average class kept (a class-balanced model's
    rare classes then keep several times their share, which every estimate reads as expected
    errors). Never to the bound: the estimates would call the class impossible. ``fitted``
    names the classes to fit instead (a resample of validation keeps the whole set's, less any
    it drew no image of: a class near the floor would otherwise fall in and out of the fit
    between resamples).
    """
    from scipy.optimize import minimize  # only fitting needs scipy, not serving

    counts = np.bincount(labels, minlength=probs.shape[1])
    free = counts >= BIAS_MIN_IMAGES if fitted is None else fitted & (counts > 0)
    if free.sum() < 2:
        return np.zeros(probs.shape[1])
    kept = free[labels]
    log_p = np.log(np.clip(probs[kept][:, free], 1e-12, 1.0))
    index = np.cumsum(free) - 1  # a free class's column among the free ones
    among = index[labels[kept]]
    rows = np.arange(len(among))
    observed = counts[free] / len(among)

    def nll(bias: np.ndarray) -> tuple[float, np.ndarray]:
        shifted = apply_bias(log_p, bias, already_log=True)
        gradient = shifted.mean(axis=0) - observed
        return float(-np.log(np.clip(shifted[rows, among], 1e-12, 1.0)).mean()), gradient

    bounds = [(-BIAS_BOUND, BIAS_BOUND)] * int(free.sum())
    found = minimize(nll, np.zeros(int(free.sum())), jac=True, method="L-BFGS-B", bounds=bounds)
    bias = np.full(probs.shape[1], float(found.x.mean()))
    bias[free] = found.x
    if shares is not None:
        _to_shares(np.log(np.clip(probs, 1e-12, 1.0)), bias, ~free & (shares > 0), shares)
    centred: np.ndarray = bias - bias.mean()
    return centred


def _to_shares(log_p: np.ndarray, bias: np.ndarray, rare: np.ndarray, shares: np.ndarray) -> None:
    """Move the ``rare`` classes' biases (in place) until their mean probability over
    ``log_p`` is their share: a fixed point, each step the log-ratio of share to mean."""
    for _ in range(200):
        if not rare.any():
            return
        mean = apply_bias(log_p, bias, already_log=True).mean(axis=0)
        step = np.log(shares[rare] / np.clip(mean[rare], 1e-12, None))
        bias[rare] = np.clip(bias[rare] + step, -BIAS_BOUND, BIAS_BOUND)
        if np.abs(step).max() < 1e-5:
            return


def apply_bias(probs: np.ndarray, bias: np.ndarray, already_log: bool = False) -> np.ndarray:
    """softmax(log p + b), row-wise (``already_log``: ``probs`` are log-probabilities)."""
    log_p = probs if already_log else np.log(np.clip(probs, 1e-12, 1.0))
    return apply_temperature(log_p + bias, 1.0, already_log=True)


def apply_temperature(
    probs: np.ndarray, temperature: float, already_log: bool = False
) -> np.ndarray:
    """softmax(z / T), row-wise: the one temperature-scaled softmax. ``z`` is log-probabilities
    or logits (``already_log``): they differ by a per-row constant, which softmax ignores."""
    log_p = probs if already_log else np.log(np.clip(probs, 1e-12, 1.0))
    z = log_p / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    result: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return result


@dataclass(frozen=True)
class OperatingPoint:
    """Flag melanoma when P(mel) >= threshold; chosen for a target sensitivity on validation."""

    threshold: float
    target_sensitivity: float
    val_sensitivity: float
    val_specificity: float


def choose_threshold(
    p_positive: np.ndarray, is_positive: np.ndarray, target: float
) -> OperatingPoint:
    """The most specific threshold reaching ``target`` sensitivity on validation, with margin.

    Of the thresholds that catch at least ``target`` of the validation positives, those with
    the best specificity form an interval; the threshold sits in the middle of the gap below
    its lowest score, so test positives scored a little lower than validation's are still
    caught (a threshold at the edge, e.g. 0.997 for a confident model, would not be robust).

    Raises:
        ValueError: validation has no positive case, so no sensitivity can be measured.
    """
    if not is_positive.any():
        raise ValueError("the validation split has no melanoma: no operating point can be chosen")
    scores = np.unique(p_positive)
    sens_spec = np.array([rates(p_positive, is_positive, t) for t in scores])
    reaching = sens_spec[:, 0] >= target
    best_specificity = sens_spec[reaching, 1].max()
    lowest = int(np.flatnonzero(reaching & (sens_spec[:, 1] == best_specificity))[0])
    threshold = float(scores[lowest] + scores[lowest - 1]) / 2 if lowest > 0 else float(scores[0])
    sensitivity, specificity = rates(p_positive, is_positive, threshold)
    return OperatingPoint(threshold, target, sensitivity, specificity)


def rates(p_positive: np.ndarray, is_positive: np.ndarray, threshold: float) -> tuple[float, float]:
    """(sensitivity, specificity) of flagging ``p_positive >= threshold``."""
    flagged = p_positive >= threshold
    pos, neg = is_positive.sum(), (~is_positive).sum()
    sensitivity = float((flagged & is_positive).sum() / pos) if pos else float("nan")
    specificity = float((~flagged & ~is_positive).sum() / neg) if neg else float("nan")
    return sensitivity, specificity
