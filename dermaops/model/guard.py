"""The out-of-distribution guard: how far an image is from what the model was trained on.

Two scores on the model's own outputs, both higher for stranger images:

- ``mahalanobis``: the distance of the embedding (the head's input), power-normalised (the
  signed fourth root of each feature, which makes pooled ReLU features far more Gaussian), to the
  nearest class mean of the training images, under one covariance shared by the classes (Lee et
  al., 2018), shrunk by Ledoit-Wolf so a few hundred images fit a 512-wide embedding;
- ``energy``: minus the log-sum-exp of the logits (Liu et al., 2020), which needs no fit.

Evaluation fits the chosen score on the training split and sets the threshold that keeps
``keep`` (95 %) of the validation images; both are registered with the model (``guard.npz``) and
read through :class:`~dermaops.model.artifact.ModelArtifact`. Scoring is NumPy only: the CPU
predictor has no torch, and its ONNX graph already answers with logits and the embedding.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Final

import numpy as np

from dermaops.errors import DermaOpsError

GUARD: Final = "guard.npz"
METHODS: Final = ("mahalanobis", "energy")
KEEP: Final = 0.95
POWER: Final = 0.25  # measured: plain skin AUROC 0.79 at 0.5, 0.97 at 0.25 (docs/serving.md)


class OodGuardError(DermaOpsError):
    """A guard cannot be fitted from these outputs, or its file is unreadable or does not fit."""


@dataclass(frozen=True)
class OodGuard:
    """A score of strangeness and the threshold above which an image is out of distribution."""

    method: str
    threshold: float
    keep: float  # the share of validation images at or under the threshold
    means: np.ndarray  # (C, D) class means of the training features; (0, 0) for energy
    precision: np.ndarray  # (D, D) inverse of their shared, shrunk covariance; (0, 0) for energy
    power: float = POWER  # features = sign(embedding) * |embedding| ** power

    def scores(self, logits: np.ndarray, embedding: np.ndarray) -> np.ndarray:
        """One score per image (N,), float64: higher is further from the training images."""
        if self.method == "energy":
            z = np.asarray(logits, np.float64)
            top = z.max(axis=1)
            energy: np.ndarray = -(top + np.log(np.exp(z - top[:, None]).sum(axis=1)))
            return energy
        x = _features(embedding, self.power)
        if x.ndim != 2 or x.shape[1] != self.means.shape[1]:
            raise OodGuardError(
                f"embedding of shape {x.shape}, guard fitted on width {self.means.shape[1]}"
            )
        whiten, means = self._whitened
        z = x @ whiten  # (N, D): the squared distance is ||z - means_c||^2, one matmul per batch
        squared = ((z[:, None, :] - means[None]) ** 2).sum(axis=2)  # (N, C)
        distance: np.ndarray = np.sqrt(squared.min(axis=1))
        return distance

    @cached_property
    def _whitened(self) -> tuple[np.ndarray, np.ndarray]:
        """``W`` with ``precision = W @ W.T``, and the class means times ``W``."""
        values, vectors = np.linalg.eigh(self.precision)
        whiten = vectors * np.sqrt(np.maximum(values, 0.0))
        return whiten, self.means @ whiten

    def admits(self, scores: np.ndarray) -> np.ndarray:
        """Whether each score is in distribution (at or under the threshold)."""
        admitted: np.ndarray = np.asarray(scores) <= self.threshold
        return admitted

    @classmethod
    def fit(
        cls,
        method: str,
        train: tuple[np.ndarray, np.ndarray, np.ndarray],
        val: tuple[np.ndarray, np.ndarray],
        keep: float = KEEP,
    ) -> OodGuard:
        """Fit ``method`` on the training split's (logits, embeddings, labels) and set the
        threshold on the validation split's (logits, embeddings).

        Raises:
            OodGuardError: an unknown method, too few images, or ``keep`` outside (0, 1).
        """
        if method not in METHODS:
            raise OodGuardError(f"unknown guard {method!r}: choose one of {', '.join(METHODS)}")
        if not 0 < keep < 1:
            raise OodGuardError(f"keep must be a share between 0 and 1, got {keep}")
        if len(val[0]) < 2:
            raise OodGuardError(
                f"need at least 2 validation images to set a threshold, got {len(val[0])}"
            )
        empty = np.zeros((0, 0))
        if method == "energy":
            unfitted = cls(method, np.inf, keep, empty, empty)
        else:
            means, precision = _shared_gaussian(_features(train[1], POWER), train[2])
            unfitted = cls(method, np.inf, keep, means, precision, POWER)
        threshold = float(np.quantile(unfitted.scores(*val), keep))
        return cls(method, threshold, keep, unfitted.means, unfitted.precision, unfitted.power)

    def save(self, path: Path) -> None:
        np.savez_compressed(
            path,
            method=np.array(self.method),
            threshold=np.array(self.threshold),
            keep=np.array(self.keep),
            power=np.array(self.power),
            means=self.means.astype(np.float32),
            precision=self.precision.astype(np.float32),
        )

    @classmethod
    def load(cls, path: Path) -> OodGuard:
        try:
            with np.load(path, allow_pickle=False) as data:
                guard = cls(
                    str(data["method"]),
                    float(data["threshold"]),
                    float(data["keep"]),
                    data["means"].astype(np.float64),
                    data["precision"].astype(np.float64),
                    float(data["power"]),
                )
        except (OSError, ValueError, KeyError) as e:
            raise OodGuardError(f"cannot read the out-of-distribution guard {path}: {e}") from e
        if guard.method not in METHODS:
            raise OodGuardError(f"{path}: unknown method {guard.method!r}")
        if guard.method == "mahalanobis" and guard.precision.shape != (guard.means.shape[1],) * 2:
            raise OodGuardError(
                f"{path}: precision {guard.precision.shape} vs means {guard.means.shape}"
            )
        return guard


def _features(embedding: np.ndarray, power: float) -> np.ndarray:
    x = np.asarray(embedding, np.float64)
    result: np.ndarray = np.sign(x) * np.abs(x) ** power
    return result


def _shared_gaussian(x: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Class means (C, D) and the precision (D, D) of the covariance the classes share."""
    from sklearn.covariance import LedoitWolf

    classes = np.unique(labels)
    if x.ndim != 2 or len(x) <= len(classes):
        raise OodGuardError(f"need more training embeddings than classes to fit, got {x.shape}")
    means = np.stack([x[labels == c].mean(axis=0) for c in classes])
    centred = x - means[np.searchsorted(classes, labels)]
    covariance = LedoitWolf(assume_centered=True).fit(centred)
    return means, covariance.precision_
