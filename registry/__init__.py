"""dermaops.registry: MLflow tracking and the model registry (aliases, promotion, rollback).

The only layer that imports mlflow. Components, the CLI and the predictor reach the registry
through :class:`Registry`; the quality gate it applies lives in the core
(:mod:`dermaops.evaluation.gate`). Promotion (:mod:`dermaops.registry.promotion`) is imported
where it is used: it brings the evaluation's scikit-learn, which reading the registry does not
need.
"""

from dermaops.registry.client import Registry, RegistrySettings

__all__ = ["Registry", "RegistrySettings"]
