"""``dermaops baseline``: a Random Forest on hand-made colour and texture features.

The earlier system's floor (macro-F1 0.24, melanoma recall 0.9 %), rebuilt on the same cache
and scored by the same evaluation as the CNN, so the two are compared like for like.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import joblib
import numpy as np
from sklearn.ensemble import RandomForestClassifier

from dermaops.data.prepared import PreparedSet
from dermaops.evaluation.result import EvaluationMetrics
from dermaops.evaluation.run import Predictions, score

log = logging.getLogger(__name__)

_HUE_BINS, _GRAY_BINS = 12, 8


def handcrafted_features(pixels: np.ndarray, step: int = 3) -> np.ndarray:
    """Colour moments and histograms, texture (LBP, gradients), centre-vs-border contrast.

    Args:
        pixels: uint8 (N, H, W, 3); every ``step``-th pixel is used.

    Returns:
        float32 (N, 45).
    """
    rgb = pixels[:, ::step, ::step].astype(np.float32) / 255.0
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    high, low = np.maximum(np.maximum(r, g), b), np.minimum(np.minimum(r, g), b)
    saturation = np.where(high > 0, (high - low) / np.maximum(high, 1e-6), 0.0)
    hue = np.arctan2(np.sqrt(3) * (g - b), 2 * r - g - b) % (2 * np.pi)
    gray = 0.299 * r + 0.587 * g + 0.114 * b
    n = len(pixels)
    colours, sat, value = rgb.reshape(n, -1, 3), saturation.reshape(n, -1), high.reshape(n, -1)
    columns = [
        colours.mean(axis=1),
        colours.std(axis=1),
        np.stack([sat.mean(1), sat.std(1), value.mean(1), value.std(1)], axis=1),
        _weighted_histogram(hue.reshape(n, -1), sat, _HUE_BINS, 2 * np.pi),
        _weighted_histogram(gray.reshape(n, -1), np.ones_like(sat), _GRAY_BINS, 1.0),
        _lbp_histogram(gray),
        _gradient_stats(gray),
        _centre_contrast(gray),
    ]
    return np.concatenate(columns, axis=1).astype(np.float32)


def run_baseline(
    prepared: Path,
    out: Path,
    class_weight: Literal["balanced", "none"] = "balanced",
    trees: int = 300,
    seed: int = 0,
) -> EvaluationMetrics:
    """Fit on train, calibrate on val, score on test; write the model and the evaluation."""
    data = PreparedSet.open(prepared)
    features, labels = {}, {}
    for split in ("train", "val", "test"):
        pixels, labels[split], _ = data.split(split)
        features[split] = handcrafted_features(pixels)
    forest = RandomForestClassifier(
        n_estimators=trees,
        class_weight="balanced" if class_weight == "balanced" else None,
        n_jobs=-1,
        random_state=seed,
    )
    forest.fit(features["train"], labels["train"])
    probs = {split: _all_classes(forest, features[split]) for split in ("val", "test")}
    predictions = Predictions(probs["val"], labels["val"], probs["test"], labels["test"],
                              shares=data.shares())  # fmt: skip
    described = {"arch": f"random_forest({trees} trees, class_weight={class_weight})"}
    metrics = score(predictions, out, described, data.generated)
    joblib.dump(forest, out / "random_forest.joblib")
    return metrics


def _all_classes(forest: RandomForestClassifier, x: np.ndarray) -> np.ndarray:
    """Probabilities over all seven classes, even those absent from the training split."""
    probs = np.zeros((len(x), 7), dtype=np.float64)
    probs[:, forest.classes_] = forest.predict_proba(x)
    return probs


def _weighted_histogram(
    values: np.ndarray, weights: np.ndarray, bins: int, top: float
) -> np.ndarray:
    index = np.clip((values / top * bins).astype(int), 0, bins - 1)
    hist = np.zeros((len(values), bins), dtype=np.float32)
    np.add.at(hist, (np.arange(len(values))[:, None], index), weights)
    normalised: np.ndarray = hist / np.maximum(hist.sum(axis=1, keepdims=True), 1e-6)
    return normalised


def _lbp_histogram(gray: np.ndarray) -> np.ndarray:
    """Rotation-invariant uniform local binary patterns (8 neighbours): 10 bins."""
    centre = gray[:, 1:-1, 1:-1]
    shifts = [(-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1)]
    h, w = gray.shape[1:]
    bits = np.stack(
        [gray[:, 1 + dy : h - 1 + dy, 1 + dx : w - 1 + dx] >= centre for dy, dx in shifts]
    )
    ones = bits.sum(axis=0)
    transitions = (bits != np.roll(bits, 1, axis=0)).sum(axis=0)
    code = np.where(transitions <= 2, ones, 9).reshape(len(gray), -1)
    hist = np.stack([(code == k).mean(axis=1) for k in range(10)], axis=1)
    return hist.astype(np.float32)


def _gradient_stats(gray: np.ndarray) -> np.ndarray:
    gx, gy = np.diff(gray, axis=2)[:, :-1], np.diff(gray, axis=1)[:, :, :-1]
    magnitude = np.hypot(gx, gy).reshape(len(gray), -1)
    return np.stack([magnitude.mean(1), magnitude.std(1)], 1)


def _centre_contrast(gray: np.ndarray) -> np.ndarray:
    """Mean brightness of the central quarter and of the border, and their difference."""
    h, w = gray.shape[1:]
    centre = gray[:, h // 4 : 3 * h // 4, w // 4 : 3 * w // 4].reshape(len(gray), -1).mean(1)
    whole = gray.reshape(len(gray), -1).mean(1)
    border = (whole * h * w - centre * (h // 2) * (w // 2)) / (h * w - (h // 2) * (w // 2))
    return np.stack([centre, border, border - centre], 1)
