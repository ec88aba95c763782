"""Classification metrics over the seven classes (numpy in, plain floats out).

scikit-learn is imported by the functions that use it (a second's import): the registry, the
model card and every pipeline stage that only reads or renders metrics import this module.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from dermaops.labels import CLASSES

_LABELS = list(range(len(CLASSES)))


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Unweighted mean F1 over all seven classes (absent classes count as 0)."""
    from sklearn.metrics import f1_score

    return float(f1_score(y_true, y_pred, labels=_LABELS, average="macro", zero_division=0))


def summary(y_true: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro/weighted F1, macro one-vs-rest AUC, ECE, per class."""
    from sklearn.metrics import (
        accuracy_score,
        balanced_accuracy_score,
        f1_score,
        precision_recall_fscore_support,
    )

    y_pred = probs.argmax(axis=1)
    with warnings.catch_warnings():
        # Balanced accuracy averages recall over the classes present in y_true, by definition;
        # a prediction of an absent class is an error it already counts, not news.
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        balanced = float(balanced_accuracy_score(y_true, y_pred))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=_LABELS, zero_division=0
    )
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": balanced,
        "f1_macro": macro_f1(y_true, y_pred),
        "f1_weighted": float(
            f1_score(y_true, y_pred, labels=_LABELS, average="weighted", zero_division=0)
        ),
        "auc_macro_ovr": auc_macro_ovr(y_true, probs),
        "ece": expected_calibration_error(y_true, probs),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(CLASSES)
        },
    }


def auc_macro_ovr(y_true: np.ndarray, probs: np.ndarray) -> float | None:
    """Macro one-vs-rest ROC AUC over the classes present; None when fewer than two are."""
    from sklearn.metrics import roc_auc_score

    present = np.unique(y_true)
    if len(present) < 2:
        return None
    aucs = [roc_auc_score(y_true == c, probs[:, c]) for c in present]
    return float(np.mean(aucs))


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray, bins: int = 15) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by bin size."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y_true
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - confidence[mask].mean())
    return float(ece)


def confusion(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Counts, rows = true class, columns = predicted class, in CLASSES order."""
    from sklearn.metrics import confusion_matrix

    result: np.ndarray = confusion_matrix(y_true, y_pred, labels=_LABELS)
    return result


@dataclass(frozen=True)
class Roc:
    """Points of a ROC curve, thinned to at most a few hundred for plotting."""

    fpr: list[float]
    tpr: list[float]
    thresholds: list[float]


def roc_points(positive: np.ndarray, scores: np.ndarray, max_points: int = 200) -> Roc:
    """Melanoma-vs-rest style ROC of binary ``positive`` against ``scores``."""
    from sklearn.metrics import roc_curve

    fpr, tpr, thresholds = roc_curve(positive, scores, drop_intermediate=True)
    keep = np.unique(np.linspace(0, len(fpr) - 1, min(len(fpr), max_points)).round().astype(int))
    finite = np.minimum(thresholds[keep], 1.0)  # the first threshold is +inf
    return Roc(fpr[keep].tolist(), tpr[keep].tolist(), finite.tolist())
