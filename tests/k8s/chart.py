"""Rendering the Helm chart for the k8s tests: helm template, and ways into what it renders."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from tests.k8s.conftest import ROOT, find_tool

CHART = ROOT / "charts" / "dermaops"
KUBE_VERSION = "1.30.0"
URI = ["--set", "model.storageUri=s3://dermaops/1/model"]
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


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    """Whether a matchLabels selector selects these labels."""
    return all(labels.get(k) == v for k, v in selector.items())


def pod_labels(doc: dict[str, Any]) -> dict[str, str]:
    """The labels of the pods a workload makes."""
    if doc["kind"] == "InferenceService":
        return doc["spec"]["predictor"]["labels"]  # type: ignore[no-any-return]
    if doc["kind"] == "Pod":
        return doc["metadata"]["labels"]  # type: ignore[no-any-return]
    return doc["spec"]["template"]["metadata"]["labels"]  # type: ignore[no-any-return]


def kubectl_patch(obj: dict[str, Any], ops: list[dict[str, Any]], tmp: Path) -> dict[str, Any]:
    """``obj`` after a real `kubectl patch --local --type json` of ``ops``."""
    path = tmp / f"{obj['kind']}-{obj['metadata']['name']}.yaml"
    path.write_text(yaml.safe_dump(obj))
    done = subprocess.run(
        [find_tool("kubectl"), "patch", "--local", "-f", str(path), "--type", "json",
         "-p", json.dumps(ops), "-o", "yaml"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode:
        raise AssertionError(done.stderr)
    patched: dict[str, Any] = yaml.safe_load(done.stdout)
    return patched


def release_objects(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any] | None]:
    """The objects ``observe`` reads, as the cluster would hold what helm rendered."""
    named = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    return {"InferenceService": named.get(("InferenceService", "dermaops")),
            "predictor": named.get(("Deployment", "dermaops-predictor")),
            "canary": named.get(("Deployment", "dermaops-predictor-canary")),
            "route": named.get(("HTTPRoute", "dermaops-predictor")),
            "monitor": named.get(("Deployment", "dermaops-monitor"))}  # fmt: skip
