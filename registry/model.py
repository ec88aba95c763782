"""Log a trained model with everything serving needs, and register it as ``challenger``.

The registered artifact is an MLflow pyfunc model whose ``artifacts/model_dir`` is the DermaOps
model directory (weights, ONNX, model.json with preprocessing, labels, calibration with the
operating threshold, and the drift reference), so KServe's storage initializer can fetch it
from the artifact store and ``mlflow.pyfunc.load_model`` can run it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.entities import Metric, Param
from mlflow.entities.model_registry import ModelVersion
from mlflow.models import ModelSignature
from mlflow.pyfunc.model import PythonModel
from mlflow.types import ColSpec, Schema

import dermaops
from dermaops.data.fingerprint import file_sha256
from dermaops.errors import DermaOpsError
from dermaops.evaluation.gate import GateFailedError, GateThresholds, check
from dermaops.evaluation.result import METRICS, EvaluationMetrics
from dermaops.labels import CLASSES
from dermaops.model.artifact import WEIGHTS, ModelArtifact, assemble
from dermaops.notify import RunFacts
from dermaops.registry.card import log_card
from dermaops.registry.client import ALREADY_EXISTS, Registry, RegistryError, alias_version
from dermaops.registry.tags import (
    F1_MACRO_TAG,
    GATE_TAG_PREFIX,
    GENERATED_DATA_TAG,
    MELANOMA_SENSITIVITY_TAG,
    MELANOMA_THRESHOLD_TAG,
    STORAGE_URI_TAG,
    TEST_SPLIT_TAG,
)
from dermaops.settings import ARTIFACTS_DESTINATION_ENV

log = logging.getLogger(__name__)

CHALLENGER, CHAMPION, PREVIOUS = "challenger", "champion", "previous"
SCALARS = ("accuracy", "balanced_accuracy", "f1_macro", "f1_weighted", "auc_macro_ovr", "ece",
           "ece_uncalibrated", "temperature")  # fmt: skip
MELANOMA = ("threshold", "test_sensitivity", "test_specificity")
MLFLOW_BATCH = 1000  # metrics per log_batch call, MLflow's limit
MODEL_ARTIFACT = "model"
SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("binary", "image")]),
    outputs=Schema([*(ColSpec("double", c) for c in CLASSES), ColSpec("boolean", "melanoma")]),
)


class DermaOpsPyfunc(PythonModel):
    """``mlflow.pyfunc.load_model`` support: encoded images in, probabilities and flag out."""

    def load_context(self, context: Any) -> None:
        self.artifact = ModelArtifact.load(Path(context.artifacts["model_dir"]))
        self.model = self.artifact.torch_model()

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        import torch

        from dermaops.imaging import decode
        from dermaops.model.stem import images_to_batch

        images = [decode(bytes(b)).image for b in model_input["image"]]
        with torch.inference_mode():
            logits = self.model(images_to_batch(images, self.artifact.preprocessing)).float()
        probs = self.artifact.probabilities(logits.numpy())
        frame = pd.DataFrame(probs.astype(np.float64), columns=list(CLASSES))
        frame["melanoma"] = self.artifact.melanoma_flags(probs)
        return frame


def register(
    reg: Registry,
    run_id: str,
    model_dir: Path,
    prepared: Path,
    eval_dir: Path,
    tags: dict[str, str] | None = None,
) -> ModelVersion:
    """Log ``model_dir`` with calibration, embedding projection and drift reference (from the
    evaluation in ``eval_dir``); register it as ``challenger``."""
    metrics = EvaluationMetrics.read(eval_dir)
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "model_dir"
        calibration = assemble(model_dir, prepared, eval_dir, staged)
        saved = Path(tmp) / MODEL_ARTIFACT
        mlflow.pyfunc.save_model(
            path=str(saved),
            python_model=DermaOpsPyfunc(),
            artifacts={"model_dir": str(staged)},
            signature=SIGNATURE,
            pip_requirements=[f"dermaops=={dermaops.__version__}"],
            metadata={"dermaops": ModelArtifact.load(staged).meta | calibration},
        )
        try:
            reg.client.log_artifacts(run_id, str(saved), MODEL_ARTIFACT)
        except RegistryError as e:
            raise RegistryError(f"could not store the model in MLflow: {e}", e.error_code) from e
    source = f"{reg.client.get_run(run_id).info.artifact_uri}/{MODEL_ARTIFACT}"
    version = _create_version(reg, source, run_id, version_tags(metrics, prepared) | (tags or {}))
    _record_storage_uri(reg, str(version.version))
    reg.client.set_registered_model_alias(reg.model_name, CHALLENGER, version.version)
    log.info("registered %s version %s as %s", reg.model_name, version.version, CHALLENGER)
    return version


def _create_version(reg: Registry, source: str, run_id: str, tags: dict[str, str]) -> ModelVersion:
    try:
        reg.client.create_registered_model(reg.model_name)
    except RegistryError as e:
        if e.error_code != ALREADY_EXISTS:
            raise
    try:
        return reg.client.create_model_version(reg.model_name, source, run_id, tags=tags)
    except RegistryError as e:
        raise RegistryError(f"could not register {source}: {e}", e.error_code) from e


def store_uri(uri: str, destination: str) -> str:
    """The URI of an artifact in the store itself, what KServe's storage initializer fetches.

    A tracking server that proxies artifacts hands out ``mlflow-artifacts:/PATH`` for what it
    keeps at ``DESTINATION/PATH`` (its ``--artifacts-destination``); other URIs name the store.

    Raises:
        RegistryError: a proxied URI and no destination to map it to.
    """
    parsed = urlparse(uri)
    if parsed.scheme != "mlflow-artifacts":
        return uri
    if not destination:
        raise RegistryError(
            f"{uri} is proxied by the MLflow server, and KServe cannot fetch it: set "
            f"{ARTIFACTS_DESTINATION_ENV} to the server's --artifacts-destination"
        )
    return f"{destination.rstrip('/')}/{parsed.path.lstrip('/')}"


def storage_uri(reg: Registry, version: str) -> str:
    """Where a version's files are in the artifact store: the URI deploy hands to KServe.

    Raises:
        RegistryError: no such version, or its files are only reachable through MLflow.
    """
    found = reg.client.get_model_version(reg.model_name, version)
    recorded = found.tags.get(STORAGE_URI_TAG)
    uri = recorded or reg.client.get_model_version_download_uri(reg.model_name, version)
    return store_uri(uri, reg.artifacts_destination)


def _record_storage_uri(reg: Registry, version: str) -> None:
    """Tag the new version with where its files are, so deploy needs no mapping of its own."""
    try:
        uri = storage_uri(reg, version)
    except RegistryError as e:
        log.warning("version %s: %s (deploying it to a cluster will fail)", version, e)
        return
    reg.client.set_model_version_tag(reg.model_name, version, STORAGE_URI_TAG, uri)


def version_tags(metrics: EvaluationMetrics, prepared: Path) -> dict[str, str]:
    """What a reviewer of a version needs at a glance, and the test split it was judged on."""
    return {
        F1_MACRO_TAG: f"{metrics.f1_macro:.4f}",
        MELANOMA_SENSITIVITY_TAG: f"{metrics.melanoma.test_sensitivity:.4f}",
        MELANOMA_THRESHOLD_TAG: f"{metrics.melanoma.threshold:.6f}",
        GENERATED_DATA_TAG: str(metrics.generated).lower(),
        TEST_SPLIT_TAG: test_split_digest(prepared),
    }


def gate_tags(thresholds: GateThresholds) -> dict[str, str]:
    """The gate a version was judged by, recorded with it (hand promotion and rollback reuse it)."""
    return {f"{GATE_TAG_PREFIX}{k}": str(v) for k, v in thresholds.model_dump().items()}


def recorded_thresholds(reg: Registry, version: str) -> GateThresholds | None:
    """The gate recorded with ``version``; None for a version registered without one."""
    tags = reg.client.get_model_version(reg.model_name, version).tags
    recorded = {k.removeprefix(GATE_TAG_PREFIX): v for k, v in tags.items()
                if k.startswith(GATE_TAG_PREFIX)}  # fmt: skip
    return GateThresholds.model_validate(recorded) if recorded else None


def test_split_digest(prepared: Path) -> str:
    """A short hash of the test split's image ids: equal digests, same test split."""
    info = pd.read_csv(prepared / "split_info.csv", dtype=str)
    ids = sorted(info.loc[info["split"] == "test", "image_id"])
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]


