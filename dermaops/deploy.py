"""What a deployment is: the KServe InferenceService for one model version, or a local pointer.

KServe's storage initializer cannot resolve ``models:/`` URIs, so a deployment always names the
artifact URI of the version (``s3://…``, ``gs://…``, ``file://…``) that the registry resolved.
This module only builds documents; applying them belongs to the caller (the deploy component).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from dermaops.errors import ConfigError

MODEL_MOUNT = "/mnt/models"
TRAINER_IMAGE = "ghcr.io/dermaops/trainer:0.1.0"  # every pipeline task (Dockerfile target trainer)
SERVING_IMAGE = "ghcr.io/dermaops/serving:0.1.0"  # the predictor (Dockerfile target serving)
POINTER = "current.json"


class ServiceSettings(BaseModel):
    """The InferenceService around the predictor: image, scale, resources, canary."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field("dermaops", pattern=r"^[a-z]([-a-z0-9]*[a-z0-9])?$", max_length=45)
    namespace: str = Field("dermaops", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    image: str = Field(SERVING_IMAGE, description="the predictor image")
    canary_percent: int = Field(
        0, ge=0, le=100, description="traffic to the new version while the last one serves the rest"
    )
    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(4, ge=1)
    scale_metric: str = Field("concurrency", pattern="^(cpu|memory|concurrency|rps)$")
    scale_target: int = Field(4, ge=1, description="in-flight requests per replica")
    cpu: str = "1"
    memory: str = "2Gi"
    gpus: int = Field(0, ge=0, description="nvidia.com/gpu per replica (0: ONNX Runtime on CPU)")
    service_account: str = Field("", description="one that may read the model store")
    monitor_url: str = Field(
        "http://dermaops-monitor.dermaops.svc:8000",
        description="the monitor the predictor sends its records to (features, never pixels; "
        "KServe's logger would send the images); empty: none",
    )


def inference_service(storage_uri: str, model_version: str, s: ServiceSettings) -> dict[str, Any]:
    """The InferenceService manifest serving ``storage_uri`` with the DermaOps predictor."""
    limits: dict[str, Any] = {"cpu": s.cpu, "memory": s.memory}
    if s.gpus:
        limits["nvidia.com/gpu"] = s.gpus
    predictor: dict[str, Any] = {
        "minReplicas": s.min_replicas,
        "maxReplicas": s.max_replicas,
        "scaleMetric": s.scale_metric,
        "scaleTarget": s.scale_target,
        "containers": [
            {
                "name": "kserve-container",
                "image": s.image,
                "args": ["--model_name", s.name, "--model_dir", MODEL_MOUNT, "--http_port", "8080"],
                "env": [
                    # KServe's webhook adds the storage initializer for this variable.
                    {"name": "STORAGE_URI", "value": storage_uri},
                    {"name": "DERMAOPS_SERVING_MODEL_VERSION", "value": model_version},
                    *(
                        [{"name": "DERMAOPS_SERVING_MONITOR_URL", "value": s.monitor_url}]
                        if s.monitor_url
                        else []
                    ),
                ],
                "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                "resources": {"requests": {"cpu": s.cpu, "memory": s.memory}, "limits": limits},
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "runAsNonRoot": True,
                    "capabilities": {"drop": ["ALL"]},
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
            }
        ],
    }
    if s.canary_percent:
        predictor["canaryTrafficPercent"] = s.canary_percent
    if s.service_account:
        predictor["serviceAccountName"] = s.service_account
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": s.name,
            "namespace": s.namespace,
            "labels": {
                "app.kubernetes.io/name": "dermaops",
                "app.kubernetes.io/component": "predictor",
                "dermaops.io/model-version": model_version,
            },
            "annotations": {"serving.kserve.io/enable-prometheus-scraping": "true"},
        },
        "spec": {"predictor": predictor},
    }


def write_pointer(folder: Path, model_uri: str, name: str, version: str) -> Path:
    """Point the local predictor at a version: ``folder/current.json``, replaced atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    pointer = {
        "model_uri": model_uri,
        "name": name,
        "version": version,
        "deployed_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    staged = folder / f".{POINTER}.partial"
    staged.write_text(json.dumps(pointer, indent=2) + "\n")
    staged.replace(folder / POINTER)
    return folder / POINTER


def read_pointer(folder: Path, when_missing: str) -> tuple[str, str]:
    """(model URI, version) of the locally deployed model, from ``folder/current.json``.

    Raises:
        ConfigError: nothing is deployed (the message ends with ``when_missing``, what to do
            instead), or the file is not a pointer.
    """
    pointer = folder / POINTER
    try:
        target = json.loads(pointer.read_text())
        return str(target["model_uri"]), str(target["version"])
    except FileNotFoundError as e:
        raise ConfigError(f"no deployed model ({pointer} is missing): {when_missing}") from e
    except (OSError, ValueError, KeyError) as e:
        raise ConfigError(f"{pointer} is not a deployment pointer: {e}") from e
