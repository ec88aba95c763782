"""The connection to MLflow, and one MLflow run per pipeline run.

Tracking URI: the setting, else ``MLFLOW_TRACKING_URI`` (a cluster passes it from a Secret),
else sqlite under ``DERMAOPS_HOME/mlflow`` with file artifacts beside it: the embedded default.
A server that proxies artifacts (``mlflow server --serve-artifacts``) hands out
``mlflow-artifacts:/`` URIs; the artifacts destination setting maps them to the store itself.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from mlflow.entities import Run
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from pydantic import BaseModel, ConfigDict, Field

from dermaops.errors import DermaOpsError
from dermaops.settings import ARTIFACTS_DESTINATION_ENV, Home

log = logging.getLogger(__name__)

KFP_RUN_TAG = "dermaops.kfp_run_id"
FAILED_STAGE_TAG = "dermaops.failed_stage"
FAILURE_TAG = "dermaops.failure"
FACT_PREFIX = "dermaops.fact."


class RegistryError(DermaOpsError):
    """MLflow could not be reached, or holds no such model, version or alias."""


class RegistrySettings(BaseModel):
    """Where runs and models are kept."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    tracking_uri: str = Field("", description="empty: MLFLOW_TRACKING_URI, else local sqlite")
    experiment: str = Field("dermaops", min_length=1)
    model_name: str = Field("dermaops", min_length=1, description="the registered model")
    artifacts_destination: str = Field(
        "",
        description="the tracking server's --artifacts-destination when it proxies artifacts "
        f"(mlflow-artifacts:/ URIs); empty: {ARTIFACTS_DESTINATION_ENV}",
    )


class Registry:
    """MLflow tracking and model registry behind one object."""

    def __init__(self, settings: RegistrySettings | None = None, home: Home | None = None):
        self.settings = settings or RegistrySettings()
        self.home = home or Home.from_env()
        self.uri = self.settings.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "")
        self.artifacts_destination = self.settings.artifacts_destination or os.environ.get(
            ARTIFACTS_DESTINATION_ENV, ""
        )
        self.local = not self.uri
        if self.local:
            self.home.mlflow.mkdir(parents=True, exist_ok=True)
            self.uri = f"sqlite:///{self.home.mlflow.resolve() / 'mlflow.db'}"
        self.client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    @property
    def model_name(self) -> str:
        return self.settings.model_name

    def experiment_id(self) -> str:
        """The experiment's id, created on first use (local artifacts beside the sqlite file)."""
        name = self.settings.experiment
        with _reaching(self.uri):
            found = self.client.get_experiment_by_name(name)
            if found is not None:
                return str(found.experiment_id)
            location = (self.home.mlflow / "artifacts").resolve().as_uri() if self.local else None
            try:
                return str(self.client.create_experiment(name, artifact_location=location))
            except MlflowException:  # created meanwhile by a parallel task
                again = self.client.get_experiment_by_name(name)
                if again is None:
                    raise
                return str(again.experiment_id)

    def pipeline_run(self, kfp_run_id: str, pipeline: str = "") -> Run:
        """The MLflow run of one pipeline run, created by whichever stage asks first."""
        experiment = self.experiment_id()
        query = f"tags.`{KFP_RUN_TAG}` = '{kfp_run_id}'"
        with _reaching(self.uri):
            found = self.client.search_runs([experiment], filter_string=query, max_results=1)
            if found:
                return found[0]
            tags = {KFP_RUN_TAG: kfp_run_id, "dermaops.pipeline": pipeline}
            name = f"{pipeline or 'run'}-{kfp_run_id[-12:]}"
            return self.client.create_run(experiment, tags=tags, run_name=name)

    def latest_pipeline_run(self, pipeline: str, since_ms: int = 0) -> Run | None:
        """The newest MLflow run of a ``pipeline`` started at or after ``since_ms``."""
        query = f"tags.`dermaops.pipeline` = '{pipeline}' and attributes.start_time >= {since_ms}"
        with _reaching(self.uri):
            found = self.client.search_runs(
                [self.experiment_id()],
                query,
                max_results=1,
                order_by=["attributes.start_time DESC"],
            )
        return found[0] if found else None

    def record_failure(self, kfp_run_id: str, stage: str, error: BaseException) -> None:
        """Tag the pipeline run with the stage that failed and why (the exit handler reads it)."""
        run = self.pipeline_run(kfp_run_id)
        with _reaching(self.uri):
            self.client.set_tag(run.info.run_id, FAILED_STAGE_TAG, stage)
            self.client.set_tag(run.info.run_id, FAILURE_TAG, f"{type(error).__name__}: {error}")

    def tag_pipeline_run(self, kfp_run_id: str, facts: dict[str, str]) -> None:
        """Record facts of a pipeline run as ``dermaops.<key>`` tags (the summary lists them)."""
        self.tag_run(self.pipeline_run(kfp_run_id).info.run_id, facts)

    def tag_run(self, run_id: str, facts: dict[str, str]) -> None:
        """Record facts of an MLflow run as ``dermaops.fact.<key>`` tags."""
        with _reaching(self.uri):
            for key, value in facts.items():
                self.client.set_tag(run_id, f"{FACT_PREFIX}{key}", value)

    def run_facts(self, kfp_run_id: str) -> dict[str, str]:
        """The facts recorded with :meth:`tag_pipeline_run`, and where to look in MLflow."""
        run = self.pipeline_run(kfp_run_id)
        tags: dict[str, str] = run.data.tags
        facts = {
            k[len(FACT_PREFIX) :]: v for k, v in sorted(tags.items()) if k.startswith(FACT_PREFIX)
        }
        facts["mlflow_run"] = f"{run.info.run_id} (experiment {self.settings.experiment})"
        if "f1_macro" in run.data.metrics:
            facts["test_f1_macro"] = f"{run.data.metrics['f1_macro']:.4f}"
        return facts

    def failure(self, kfp_run_id: str) -> tuple[str, str]:
        """(stage, message) recorded for a pipeline run, or ("", "") if none."""
        tags: dict[str, Any] = self.pipeline_run(kfp_run_id).data.tags
        return tags.get(FAILED_STAGE_TAG, ""), tags.get(FAILURE_TAG, "")


@contextmanager
def _reaching(uri: str) -> Iterator[None]:
    try:
        yield
    except MlflowException as e:
        raise RegistryError(f"MLflow at {uri} failed: {e.message}") from e


def run_of(version: ModelVersion) -> str:
    """The run that logged a version.

    Raises:
        RegistryError: the version was registered without a run (not by DermaOps).
    """
    if not version.run_id:
        raise RegistryError(
            f"{version.name} version {version.version} has no run: it was not registered by "
            "DermaOps's register stage, so it has no evaluation or lineage to read"
        )
    return str(version.run_id)


def alias_version(reg: Registry, alias: str) -> str | None:
    """The version an alias points at, or None when it is not set."""
    try:
        return str(reg.client.get_model_version_by_alias(reg.model_name, alias).version)
    except MlflowException as e:
        if e.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise RegistryError(f"could not read alias {alias}: {e.message}") from e
