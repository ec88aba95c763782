"""Who may reach what in the rendered chart, and with which credentials: NetworkPolicies select
the pods they protect and admit their callers, the optional Istio AuthorizationPolicies admit
exactly the callers the code has, and the monitor's token and MLflow's login come from Secrets."""

from __future__ import annotations

from typing import Any

import pytest

from tests.k8s.chart import (
    ALERTMANAGER,
    ISTIO,
    PROMETHEUS,
    URI,
    WORKLOADS,
    by_kind,
    pod_labels,
    pod_spec,
    render,
    selects,
)

pytestmark = pytest.mark.k8s


def test_network_policies_select_the_pods_they_protect() -> None:
    docs = render(*URI, "--set", "mlflow.enabled=true")
    pods = {d["metadata"]["name"]: pod_labels(d) for d in docs if d["kind"] in WORKLOADS - {"Pod"}}
    policies = {p["metadata"]["name"]: p["spec"] for p in by_kind(docs, "NetworkPolicy")}
    protected = {
        name: [pod for pod, labels in pods.items()
               if selects(spec["podSelector"]["matchLabels"], labels)]
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
    assert any(selects(peer, pods["dermaops"]) for peer in peers), "the predictor posts records"
    test_pod = by_kind(docs, "Pod")[0]["metadata"]["labels"]
    assert any(selects(peer, test_pod) for peer in peers), "helm test checks the monitor is up"
    assert not any(selects(peer, pods["dermaops-mlflow"]) for peer in peers), "MLflow may not"
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
        assert [w for w, d in workloads.items() if selects(selector, pod_labels(d))] == [pod]

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