def epoch_metrics(history: list[dict[str, Any]], timestamp: int) -> list[Metric]:
    """Each epoch's numbers of a training history (``history.json``) as MLflow metric histories,
    stepped by epoch: the learning curves the MLflow UI draws (``train_loss``,
    ``val_f1_macro``, ...)."""
    return [
        Metric(key, float(value), timestamp, int(record["epoch"]))
        for record in history
        for key, value in record.items()
        if key not in ("epoch", "seconds") and isinstance(value, int | float)
        and not isinstance(value, bool)
    ]  # fmt: skip


def log_run(
    reg: Registry,
    run_id: str,
    params: dict[str, Any],
    metrics: dict[str, float],
    artifacts: list[tuple[str, Path]],
    history: list[dict[str, Any]] | None = None,
) -> None:
    """Params and metrics of one pipeline run, its training ``history`` as per-epoch metric
    histories, and (artifact folder, local file or folder)."""
    now = int(time.time() * 1000)
    logged = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
    logged += epoch_metrics(history or [], now)
    try:
        reg.client.log_batch(run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])
        for start in range(0, len(logged), MLFLOW_BATCH):  # MLflow takes 1,000 per call
            reg.client.log_batch(run_id, metrics=logged[start : start + MLFLOW_BATCH])
        for name, path in artifacts:
            if path.is_dir():
                reg.client.log_artifacts(run_id, str(path), name)
            elif path.is_file():
                reg.client.log_artifact(run_id, str(path), name)
    except RegistryError as e:
        raise RegistryError(f"could not log run {run_id} to MLflow: {e}", e.error_code) from e


