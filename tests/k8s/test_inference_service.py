"""The InferenceService the deploy stage renders is valid KServe v1beta1, strictly."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jsonschema
import pytest

from dermaops.deploy import ServiceSettings, inference_service

pytestmark = pytest.mark.k8s
URI = "s3://mlflow/1/abc/artifacts/model"


def test_rendered_service_passes_the_crd_schema(
    validate_custom_resource: Callable[[dict[str, Any]], None],
) -> None:
    logged = ServiceSettings(monitor_url="")
    for settings in (ServiceSettings(), ServiceSettings(gpus=1, canary_percent=20), logged):
        validate_custom_resource(inference_service(URI, "3", settings))


def test_schema_check_is_strict(validate_custom_resource: Callable[[dict[str, Any]], None]) -> None:
    doc = inference_service(URI, "3", ServiceSettings())
    doc["spec"]["predictor"]["canaryPercent"] = 10  # a plausible typo
    with pytest.raises(jsonschema.ValidationError, match="canaryPercent"):
        validate_custom_resource(doc)


def test_storage_uri_canary_and_gpu_are_where_kserve_reads_them() -> None:
    doc = inference_service(URI, "3", ServiceSettings(gpus=1, canary_percent=20, min_replicas=0))
    predictor = doc["spec"]["predictor"]
    container = predictor["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["STORAGE_URI"] == URI and not URI.startswith("models:/")
    assert predictor["canaryTrafficPercent"] == 20 and predictor["minReplicas"] == 0
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["securityContext"]["runAsNonRoot"] is True
    assert env["DERMAOPS_SERVING_MODEL_VERSION"] == "3"
    assert env["DERMAOPS_SERVING_MONITOR_URL"].endswith(":8000"), "features go to the monitor"
    assert "logger" not in predictor, "KServe's logger would send patients' images"
    assert (
        "canaryTrafficPercent"
        not in inference_service(URI, "3", ServiceSettings())["spec"]["predictor"]
    )


def test_names_kubernetes_would_refuse_are_refused_early() -> None:
    with pytest.raises(ValueError, match="name"):
        ServiceSettings(name="DermaOps_Model")
