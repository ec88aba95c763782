"""dermaops.registry: MLflow tracking and the model registry (aliases, promotion, rollback).

The only layer that imports mlflow. Components, the CLI and the predictor reach the registry
through :class:`Registry`; the quality gate it applies lives in the core
(:mod:`dermaops.evaluation.gate`).
"""

from dermaops.registry.client import Registry, RegistrySettings
from dermaops.registry.promotion import PromotionResult

__all__ = ["PromotionResult", "Registry", "RegistrySettings"]