def download(reg: Registry, version: str, dest: Path) -> Path:
    """Fetch a version's artifact and return its DermaOps model directory."""
    from dermaops.model.artifact import locate_model_dir

    try:
        source = reg.client.get_model_version_download_uri(reg.model_name, version)
        local = reg.download(source, dest)
    except RegistryError as e:
        raise RegistryError(
            f"could not download {reg.model_name} v{version}: {e}", e.error_code
        ) from e
    return locate_model_dir(local)


def log_training_run(
    reg: Registry,
    run_id: str,
    prepared: Path,
    run_dir: Path,
    eval_dir: Path,
    baseline_dir: Path | None,
    card_out: Path | None = None,
    thresholds: GateThresholds | None = None,
) -> str:
    """Log one training run (settings, data, metrics, reports, the baseline's figures when it
    was scored), register its model with the gate ``thresholds`` it passed, and log the
    version's model card (also written to ``card_out`` when given).

    Returns:
        The registered version.
    """
    meta = ModelArtifact.load(run_dir / "model").meta
    metrics = EvaluationMetrics.read(eval_dir)
    manifest = json.loads((prepared / "manifest.json").read_text())
    params = {f"train.{k}": v for k, v in meta.get("train_settings", {}).items()}
    params |= {
        "data.fingerprint": manifest["fingerprint"],
        "data.images": manifest["images"],
        "data.generated": manifest["generated"],
        "data.test_split": test_split_digest(prepared),
        "dermaops_version": dermaops.__version__,
    }
    figures, melanoma = metrics.model_dump(), metrics.melanoma.model_dump()
    scalars = {k: figures[k] for k in SCALARS if figures[k] is not None}
    scalars |= {f"melanoma_{k.removeprefix('test_')}": melanoma[k] for k in MELANOMA}
    scalars |= {f"f1.{code}": row.f1 for code, row in metrics.per_class.items()}
    if baseline_dir is not None:
        baseline = EvaluationMetrics.read(baseline_dir)
        scalars |= {
            "baseline_f1_macro": baseline.f1_macro,
            "baseline_accuracy": baseline.accuracy,
            "baseline_melanoma_sensitivity": baseline.melanoma.test_sensitivity,
        }
    if metrics.subgroups is not None:
        flagged = [g for g in metrics.subgroups["gaps"] if g["flagged"]]
        scalars["subgroup_gaps_flagged"] = len(flagged)
    if metrics.ood is not None:  # the out-of-distribution guard's figures on generated images
        ood = metrics.ood
        scalars |= {"ood_auroc": ood["auroc"], "ood_caught": ood["caught"],
                    "ood_held_out_passed": ood["held_out_passed"]}  # fmt: skip
        scalars |= {f"ood_auroc.{kind}": k["auroc"] for kind, k in ood["kinds"].items()}
    data_files = ["data_report.json", "data_report.md", "class_distribution.png", "split_info.csv"]
    artifacts = [
        ("evaluation", eval_dir),
        ("training", run_dir / "curves.png"),
        ("training", run_dir / "history.json"),
        *([("baseline", baseline_dir / METRICS)] if baseline_dir is not None else []),
        *(("data", prepared / name) for name in data_files),
    ]
    if metrics.precision is not None:  # the INT8 graph: kept or not, and its change in points
        decision = metrics.precision
        scalars["int8_served"] = float(decision.serve == "int8")
        scalars |= {f"int8_delta.{k}": v for k, v in decision.deltas_points.items()}
    history_file = run_dir / "history.json"  # runs trained before it existed have none
    history = json.loads(history_file.read_text()) if history_file.is_file() else []
    log_run(reg, run_id, params, scalars, artifacts, history)
    parent = alias_version(reg, CHAMPION)
    tags = gate_tags(thresholds) if thresholds is not None else None
    version = register(reg, run_id, run_dir / "model", prepared, eval_dir, tags)
    reg.tag_run(run_id, RunFacts(registered_version=str(version.version)))
    log_card(reg, version, metrics, run_dir / "model", prepared, parent, card_out)
    return str(version.version)


