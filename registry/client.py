"""The connection to MLflow, and one MLflow run per pipeline run.

Tracking URI: the setting, else ``MLFLOW_TRACKING_URI`` (a cluster passes it from a Secret),
else sqlite under ``DERMAOPS_HOME/mlflow`` with file artifacts beside it: the embedded default.
A server that proxies artifacts (``mlflow server --serve-artifacts``) hands out
``mlflow-artifacts:/`` URIs; the artifacts destination setting maps them to the store itself.

This module is the registry's one boundary with MLflow: every call through
:attr:`Registry.client` or :meth:`Registry.download` that fails raises :class:`RegistryError`,
naming the tracking URI and the operation and carrying MLflow's error code, raised from
MLflow's own exception. No other module imports ``mlflow.exceptions``.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import mlflow.artifacts
from mlflow.entities import Run
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from pydantic import BaseModel, ConfigDict, Field

from dermaops.errors import DermaOpsError
from dermaops.notify import RunFacts
from dermaops.registry.tags import (
    FACT_PREFIX,
    FAILED_STAGE_TAG,
    FAILURE_TAG,
    KFP_RUN_TAG,
    PIPELINE_TAG,
)
from dermaops.settings import ARTIFACTS_DESTINATION_ENV, Home

log = logging.getLogger(__name__)

# What MLflow answers for a model, version, run or alias it does not hold (a missing alias is
# INVALID_PARAMETER_VALUE).
NOT_FOUND_CODES = frozenset({"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE"})
ALREADY_EXISTS = "RESOURCE_ALREADY_EXISTS"


class RegistryError(DermaOpsError):
    """MLflow could not be reached, or holds no such model, version or alias.

    ``error_code`` is MLflow's (``RESOURCE_DOES_NOT_EXIST``, ``INTERNAL_ERROR`` for a server
    not reached, ...); empty for an artifact store's I/O error, or an error of DermaOps's own.
    """

    def __init__(self, message: str, error_code: str = "") -> None:
        super().__init__(message)
        self.error_code = error_code

    @property
    def not_found(self) -> bool:
        """MLflow holds no such model, version, run or alias."""
        return self.error_code in NOT_FOUND_CODES


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
        client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
        # A proxy that forwards every method, typed as the client it forwards to: callers keep
        # MLflow's signatures under mypy, and the proxy changes only what a failure raises. (A
        # Protocol of the methods used, or a subclass overriding each, would have to follow
        # MLflow's API by hand, and a method missed would leak MlflowException.)
        self.client: MlflowClient = cast(MlflowClient, _Translating(client, self.uri))

    @property
    def model_name(self) -> str:
        return self.settings.model_name

    def download(self, artifact_uri: str, dest: Path) -> Path:
        """Fetch the artifacts at ``artifact_uri`` (a folder or a file) into ``dest``."""
        with _reaching(self.uri, "download_artifacts"):
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=artifact_uri, dst_path=str(dest), tracking_uri=self.uri
            )
        return Path(local)

    def experiment_id(self) -> str:
        """The experiment's id, created on first use (local artifacts beside the sqlite file)."""
        name = self.settings.experiment
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        location = (self.home.mlflow / "artifacts").resolve().as_uri() if self.local else None
        try:
            return str(self.client.create_experiment(name, artifact_location=location))
        except RegistryError:  # created meanwhile by a parallel task
            again = self.client.get_experiment_by_name(name)
            if again is None:
                raise
            return str(again.experiment_id)

    def pipeline_run(self, kfp_run_id: str, pipeline: str = "") -> Run:
        """The MLflow run of one pipeline run, created by whichever stage asks first."""
        experiment = self.experiment_id()
        query = f"tags.`{KFP_RUN_TAG}` = '{kfp_run_id}'"
        found = self.client.search_runs([experiment], filter_string=query, max_results=1)
        if found:
            return found[0]
        tags = {KFP_RUN_TAG: kfp_run_id, PIPELINE_TAG: pipeline}
        name = f"{pipeline or 'run'}-{kfp_run_id[-12:]}"
        return self.client.create_run(experiment, tags=tags, run_name=name)

    def latest_pipeline_run(self, pipeline: str, since_ms: int = 0) -> Run | None:
        """The newest MLflow run of a ``pipeline`` started at or after ``since_ms``."""
        query = f"tags.`{PIPELINE_TAG}` = '{pipeline}' and attributes.start_time >= {since_ms}"
        found = self.client.search_runs(
            [self.experiment_id()], query, max_results=1, order_by=["attributes.start_time DESC"]
        )
        return found[0] if found else None

    def record_failure(self, kfp_run_id: str, stage: str, error: BaseException) -> None:
        """Tag the pipeline run with the stage that failed and why (the exit handler reads it)."""
        run = self.pipeline_run(kfp_run_id)
        self.client.set_tag(run.info.run_id, FAILED_STAGE_TAG, stage)
        self.client.set_tag(run.info.run_id, FAILURE_TAG, f"{type(error).__name__}: {error}")

    def tag_pipeline_run(self, kfp_run_id: str, facts: RunFacts) -> None:
        """Record the set ``facts`` of a pipeline run (the summary lists them)."""
        self.tag_run(self.pipeline_run(kfp_run_id).info.run_id, facts)

    def tag_run(self, run_id: str, facts: RunFacts) -> None:
        """Record the set ``facts`` of an MLflow run, each as a ``dermaops.fact.<field>`` tag."""
        for key, value in facts.recorded().items():
            self.client.set_tag(run_id, f"{FACT_PREFIX}{key}", value)

    def run_facts(self, kfp_run_id: str) -> RunFacts:
        """The facts recorded with a pipeline run, and where to look in MLflow.

        Raises:
            RunFactsError: a fact this version does not know, or a value it cannot read.
        """
        return self.facts_of(self.pipeline_run(kfp_run_id))

    def facts_of(self, run: Run) -> RunFacts:
        """The facts recorded with ``run`` (:meth:`tag_run`), its id and its test macro-F1.

        A fact this version does not know (written by a newer one) is left out with a warning:
        the summary of a run never fails on it.

        Raises:
            RunFactsError: a known fact with a value it cannot read.
        """
        tags: dict[str, str] = run.data.tags
        recorded = {k.removeprefix(FACT_PREFIX): v for k, v in tags.items()
                    if k.startswith(FACT_PREFIX)}  # fmt: skip
        unknown = sorted(recorded.keys() - RunFacts.model_fields.keys())
        if unknown:
            log.warning("MLflow run %s: facts this version does not know, left out: %s",
                        run.info.run_id, ", ".join(unknown))  # fmt: skip
            recorded = {k: v for k, v in recorded.items() if k not in unknown}
        facts = RunFacts.parse(recorded, f"MLflow run {run.info.run_id}", FACT_PREFIX)
        where = f"{run.info.run_id} (experiment {self.settings.experiment})"
        f1: float | None = run.data.metrics.get("f1_macro")
        return facts.model_copy(update={"mlflow_run": where, "test_f1_macro": f1})

    def failure(self, kfp_run_id: str) -> tuple[str, str]:
        """(stage, message) recorded for a pipeline run, or ("", "") if none."""
        tags: dict[str, Any] = self.pipeline_run(kfp_run_id).data.tags
        return tags.get(FAILED_STAGE_TAG, ""), tags.get(FAILURE_TAG, "")


