"""Temperature scaling and the melanoma operating point, both fitted on validation only."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T minimising validation NLL of softmax(log p / T).

    Log-probabilities differ from logits by a per-row constant, which softmax ignores.
    """
    log_p = np.log(np.clip(probs, 1e-12, 1.0))

    def nll(log_t: float) -> float:
        scaled = apply_temperature(log_p, float(np.exp(log_t)), already_log=True)
        return float(-np.log(np.clip(scaled[np.arange(len(labels)), labels], 1e-12, 1.0)).mean())

    result = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(result.x))


def apply_temperature(
    probs: np.ndarray, temperature: float, already_log: bool = False
) -> np.ndarray:
    """softmax(log p / T), row-wise."""
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
    """The highest threshold whose validation sensitivity reaches ``target`` (most specific).

    Raises:
        ValueError: validation has no positive case, so no sensitivity can be measured.
    """
    positives = np.sort(p_positive[is_positive])[::-1]
    if len(positives) == 0:
        raise ValueError("the validation split has no melanoma: no operating point can be chosen")
    needed = int(np.ceil(target * len(positives)))
    threshold = float(positives[max(needed, 1) - 1])
    sensitivity, specificity = rates(p_positive, is_positive, threshold)
    return OperatingPoint(threshold, target, sensitivity, specificity)


def rates(p_positive: np.ndarray, is_positive: np.ndarray, threshold: float) -> tuple[float, float]:
    """(sensitivity, specificity) of flagging ``p_positive >= threshold``."""
    flagged = p_positive >= threshold
    pos, neg = is_positive.sum(), (~is_positive).sum()
    sensitivity = float((flagged & is_positive).sum() / pos) if pos else float("nan")
    specificity = float((~flagged & ~is_positive).sum() / neg) if neg else float("nan")
    return sensitivity, specificity
