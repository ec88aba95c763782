"""The Helm chart, proven without a cluster: helm lint and template, every object validated
strictly (built-in kinds against Kubernetes 1.30, custom resources against their CRDs), the
restricted pod-security policy, and the rules and routing it ships checked by their own tools."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from dermaops.deploy import ServiceSettings
from tests.k8s.conftest import ROOT, find_tool

pytestmark = pytest.mark.k8s

CHART = ROOT / "charts" / "dermaops"
KUBE_VERSION = "1.30.0"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
URI = ["--set", "model.storageUri=s3://dermaops/1/model"]
CUSTOM = {"InferenceService", "ServiceMonitor", "PodMonitor", "PrometheusRule",
          "AuthorizationPolicy"}  # fmt: skip
ISTIO = ["--set", "istio.authorizationPolicies=true", "--set", "mlflow.enabled=true"]
PROMETHEUS = "cluster.local/ns/monitoring/sa/prometheus"
ALERTMANAGER = "cluster.local/ns/monitoring/sa/alertmanager"
WORKLOADS = {"Deployment", "Pod", "InferenceService"}


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([find_tool("helm"), *args], capture_output=True, text=True, check=False)


def render(*args: str) -> list[dict[str, Any]]:
    done = helm("template", "dermaops", str(CHART), "--namespace", "dermaops",
                "--kube-version", KUBE_VERSION, *args)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    """The pod template of a workload (the predictor spec of an InferenceService)."""
    if doc["kind"] == "Pod":
        return doc["spec"]  # type: ignore[no-any-return]
    if doc["kind"] == "InferenceService":
        return doc["spec"]["predictor"]  # type: ignore[no-any-return]
    return doc["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def containers(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = pod_spec(doc)
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


VARIANTS = {
    "defaults": URI,
    "no-kserve": [*URI, "--set", "kserve.enabled=false"],
    "everything": [*URI, "--set", "mlflow.enabled=true"],
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
    assert container["image"] == ServiceSettings().image, "the chart and the deploy stage agree"
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
                    "mlflow.image=ghcr.io/mlflow/mlflow:v3@sha256:abc"):  # fmt: skip
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
    assert spec["initContainers"][0]["args"] == ["s3://dermaops/1/model", "/mnt/models"]
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
                             ("kserve.deploymentMode=Knative", "deploymentMode")]:  # fmt: skip
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


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_network_policies_select_the_pods_they_protect() -> None:
    docs = render(*URI, "--set", "mlflow.enabled=true")
    pods = {d["metadata"]["name"]: _pod_labels(d) for d in docs if d["kind"] in WORKLOADS - {"Pod"}}
    policies = {p["metadata"]["name"]: p["spec"] for p in by_kind(docs, "NetworkPolicy")}
    protected = {
        name: [pod for pod, labels in pods.items()
               if _selects(spec["podSelector"]["matchLabels"], labels)]
        for name, spec in policies.items()
    }  # fmt: skip
    assert protected == {
        "dermaops-predictor": ["dermaops"],
        "dermaops-monitor": ["dermaops-monitor"],
        "dermaops-mlflow": ["dermaops-mlflow"],
        "dermaops-ui": ["dermaops-ui"],
    }
    sources = policies["dermaops-monitor"]["ingress"][0]["from"]
    peers = [p["podSelector"]["matchLabels"] for p in sources if "podSelector" in p]
    assert any(_selects(peer, pods["dermaops"]) for peer in peers), "the predictor posts records"
    test_pod = by_kind(docs, "Pod")[0]["metadata"]["labels"]
    assert any(_selects(peer, test_pod) for peer in peers), "helm test checks the monitor is up"
    assert not any(_selects(peer, pods["dermaops-mlflow"]) for peer in peers), "MLflow may not"
    front = policies["dermaops-predictor"]["ingress"][0]["from"]
    (release_pods,) = [p["podSelector"] for p in front if "podSelector" in p]
    (rule,) = release_pods["matchExpressions"]
    assert rule["key"] == "app.kubernetes.io/component" and set(rule["values"]) == {"ui", "test"}
    assert pods["dermaops-monitor"]["app.kubernetes.io/component"] not in rule["values"]
    assert pods["dermaops-ui"]["app.kubernetes.io/component"] in rule["values"], "the UI may"


def test_a_serverless_predictor_admits_knative_on_its_queue_proxy_ports() -> None:
    def predictor_rule(*values: str) -> dict[str, Any]:
        docs = render(*URI, *values)
        policy = next(p for p in by_kind(docs, "NetworkPolicy")
                      if p["metadata"]["name"] == "dermaops-predictor")  # fmt: skip
        (rule,) = policy["spec"]["ingress"]
        return rule  # type: ignore[no-any-return]

    def namespaces(rule: dict[str, Any]) -> set[str]:
        return {p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                for p in rule["from"] if "namespaceSelector" in p}  # fmt: skip

    raw = predictor_rule()
    assert raw["ports"] == [{"port": 8080, "protocol": "TCP"}]
    assert namespaces(raw) == {"istio-system", "monitoring"}
    serverless = predictor_rule("--set", "kserve.deploymentMode=Serverless")
    assert "ports" not in serverless, "Knative's queue-proxy listens on 8012/8013/9090/9091"
    assert namespaces(serverless) == {"istio-system", "monitoring", "knative-serving"}


def _pod_labels(doc: dict[str, Any]) -> dict[str, str]:
    if doc["kind"] == "InferenceService":
        return doc["spec"]["predictor"]["labels"]  # type: ignore[no-any-return]
    if doc["kind"] == "Pod":
        return doc["metadata"]["labels"]  # type: ignore[no-any-return]
    return doc["spec"]["template"]["metadata"]["labels"]  # type: ignore[no-any-return]


def _istio_allows(policy: dict[str, Any], peer: str, method: str, path: str) -> bool:
    """Istio's ALLOW semantics for the fields the chart uses: some rule whose `from` (any
    source) and `to` (any operation) both match. peer is the caller's principal
    (TRUST_DOMAIN/ns/NAMESPACE/sa/ACCOUNT); values match exactly, as `prefix*` or `*suffix`."""

    def match(patterns: list[str], value: str) -> bool:
        return any(p == value or (p.endswith("*") and value.startswith(p[:-1]))
                   or (p.startswith("*") and value.endswith(p[1:])) for p in patterns)  # fmt: skip

    namespace = peer.split("/")[2]
    for rule in policy["spec"]["rules"]:
        sources = [f["source"] for f in rule.get("from", [])]
        operations = [t["operation"] for t in rule.get("to", [])]
        used = {k for part in sources + operations for k in part}
        assert used <= {"principals", "namespaces", "methods", "paths"}, f"teach me {used}"
        source_ok = not sources or any(
            match(s.get("principals", ["*"]), peer) and match(s.get("namespaces", ["*"]), namespace)
            for s in sources
        )
        operation_ok = not operations or any(
            method in o.get("methods", [method]) and match(o.get("paths", ["*"]), path)
            for o in operations
        )
        if source_ok and operation_ok:
            return True
    return False


def test_istio_policies_admit_exactly_the_callers_the_code_has() -> None:
    in_mesh = "istio.monitoringPrincipals={" + f"{PROMETHEUS},{ALERTMANAGER}" + "}"
    docs = render(*URI, *ISTIO, "--set", "kserve.deploymentMode=Serverless", "--set", in_mesh)
    policies = {p["metadata"]["name"].removeprefix("dermaops-"): p
                for p in by_kind(docs, "AuthorizationPolicy")}  # fmt: skip
    workloads = {d["metadata"]["name"]: d for d in docs if d["kind"] in WORKLOADS}
    for name, pod in [("predictor", "dermaops"), ("monitor", "dermaops-monitor"),
                      ("ui", "dermaops-ui"), ("mlflow", "dermaops-mlflow")]:  # fmt: skip
        selector = policies[name]["spec"]["selector"]["matchLabels"]
        assert [w for w, d in workloads.items() if _selects(selector, _pod_labels(d))] == [pod]

    def peer(workload: str) -> str:  # the principal the mesh gives a rendered pod
        account = pod_spec(workloads[workload]).get("serviceAccountName", "default")
        return f"cluster.local/ns/dermaops/sa/{account}"

    names = ("dermaops-ui", "dermaops-test", "dermaops", "dermaops-monitor")
    ui, test, predictor, monitor = (peer(name) for name in names)
    gateway = "cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"
    prometheus = PROMETHEUS
    pipeline = "cluster.local/ns/kubeflow/sa/pipeline-runner"
    allowed = [
        ("predictor", ui, "POST", "/v1/models/dermaops:predict"),
        ("predictor", ui, "POST", "/v1/models/dermaops:explain"),
        ("predictor", gateway, "POST", "/v2/models/dermaops/infer"),
        ("predictor", test, "GET", "/v2/health/ready"),
        ("predictor", prometheus, "GET", "/metrics"),
        ("predictor", "cluster.local/ns/knative-serving/sa/controller", "POST", "/v1/models/x"),
        ("monitor", predictor, "POST", "/records"),
        ("monitor", prometheus, "GET", "/metrics"),
        ("monitor", ALERTMANAGER, "POST", "/alerts"),
        ("monitor", test, "GET", "/healthz"),
        ("ui", gateway, "GET", "/"),
        ("mlflow", pipeline, "POST", "/api/2.0/mlflow/runs/create"),
        ("mlflow", monitor, "GET", "/api/2.0/mlflow/registered-models/alias"),
    ]
    denied = [
        ("predictor", monitor, "POST", "/v1/models/dermaops:predict"),
        ("predictor", prometheus, "POST", "/v1/models/dermaops:predict"),
        ("predictor", "cluster.local/ns/other/sa/default", "GET", "/v2/health/ready"),
        ("monitor", predictor, "POST", "/alerts"),
        ("monitor", ui, "GET", "/metrics"),
        ("monitor", ui, "POST", "/records"),
        ("monitor", gateway, "GET", "/report"),
        ("ui", predictor, "GET", "/"),
        ("mlflow", ui, "GET", "/"),
        ("mlflow", predictor, "GET", "/"),
    ]
    for case in allowed:
        assert _istio_allows(policies[case[0]], *case[1:]), case
    for case in denied:
        assert not _istio_allows(policies[case[0]], *case[1:]), case
    raw = {p["metadata"]["name"]: p for p in by_kind(render(*URI, *ISTIO), "AuthorizationPolicy")}
    knative = "cluster.local/ns/knative-serving/sa/controller"
    assert not _istio_allows(raw["dermaops-predictor"], knative, "POST", "/v1/models/x"), (
        "the activator is let in only in Serverless mode"
    )
    # A monitoring stack outside the mesh has no identity: its two paths are open to any caller
    # (the NetworkPolicies and the token still apply), nothing else is.
    anyone = "cluster.local/ns/elsewhere/sa/default"
    assert _istio_allows(raw["dermaops-monitor"], anyone, "POST", "/alerts")
    assert _istio_allows(raw["dermaops-predictor"], anyone, "GET", "/metrics")
    assert not _istio_allows(raw["dermaops-monitor"], anyone, "POST", "/records")
    assert not _istio_allows(raw["dermaops-predictor"], anyone, "POST", "/v1/models/x:predict")
    assert not by_kind(render(*URI), "AuthorizationPolicy"), "off unless asked for"


def test_the_monitor_knows_its_references_version_and_where_to_fetch_the_next() -> None:
    def monitor(*values: str) -> dict[str, Any]:
        docs = render(*URI, "--set-string", "model.version=7", *values)
        (found,) = [c for d in docs if d["kind"] == "Deployment" for c in containers(d)
                    if c["name"] == "monitor"]  # fmt: skip
        return found

    alone = monitor()
    assert "--reference-version=7" in alone["args"]
    assert not any(a.startswith("--registry-model") for a in alone["args"]), "no MLflow to ask"
    with_mlflow = monitor("--set", "mlflow.enabled=true",
                          "--set", "monitor.registry.credentialsSecret=mlflow-monitor")  # fmt: skip
    assert "--registry-model=dermaops" in with_mlflow["args"]
    env = {e["name"]: e.get("value") for e in with_mlflow["env"]}
    assert env["MLFLOW_TRACKING_URI"] == "http://dermaops-mlflow.dermaops.svc:5000"
    assert with_mlflow["envFrom"] == [{"secretRef": {"name": "mlflow-monitor"}}]
    external = monitor("--set", "monitor.registry.trackingUri=https://mlflow.example.org")
    assert {"name": "MLFLOW_TRACKING_URI", "value": "https://mlflow.example.org"} in external["env"]


def test_the_monitor_token_comes_from_one_secret_for_monitor_and_predictor() -> None:
    for variant in (URI, [*URI, "--set", "kserve.enabled=false"]):
        docs = render(*variant)
        for doc in docs:
            component = doc["metadata"]["labels"].get("app.kubernetes.io/component")
            workload = doc["kind"] in ("Deployment", "InferenceService")
            if not workload or component not in ("predictor", "monitor"):
                continue
            pod = pod_spec(doc)
            secrets = {
                v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v
            }
            assert secrets["monitor-token"] == "dermaops-monitor-token", doc["metadata"]["name"]
            main = pod["containers"][0]
            env = {e["name"]: e.get("value") for e in main["env"]}
            path = env["DERMAOPS_MONITOR_TOKEN_FILE"]
            mounts = {m["name"]: m["mountPath"] for m in main["volumeMounts"]}
            assert path == mounts["monitor-token"] + "/token"
            assert "DERMAOPS_MONITOR_TOKEN" not in env, "never the token itself"


def test_mlflow_runs_with_authentication_from_a_secret() -> None:
    docs = render(*URI, "--set", "mlflow.enabled=true")
    (server,) = [d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("mlflow")]
    (container,) = pod_spec(server)["containers"]
    assert "--app-name=basic-auth" in container["args"]
    env = {e["name"]: e for e in container["env"]}
    assert env["MLFLOW_FLASK_SERVER_SECRET_KEY"]["valueFrom"]["secretKeyRef"]["name"] == (
        "dermaops-mlflow-auth"
    )
    volumes = {v["name"]: v for v in pod_spec(server)["volumes"]}
    assert volumes["auth"]["secret"]["secretName"] == "dermaops-mlflow-auth"
    off = render(*URI, "--set", "mlflow.enabled=true", "--set", "mlflow.auth.enabled=false")
    (plain,) = [d for d in by_kind(off, "Deployment") if d["metadata"]["name"].endswith("mlflow")]
    assert "--app-name=basic-auth" not in pod_spec(plain)["containers"][0]["args"]


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