class _Translating:
    """An MlflowClient whose every failing call raises :class:`RegistryError` (see
    :func:`_reaching`); the rest passes through. ``Registry.client`` is one, typed as the
    client it wraps."""

    def __init__(self, client: MlflowClient, uri: str) -> None:
        self._client = client
        self._uri = uri

    def __getattr__(self, name: str) -> Any:
        found = getattr(object.__getattribute__(self, "_client"), name)  # no recursion unset
        if not callable(found):
            return found

        @functools.wraps(found)
        def call(*args: Any, **kwargs: Any) -> Any:
            with _reaching(self._uri, name):
                return found(*args, **kwargs)

        return call


@contextmanager
def _reaching(uri: str, operation: str) -> Iterator[None]:
    """MLflow's failures of ``operation`` as :class:`RegistryError`.

    MLflow's REST client retries, then raises MlflowException (an unreachable server included:
    code INTERNAL_ERROR); its artifact repositories raise ``requests`` errors, which are
    OSErrors, for an HTTP error status, and the local file store raises OSErrors itself.
    """
    try:
        yield
    except MlflowException as e:
        raise RegistryError(
            f"MLflow at {uri}: {operation} failed: {e.message}", e.error_code
        ) from e
    except OSError as e:
        raise RegistryError(f"MLflow at {uri}: {operation} failed: {type(e).__name__}: {e}") from e


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
    except RegistryError as e:
        if e.not_found:
            return None
        raise
