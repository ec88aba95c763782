"""What the model sees, as numbers drift monitoring can compare: its embedding, projected.

The embedding is the input of the classifier head (512 numbers for resnet18, 2048 for
resnet50). A few principal components of it, fitted on the validation split at evaluation and
stored with the model (``projection.json``), summarise it: new dermatoscopes, lighting or
populations move these long before they move the class mix. NumPy only: the CPU predictor and
the monitor have no torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np

from dermaops.errors import DermaOpsError

PROJECTION = "projection.json"
COMPONENTS: Final = 3
PROJECTION_NAMES: Final = tuple(f"embedding_pc{i + 1}" for i in range(COMPONENTS))


class ProjectionError(DermaOpsError):
    """A projection file is unreadable or does not fit the model's embedding."""


@dataclass(frozen=True)
class Projection:
    """Principal components of embeddings: ``(embedding - mean) @ components.T``."""

    mean: np.ndarray  # (D,)
    components: np.ndarray  # (K, D), unit rows
    explained: tuple[float, ...]  # share of variance each component carries

    @classmethod
    def fit(cls, embeddings: np.ndarray, k: int = COMPONENTS) -> Projection:
        """The top ``k`` principal components; each signed so its largest loading is positive."""
        if embeddings.ndim != 2 or len(embeddings) <= k:
            raise ProjectionError(f"need more than {k} embeddings to fit, got {embeddings.shape}")
        x = embeddings.astype(np.float64)
        mean = x.mean(axis=0)
        _, singular, vt = np.linalg.svd(x - mean, full_matrices=False)
        components = vt[:k] * np.sign(vt[:k, np.abs(vt[:k]).argmax(axis=1)].diagonal())[:, None]
        variance = singular**2
        explained = tuple(float(v) for v in variance[:k] / max(variance.sum(), 1e-12))
        return cls(mean.astype(np.float32), components.astype(np.float32), explained)

    def __call__(self, embeddings: np.ndarray) -> np.ndarray:
        """(N, D) embeddings to (N, K) projections."""
        if embeddings.shape[-1] != self.mean.shape[0]:
            raise ProjectionError(
                f"embedding of width {embeddings.shape[-1]}, projection fitted on "
                f"{self.mean.shape[0]}"
            )
        result: np.ndarray = (embeddings.astype(np.float32) - self.mean) @ self.components.T
        return result

    def save(self, path: Path) -> None:
        data = {
            "names": list(PROJECTION_NAMES[: len(self.components)]),
            "explained_variance": list(self.explained),
            "mean": self.mean.tolist(),
            "components": self.components.tolist(),
        }
        path.write_text(json.dumps(data) + "\n")

    @classmethod
    def load(cls, path: Path) -> Projection:
        try:
            data = json.loads(path.read_text())
            mean = np.asarray(data["mean"], np.float32)
            components = np.asarray(data["components"], np.float32)
            explained = tuple(float(v) for v in data["explained_variance"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ProjectionError(f"cannot read the embedding projection {path}: {e}") from e
        if components.ndim != 2 or components.shape[1] != mean.shape[0]:
            raise ProjectionError(f"{path}: components {components.shape} vs mean {mean.shape}")
        return cls(mean, components, explained)
