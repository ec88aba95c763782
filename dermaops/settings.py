"""Settings: one typed object per entry point, and the one home for local state.

Values are layered defaults < YAML file < environment < flags, so the command line and a
Kubernetes pod (which passes env vars) build the same object.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from dermaops.errors import ConfigError

HOME_ENV = "DERMAOPS_HOME"
ACTOR_ENV = "DERMAOPS_ACTOR"  # who acts, for audit records (a pipeline sets it; else the login)
# NAMESPACE/NAME of the Lease under which alias moves take turns in a cluster (the chart sets it)
PROMOTION_LEASE_ENV = "DERMAOPS_PROMOTION_LEASE"
# The MLflow server's --artifacts-destination, when it proxies artifacts (registry, pipelines).
ARTIFACTS_DESTINATION_ENV = "DERMAOPS_REGISTRY_ARTIFACTS_DESTINATION"
DEFAULT_HOME = Path(".dermaops")

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Home:
    """``DERMAOPS_HOME``: where the embedded defaults keep every file they write."""

    root: Path

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Home:
        env = os.environ if environ is None else environ
        return cls(Path(env.get(HOME_ENV) or DEFAULT_HOME))

    @property
    def data(self) -> Path:
        """Raw and prepared data sets."""
        return self.root / "data"

    @property
    def downloads(self) -> Path:
        """Partial and finished downloads, kept for resuming."""
        return self.root / "downloads"

    @property
    def mlflow(self) -> Path:
        """The MLflow sqlite store and artifacts."""
        return self.root / "mlflow"

    @property
    def inference_log(self) -> Path:
        """What the local predictor saw, for drift monitoring."""
        return self.root / "inference"

    @property
    def feedback(self) -> Path:
        """Clinician feedback waiting for the next training set."""
        return self.root / "feedback"

    @property
    def serving(self) -> Path:
        """Which model version the local predictor serves (``current.json``)."""
        return self.root / "serving"

    @property
    def monitoring(self) -> Path:
        """The local monitor's state: reports, the retraining trigger, rollouts, its token."""
        return self.root / "monitoring"

    @property
    def pipelines(self) -> Path:
        """KFP's local pipeline root: every local run's task outputs, and its cache."""
        return self.root / "pipelines"

    @property
    def bench(self) -> Path:
        """Benchmark results (JSON)."""
        return self.root / "bench"


def load_settings(
    model: type[M],
    *,
    env_prefix: str,
    config_file: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> M:
    """Build ``model`` from defaults < YAML file < ``{env_prefix}FIELD`` env vars < overrides.

    ``overrides`` are flags; a flag left at ``None`` does not override.
    """
    values: dict[str, Any] = dict(_read_yaml(config_file)) if config_file else {}
    env = os.environ if environ is None else environ
    for name in model.model_fields:
        key = f"{env_prefix}{name.upper()}"
        if key in env:
            values[name] = env[key]
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return model.model_validate(values)
    except ValidationError as e:
        raise ConfigError(f"invalid {model.__name__}: {e}") from e


def _read_yaml(path: Path) -> Mapping[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read settings file {path}: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"settings file {path} must hold a mapping, not {type(data).__name__}")
    return data
