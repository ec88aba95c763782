"""The translator from the chart's rendered pods to podman commands (tests/k8s/podman_pods.py).

What it maps is checked on the real rendered chart; what it does not map must fail loudly.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from tests.k8s.chart import by_kind, pod_spec, render
from tests.k8s.podman_pods import (
    Host,
    Probe,
    UnmappedFieldError,
    kserve_predictor_pod,
    plan_pod,
)

pytestmark = pytest.mark.k8s

URI = "http://10.88.0.1:8000/model.tar.gz"
LOCAL = "localhost/dermaops-serving:ci"


@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    return render("--set", "kserve.enabled=false", "--set", f"model.storageUri={URI}")


def spec_of(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (doc,) = [d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == name]
    return pod_spec(doc)


def host(tmp_path: Path) -> Host:
    return Host(
        images={"ghcr.io/dermaops/serving:0.1.0": LOCAL},
        secrets={"dermaops-monitor-token": {"token": "s3cret"}},
        claims={"dermaops-monitor": "ci-monitor-home", "dermaops-feedback": "ci-feedback"},
        workdir=tmp_path,
    )


def flag(command: list[str], name: str) -> list[str]:
    return [command[i + 1] for i, part in enumerate(command) if part == name]


def test_an_inference_services_predictor_becomes_the_pod_kserves_webhook_makes(
    tmp_path: Path,
) -> None:
    """The predictor of the rendered InferenceService, as KServe makes its pod: the component's
    own fields gone, a storage initializer fetching STORAGE_URI into the provision volume,
    mounted read-only where the server reads its model; every field mapped to podman."""
    (isvc,) = by_kind(render("--set", f"model.storageUri={URI}"), "InferenceService")
    spec = kserve_predictor_pod(isvc, "localhost/dermaops-storage-initializer:ci")
    assert not {"minReplicas", "maxReplicas", "scaleMetric", "labels"} & set(spec)
    plan = plan_pod("dermaops-isvc", spec, {8080: 18081}, host(tmp_path))
    (init,) = plan.init
    assert init[-3:] == ["localhost/dermaops-storage-initializer:ci", URI, "/mnt/models"]
    (server,) = plan.run
    assert any(v.endswith(":/mnt/models:ro") for v in flag(server, "--volume"))
    assert "STORAGE_URI=/mnt/models" in flag(server, "--env"), "the server's URI is the folder"
    assert plan.readiness == [Probe("kserve-container", "/v2/health/ready", 8080)]
    logged = isvc | {"spec": {"predictor": isvc["spec"]["predictor"] | {"logger": {}}}}
    with pytest.raises(UnmappedFieldError, match="agent container"):
        kserve_predictor_pod(logged, "localhost/dermaops-storage-initializer:ci")


def test_the_predictor_runs_its_storage_initializer_first_then_the_server(
    docs: list[dict[str, Any]], tmp_path: Path
) -> None:
    plan = plan_pod("dermaops-predictor", spec_of(docs, "dermaops-predictor"), {8080: 18080},
                    host(tmp_path))  # fmt: skip
    assert plan.create[-2:] == ["--publish", "127.0.0.1:18080:8080"]
    (init,) = plan.init
    assert "--rm" in init and init[-2:] == [URI, "/mnt/models"], "$(STORAGE_URI) expanded"
    (server,) = plan.run
    assert "-d" in server and LOCAL in server
    assert flag(server, "--user") == ["10001:10001"] and flag(server, "--group-add") == ["10001"]
    assert "--read-only" in server and flag(server, "--cap-drop") == ["ALL"]
    assert flag(server, "--security-opt") == ["no-new-privileges"]
    assert flag(server, "--memory") == [str(3 * 2**30)] and flag(server, "--cpus") == ["2.0"]
    volumes = flag(server, "--volume")
    assert "dermaops-predictor-model:/mnt/models:ro" in volumes
    token = tmp_path / "secrets" / "dermaops-monitor-token"
    assert f"{token}:/var/run/secrets/dermaops/monitor-token:ro" in volumes
    assert (token / "token").read_text() == "s3cret"
    assert plan.volumes == ["dermaops-predictor-home", "dermaops-predictor-tmp",
                            "dermaops-predictor-model"]  # fmt: skip
    assert plan.owner == "10001:10001"
    assert plan.readiness == [Probe("kserve-container", "/v2/health/ready", 8080)]


def test_the_monitor_gets_its_claim_and_a_placeholder_token(
    docs: list[dict[str, Any]], tmp_path: Path
) -> None:
    plan = plan_pod("dermaops-monitor", spec_of(docs, "dermaops-monitor"), {8000: 18000},
                    host(tmp_path))  # fmt: skip
    (monitor,) = plan.run
    assert "ci-monitor-home:/var/lib/dermaops" in flag(monitor, "--volume")
    assert "ci-feedback:/var/lib/dermaops/feedback:ro" in flag(monitor, "--volume"), "the UI's"
    assert (tmp_path / "tokens" / "dermaops-monitor" / "kfp-token" / "token").is_file()
    assert plan.readiness[0].port == 8000


def test_mlflow_gets_its_secrets_as_env_and_only_the_listed_file(tmp_path: Path) -> None:
    docs = render("--set", "mlflow.enabled=true", "--set", f"model.storageUri={URI}")
    secrets = {
        "dermaops-mlflow-db": {"uri": "postgresql://u:p@db:5432/mlflow"},
        "dermaops-object-store": {"AWS_ACCESS_KEY_ID": "k", "MLFLOW_S3_ENDPOINT_URL": "http://s3"},
        "dermaops-mlflow-auth": {"basic_auth.ini": "[mlflow]", "flask_secret_key": "f"},
    }
    plan = plan_pod("dermaops-mlflow", spec_of(docs, "dermaops-mlflow"), {5000: 15000},
                    Host(images={}, secrets=secrets, claims={}, workdir=tmp_path))  # fmt: skip
    (server,) = plan.run
    env = flag(server, "--env")
    assert {"AWS_ACCESS_KEY_ID=k", "MLFLOW_S3_ENDPOINT_URL=http://s3",  # envFrom
            "MLFLOW_FLASK_SERVER_SECRET_KEY=f"} <= set(env)  # fmt: skip
    assert "--backend-store-uri=postgresql://u:p@db:5432/mlflow" in server, "$(VAR) from a Secret"
    auth = tmp_path / "secrets" / "dermaops-mlflow-auth"
    assert [p.name for p in auth.iterdir()] == ["basic_auth.ini"], "items: only the listed key"
    assert f"{auth}:/etc/mlflow/auth:ro" in flag(server, "--volume")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s.update(hostNetwork=True), r"\['hostNetwork'\] not mapped"),
        (lambda s: s["containers"][0]["volumeMounts"][0].update(subPath="x"), "subPath"),
        (lambda s: s["volumes"].append({"name": "c", "configMap": {"name": "c"}}), "configMap"),
        (lambda s: s["containers"][0]["securityContext"].update(privileged=True), "privileged"),
        (lambda s: s["containers"][0]["env"].append(
            {"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "x"}}}), "fieldRef"),
        (lambda s: s["securityContext"].update(seccompProfile={"type": "Unconfined"}),
         "Unconfined"),
        (lambda s: s["containers"][0].update(envFrom=[{"configMapRef": {"name": "c"}}]),
         "configMapRef"),
    ],
)  # fmt: skip
def test_a_field_it_does_not_map_is_an_error(
    docs: list[dict[str, Any]], tmp_path: Path, change: Any, message: str
) -> None:
    spec = copy.deepcopy(spec_of(docs, "dermaops-predictor"))
    change(spec)
    with pytest.raises(UnmappedFieldError, match=message):
        plan_pod("p", spec, {}, host(tmp_path))


def test_variables_expand_as_kubernetes_expands_them(tmp_path: Path) -> None:
    container = {"name": "c", "image": "i", "args": ["$(A)/$(B)", "$$(A)", "$(MISSING)"],
                 "env": [{"name": "A", "value": "a"}, {"name": "B", "value": "$(A)b"}]}  # fmt: skip
    plan = plan_pod("p", {"containers": [container]}, {}, host(tmp_path))
    assert plan.run[0][-3:] == ["a/ab", "$(A)", "$(MISSING)"]
