"""What the monitor is told: its inputs, schedules, the retraining command and its token.

``dermaops monitor serve`` builds it from its options; the chart sets those options from its
values (``monitor.*``), and the rollout and estimate sections from ``DERMAOPS_ROLLOUT_*`` and
``DERMAOPS_ESTIMATE_*``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from dermaops.evaluation.estimate import EstimateSettings
from dermaops.evaluation.live import LiveSettings
from dermaops.monitoring.drift import DriftSettings
from dermaops.rollout.plan import RolloutSettings


class MonitorSettings(BaseModel):
    """The monitor's schedule, inputs and what a retraining trigger runs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    reference: str = Field(..., description="reference_stats.csv, or a model folder holding one")
    reference_version: str = Field(
        "", description="registered version the reference belongs to (empty: unknown)"
    )
    registry_model: str = Field(
        "",
        description="registered model whose versions' references the monitor fetches when "
        "traffic moves to a new version (MLflow, MLFLOW_TRACKING_URI); empty: never fetch",
    )
    inference_log: str = Field(..., description="the predictor's inference log folder")
    out: str = Field(..., description="where reports and the trigger record go")
    interval_s: float = Field(900, gt=0, description="seconds between scheduled drift runs")
    cooldown_s: float = Field(6 * 3600, ge=0, description="no second retraining run within this")
    retrain_command: str = Field(
        "dermaops pipeline run --local --kind retraining",
        description="what a trigger runs (on a cluster: dermaops pipeline submit --host ...)",
    )
    token: SecretStr = Field(..., description="bearer token the POST paths require")
    drift: DriftSettings = DriftSettings()
    reconcile_every_s: float = Field(
        0, ge=0, description="seconds between passes of the champion reconciler (0: never)"
    )
    feedback_dir: str = Field(
        "", description="the clinicians' feedback store, scored per version (empty: none)"
    )
    live: LiveSettings = LiveSettings()
    serve_on: Literal["local", "kubernetes"] = Field(
        "local", description="where the reconciler serves the champion"
    )
    rollout: RolloutSettings = RolloutSettings()
    estimate: EstimateSettings = EstimateSettings()
    prometheus_url: str = Field(
        "", description="Prometheus the rollout judge asks for request counts (empty: none)"
    )
    release: str = Field("dermaops", description="the chart's release (serve_on kubernetes)")
    namespace: str = Field("dermaops", description="its namespace")

    @model_validator(mode="after")
    def _reconcile_needs_a_model(self) -> MonitorSettings:
        if self.reconcile_every_s and not self.registry_model:
            raise ValueError("reconcile_every_s needs registry_model, the model whose champion")
        return self