BY_HAND = "by-hand"  # the pipeline (PIPELINE_TAG) of a run registered by hand


class EvaluationOfAnotherModelError(DermaOpsError):
    """An evaluation given with a run measured another model: its figures would be registered
    as this model's."""


def register_by_hand(
    reg: Registry,
    run_dir: Path,
    eval_dir: Path,
    prepared: Path,
    baseline_dir: Path | None,
    thresholds: GateThresholds,
) -> str:
    """What a training pipeline's gate and register stages do, for a run trained and evaluated
    by hand (``dermaops train``, ``dermaops evaluate``): the gate on its test figures, then the
    same logging and registration, in an MLflow run of its own (pipeline ``by-hand``), the
    thresholds recorded on the version for promotion and rollback to judge it by.

    Raises:
        GateFailedError: the evaluation misses a threshold (nothing is logged).
        MetricsFileError: a damaged or missing ``metrics.json``.
        ModelFolderError: ``run_dir`` holds no model.
        EvaluationOfAnotherModelError: ``eval_dir`` measured other weights (nothing is logged).
        RegistryError: MLflow refused or could not be reached.
    """
    metrics = EvaluationMetrics.read(eval_dir)
    artifact = ModelArtifact.load(run_dir / "model")  # no model: fails before MLflow
    _measured_this_model(metrics, artifact, eval_dir)
    result = check(metrics, thresholds)
    if not result.passed:
        raise GateFailedError(result.reasons)
    run = reg.pipeline_run(f"hand-{uuid.uuid4().hex[:12]}", BY_HAND)
    return log_training_run(reg, run.info.run_id, prepared, run_dir, eval_dir, baseline_dir,
                            thresholds=thresholds)  # fmt: skip


def _measured_this_model(
    metrics: EvaluationMetrics, artifact: ModelArtifact, eval_dir: Path
) -> None:
    """Refuse an evaluation of other weights: by their sha256 where ``metrics.json`` has it,
    else (files from before it) by architecture, image size and best epoch."""
    measured = metrics.model
    weights = artifact.folder / WEIGHTS
    if measured.weights_sha256 is not None:
        found = file_sha256(weights)
        if found != measured.weights_sha256:
            raise EvaluationOfAnotherModelError(
                f"{eval_dir} measured weights {measured.weights_sha256[:12]}, but {weights} is "
                f"{found[:12]}: evaluate this run's model (dermaops evaluate --run ...)"
            )
        return
    ours = {"arch": artifact.arch, "image_size": artifact.preprocessing.image_size,
            "best_epoch": artifact.meta.get("best_epoch")}  # fmt: skip
    theirs = measured.model_dump(include=set(ours), exclude_none=True)  # what the file has
    differ = {k: (v, ours[k]) for k, v in theirs.items() if v != ours[k]}
    if differ:
        said = ", ".join(f"{k} {a} (the run's: {b})" for k, (a, b) in differ.items())
        raise EvaluationOfAnotherModelError(
            f"{eval_dir} measured another model: {said}; evaluate this run's model "
            "(dermaops evaluate --run ...)"
        )
