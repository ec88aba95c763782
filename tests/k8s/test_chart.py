"""The Helm chart, proven without a cluster: helm lint and template, every object validated
strictly (built-in kinds against Kubernetes 1.30, custom resources against their CRDs), the
restricted pod-security policy, and the rules and routing it ships checked by their own tools."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.k8s.chart import (
    CHART,
    ISTIO,
    KUBE_VERSION,
    PROMETHEUS,
    URI,
    WORKLOADS,
    by_kind,
    containers,
    helm,
    pod_spec,
    render,
)
from tests.k8s.conftest import find_tool

pytestmark = pytest.mark.k8s

CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
CUSTOM = {"InferenceService", "ServiceMonitor", "PodMonitor", "PrometheusRule",
          "AuthorizationPolicy", "ClusterTrainingRuntime", "HTTPRoute"}  # fmt: skip


VARIANTS = {
    "defaults": URI,
    "no-kserve": [*URI, "--set", "kserve.enabled=false"],
    "everything": [*URI, "--set", "mlflow.enabled=true"],
    "no-kserve-canary": [
        *URI,
        *("--set", "kserve.enabled=false", "--set", "predictor.canary.enabled=true"),
        *("--set", "predictor.canary.parentRefs[0].name=clinic-gateway"),
        *("--set", "predictor.canary.hostnames={derma.example.org}"),
        *("--set", "monitor.registry.trackingUri=http://mlflow:5000"),
        *("--set", "monitor.rollout.enabled=true", *ISTIO),
    ],
    "kserve-shadow": [
        *URI,
        *ISTIO,
        "--set",
        "predictor.canary.enabled=true",
        *("--set", "monitor.registry.trackingUri=http://mlflow:5000"),
        *("--set", "monitor.rollout.enabled=true"),
        *("--set", "storageInitializer.credentialsSecret=model-store"),
    ],
    "trainer": [
        *URI,
        "--set",
        "trainer.enabled=true",
        "--set",
        "pipelines.checkpoints.accessModes={ReadWriteMany}",
    ],
    "istio-serverless": [
        *URI,
        *ISTIO,
        "--set",
        "kserve.deploymentMode=Serverless",
        "--set",
        "istio.monitoringPrincipals={" + PROMETHEUS + "}",
    ],
    "predictor-only": [
        *URI,
        *(
            arg
            for key in ("monitor", "ui", "alerts", "alertmanager")
            for arg in ("--set", f"{key}.enabled=false")
        ),
        "--set",
        "grafana.dashboard=false",
        "--set",
        "networkPolicy.enabled=false",
    ],
    **{path.stem: ["-f", str(path)] for path in CI_VALUES},
}


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render(*VARIANTS[request.param])


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.stem)
def test_lint_strict(values: Path) -> None:
    done = helm("lint", "--strict", str(CHART), "-f", str(values))
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_object_passes_strict_validation(
    rendered: list[dict[str, Any]],
    validate_custom_resource: Callable[[dict[str, Any]], None],
) -> None:
    for doc in rendered:
        if doc["kind"] in CUSTOM:
            validate_custom_resource(doc)
        else:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def test_validation_is_strict(validate_custom_resource: Callable[[dict[str, Any]], None]) -> None:
    docs = render(*URI)
    deployment = by_kind(docs, "Deployment")[0]
    deployment["spec"]["replica"] = 2  # a typo the API server refuses
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSION, strict=True)
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        kubernetes_validate.validate({**deployment, "kind": "Deploymnet"}, KUBE_VERSION, True)
    service = by_kind(docs, "InferenceService")[0]
    service["spec"]["predictor"]["minReplica"] = 1
    with pytest.raises(jsonschema.ValidationError, match="minReplica"):
        validate_custom_resource(service)


def test_restricted_pod_security_and_resources(rendered: list[dict[str, Any]]) -> None:
    for doc in rendered:
        if doc["kind"] not in WORKLOADS:
            continue
        pod = pod_spec(doc)
        assert pod["securityContext"]["runAsNonRoot"] is True, doc["metadata"]["name"]
        for c in containers(doc):
            where = f"{doc['metadata']['name']}/{c['name']}"
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["runAsNonRoot"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert sc["seccompProfile"]["type"] == "RuntimeDefault", where
            assert c["resources"]["requests"] and c["resources"]["limits"], where
            image = c["image"]
            assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), where
        if doc["kind"] != "Pod":  # servers: probes tied to the real readiness
            for c in pod["containers"]:
                assert {"readinessProbe", "livenessProbe"} <= set(c), doc["metadata"]["name"]


def test_secrets_are_referenced_by_name_never_carried(rendered: list[dict[str, Any]]) -> None:
    for secret in by_kind(rendered, "Secret"):
        assert set(secret["stringData"]) == {"alertmanager.yaml"}, "only routing, no credentials"
    text = yaml.safe_dump_all(rendered)
    for word in ("AWS_SECRET_ACCESS_KEY:", "password:", "hooks.slack.com"):
        assert word not in text


def test_predictor_serves_the_model_with_the_project_image() -> None:
    docs = render(*URI)
    (service,) = by_kind(docs, "InferenceService")
    predictor = service["spec"]["predictor"]
    (container,) = predictor["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["STORAGE_URI"] == "s3://dermaops/1/model"
    assert env["DERMAOPS_SERVING_MONITOR_URL"] == "http://dermaops-monitor.dermaops.svc:8000"
    assert container["image"] == "ghcr.io/dermaops/serving:0.1.0", "the chart's appVersion"
    assert (
        container["name"] == "kserve-container" and "--model_dir=/mnt/models" in container["args"]
    )
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert "canaryTrafficPercent" not in predictor


def test_images_can_be_pinned_by_digest() -> None:
    digest = "sha256:" + "ab" * 32
    initializer = f"kserve/storage-initializer:v0.21.0@{digest}"
    docs = render(*URI, "--set", f"images.serving.digest={digest}",
                  "--set", f"images.monitor.tag=abc123@{digest}",
                  "--set", f"storageInitializer.image={initializer}")  # fmt: skip
    images = {c["name"]: c["image"] for d in docs if d["kind"] in WORKLOADS for c in containers(d)}
    assert images["kserve-container"] == f"ghcr.io/dermaops/serving@{digest}"
    assert images["monitor"] == f"ghcr.io/dermaops/monitor:abc123@{digest}", "skaffold's form"
    assert images["storage-initializer"] == initializer, "make pin-images' form"
    for setting in ("images.ui.digest=sha256:abc", "images.ui.tag=v1@md5:00",
                    "images.mlflow.digest=sha256:abc"):  # fmt: skip
        done = helm("template", "x", str(CHART), *URI, "--set", setting)
        assert done.returncode != 0 and "pattern" in done.stderr, (setting, done.stderr)


def test_gpu_values_put_the_predictor_on_the_gpu_pool() -> None:
    docs = render("-f", str(CHART / "ci" / "gpu-values.yaml"))
    (service,) = by_kind(docs, "InferenceService")
    predictor = service["spec"]["predictor"]
    (container,) = predictor["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["image"].startswith("ghcr.io/dermaops/serving-gpu:")
    assert "--backend=cuda" in container["args"]
    assert predictor["nodeSelector"]["nvidia.com/gpu.present"] == "true"
    assert predictor["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert predictor["canaryTrafficPercent"] == 20
    assert service["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Serverless"


def test_without_kserve_a_plain_deployment_fetches_and_serves_the_model() -> None:
    docs = render(*URI, "--set", "kserve.enabled=false")
    assert not by_kind(docs, "InferenceService")
    predictor = next(
        d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("-predictor")
    )
    spec = pod_spec(predictor)
    (initializer,) = spec["initContainers"]
    assert initializer["args"] == ["$(STORAGE_URI)", "/mnt/models"], "expanded by the kubelet"
    assert initializer["env"] == [{"name": "STORAGE_URI", "value": "s3://dermaops/1/model"}]
    mounts = {m["name"]: m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}
    assert mounts["model"] == "/mnt/models"
    (hpa,) = by_kind(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == predictor["metadata"]["name"]
    services = {s["metadata"]["name"] for s in by_kind(docs, "Service")}
    assert "dermaops-predictor" in services, "the same Service name KServe would create"


def test_bad_values_are_refused_with_a_clear_message() -> None:
    missing = helm("template", "x", str(CHART))
    assert missing.returncode != 0 and "model.storageUri is required" in missing.stderr
    for setting, message in [("predictor.minReplicas=-1", "minimum"),
                             ("predictor.typo=1", "additional properties 'typo'"),
                             ("images.monitor.tag=latest", "/images/monitor/tag"),
                             ("kserve.deploymentMode=Knative", "deploymentMode"),
                             ("predictor.maxQueue=-2", "minimum"),
                             ("predictor.queueTimeout=90", "must not pass predictor.request"),
                             ("predictor.precision=int4", "/predictor/precision"),
                             ("predictor.gpu.enabled=true,predictor.precision=int8",
                              "precision int8 runs the INT8 ONNX graph on CPUs"),
                             ("predictor.backend=torch,predictor.precision=int8",
                              "or a torch backend"),
                             ]:  # fmt: skip
        done = helm("template", "x", str(CHART), *URI, "--set", setting)
        assert done.returncode != 0 and message in done.stderr, (setting, done.stderr)


def test_shipped_rules_routing_and_dashboard_are_the_tested_files(tmp_path: Path) -> None:
    docs = render(*URI)
    (rule,) = by_kind(docs, "PrometheusRule")
    source = yaml.safe_load((CHART / "files" / "alerts" / "dermaops.rules.yaml").read_text())
    assert rule["spec"] == source
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule["spec"]))
    promtool = find_tool("promtool")
    done = subprocess.run([promtool, "check", "rules", str(tmp_path / "rules.yaml")],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr

    (secret,) = by_kind(docs, "Secret")
    config = yaml.safe_load(secret["stringData"]["alertmanager.yaml"])
    (webhook,) = [w for r in config["receivers"] for w in r.get("webhook_configs", [])]
    assert webhook["url"] == "http://dermaops-monitor.dermaops.svc:8000/alerts"
    assert webhook["http_config"]["authorization"] == {
        "type": "Bearer",
        "credentials_file": "/etc/alertmanager/secrets/dermaops-monitor-token/token",
    }, "Alertmanager sends the monitor's token"
    (tmp_path / "alertmanager.yaml").write_text(secret["stringData"]["alertmanager.yaml"])
    amtool = find_tool("amtool")
    done = subprocess.run([amtool, "check-config", str(tmp_path / "alertmanager.yaml")],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr

    (dashboard,) = [c for c in by_kind(docs, "ConfigMap") if "dermaops.json" in c["data"]]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads(dashboard["data"]["dermaops.json"])
    assert shipped == json.loads((CHART / "files" / "dashboards" / "dermaops.json").read_text())


def test_the_monitor_knows_its_references_version_and_where_to_fetch_the_next() -> None:
    def monitor(*values: str) -> dict[str, Any]:
        docs = render(*URI, "--set-string", "model.version=7", *values)
        (found,) = [c for d in docs if d["kind"] == "Deployment" for c in containers(d)
                    if c["name"] == "monitor"]  # fmt: skip
        return found

    alone = monitor()
    assert {"name": "DERMAOPS_MONITOR_REFERENCE_VERSION", "value": "7"} in alone["env"]
    assert not any(a.startswith("--registry-model") for a in alone["args"]), "no MLflow to ask"
    with_mlflow = monitor("--set", "mlflow.enabled=true",
                          "--set", "monitor.registry.credentialsSecret=mlflow-monitor")  # fmt: skip
    assert "--registry-model=dermaops" in with_mlflow["args"]
    env = {e["name"]: e.get("value") for e in with_mlflow["env"]}
    assert env["MLFLOW_TRACKING_URI"] == "http://dermaops-mlflow.dermaops.svc:5000"
    assert with_mlflow["envFrom"] == [{"secretRef": {"name": "mlflow-monitor"}}]
    external = monitor("--set", "monitor.registry.trackingUri=https://mlflow.example.org")
    assert {"name": "MLFLOW_TRACKING_URI", "value": "https://mlflow.example.org"} in external["env"]


@pytest.mark.parametrize("kserve", ["true", "false"])
def test_the_charts_own_storage_initializers_take_the_credentials_secret(kserve: str) -> None:
    """Every storage initializer the chart runs itself (KServe's webhook gives its own pods
    their credentials) reads the Secret, keeping STORAGE_URI first, where the deploy patches."""

    def initializers(*values: str) -> dict[str, dict[str, Any]]:
        docs = render(*URI, "--set", f"kserve.enabled={kserve}",
                      "--set", "predictor.canary.enabled=true", *values)  # fmt: skip
        return {d["metadata"]["name"]: c for d in by_kind(docs, "Deployment")
                for c in pod_spec(d).get("initContainers", [])
                if c["name"] == "storage-initializer"}  # fmt: skip

    plain = initializers()
    with_secret = initializers("--set", "storageInitializer.credentialsSecret=model-store")
    expected = {"dermaops-predictor-canary", "dermaops-monitor"} | (
        {"dermaops-predictor"} if kserve == "false" else set()
    )
    assert set(plain) == set(with_secret) == expected
    for name, container in with_secret.items():
        assert container["envFrom"] == [{"secretRef": {"name": "model-store"}}], name
        assert container["env"][0]["name"] == "STORAGE_URI", name
        assert "envFrom" not in plain[name], name


def test_the_ui_asks_the_predictor_and_writes_to_the_pipelines_feedback_claim() -> None:
    docs = render(*URI)
    (ui,) = [d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == "dermaops-ui"]
    (container,) = pod_spec(ui)["containers"]
    assert "--predictor-url=http://dermaops-predictor.dermaops.svc" in container["args"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["DERMAOPS_UI_REQUIRE_SIGNIN"] == "true", "feedback only from signed-in users"
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"]
              for v in pod_spec(ui)["volumes"] if "persistentVolumeClaim" in v}  # fmt: skip
    from dermaops.pipelines.settings import PipelineSettings

    assert claims["feedback"] == PipelineSettings().feedback_pvc, "the claim retraining mounts"
    (claim,) = [c for c in by_kind(docs, "PersistentVolumeClaim")
                if c["metadata"]["name"] == claims["feedback"]]  # fmt: skip
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]


def test_the_checkpoint_claim_is_where_the_pipelines_train_task_runs() -> None:
    from dermaops.pipelines.settings import PipelineSettings

    docs = render(*URI)
    (claim,) = [c for c in by_kind(docs, "PersistentVolumeClaim")
                if c["metadata"]["name"] == PipelineSettings().checkpoint_pvc]  # fmt: skip
    assert claim["metadata"]["namespace"] == "kubeflow", "the pipelines' pods mount it"
    assert not [c for c in by_kind(render(*URI, "--set", "pipelines.checkpoints.create=false"),
                                   "PersistentVolumeClaim")
                if c["metadata"]["name"] == "dermaops-checkpoints"]  # fmt: skip
