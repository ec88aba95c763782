"""`dermaops deploy` through the Kubernetes client, against an API on loopback that holds the
chart's rendered objects and applies JSON patches with a real `kubectl patch --local` (no
kube-apiserver can run here). Proves what goes over the wire: the objects read, one
`application/json-patch+json` request per object, and nothing sent when the chart's fields moved.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.k8s.chart import URI, render
from tests.k8s.conftest import find_tool

pytestmark = pytest.mark.integration

NEW_URI = "s3://dermaops-mlflow/artifacts/9/models/m-feedface/artifacts"
PATHS = {
    "InferenceService": "/apis/serving.kserve.io/v1beta1/namespaces/dermaops/inferenceservices",
    "Deployment": "/apis/apps/v1/namespaces/dermaops/deployments",
}


class FakeApi(ThreadingHTTPServer):
    """Objects by API path; PATCH applies a JSON patch with kubectl, as the API server would."""

    def __init__(self, objects: list[dict[str, Any]], kubectl: str, tmp: Path):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.objects = {f"{PATHS[o['kind']]}/{o['metadata']['name']}": o for o in objects
                        if o["kind"] in PATHS}  # fmt: skip
        self.kubectl, self.tmp = kubectl, tmp
        self.requests: list[tuple[str, str, str, Any]] = []  # method, path, content type, body

    def apply(self, path: str, ops: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
        source = self.tmp / "object.yaml"
        source.write_text(yaml.safe_dump(self.objects[path]))
        done = subprocess.run([self.kubectl, "patch", "--local", "-f", str(source), "--type",
                               "json", "-p", json.dumps(ops), "-o", "json"],
                              capture_output=True, text=True, check=False)  # fmt: skip
        if done.returncode:
            return 422, {"kind": "Status", "message": done.stderr.strip()}
        self.objects[path] = json.loads(done.stdout)
        return 200, self.objects[path]


class _Handler(BaseHTTPRequestHandler):
    server: FakeApi

    def do_GET(self) -> None:
        self.server.requests.append(("GET", self.path, "", None))
        found = self.server.objects.get(self.path)
        self._answer(200, found) if found else self._answer(404, {"kind": "Status"})

    def do_PATCH(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        kind = self.headers["Content-Type"]
        self.server.requests.append(("PATCH", self.path, kind, body))
        if kind != "application/json-patch+json":
            self._answer(415, {"kind": "Status", "message": kind})
            return
        self._answer(*self.server.apply(self.path, body))

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


def _api(objects: list[dict[str, Any]], tmp: Path) -> Iterator[tuple[FakeApi, Path]]:
    api = FakeApi(objects, find_tool("kubectl"), tmp)
    thread = threading.Thread(target=api.serve_forever, daemon=True)
    thread.start()
    kubeconfig = tmp / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "loopback",
        "clusters": [{"name": "loopback",
                      "cluster": {"server": f"http://127.0.0.1:{api.server_address[1]}"}}],
        "users": [{"name": "deployer", "user": {"token": "pipeline-runner"}}],
        "contexts": [{"name": "loopback",
                      "context": {"cluster": "loopback", "user": "deployer"}}],
    }))  # fmt: skip
    try:
        yield api, kubeconfig
    finally:
        api.shutdown()
        api.server_close()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[FakeApi, Path]]:
    yield from _api(render(*URI), tmp_path)


def deploy(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"KUBECONFIG": str(kubeconfig), "KUBERNETES_SERVICE_HOST": ""}
    return subprocess.run([sys.executable, "-m", "dermaops", "deploy", "9", "--storage-uri",
                           NEW_URI, *args], capture_output=True, text=True, env=env,
                          check=False)  # fmt: skip


def test_deploy_reads_the_release_and_sends_one_json_patch_per_object(
    cluster: tuple[FakeApi, Path],
) -> None:
    api, kubeconfig = cluster
    planned = deploy(kubeconfig, "--dry-run")
    assert planned.returncode == 0, planned.stderr
    printed = [json.loads(line) for line in planned.stdout.splitlines()]
    done = deploy(kubeconfig)
    assert done.returncode == 0, done.stderr
    patches = [(path, kind, body) for method, path, kind, body in api.requests
               if method == "PATCH"]  # fmt: skip
    assert patches == [
        (f"{PATHS[p['kind']]}/{p['name']}", "application/json-patch+json", p["patch"])
        for p in printed
    ], "what --dry-run printed is what was sent"
    isvc = api.objects[f"{PATHS['InferenceService']}/dermaops"]
    env = {e["name"]: e["value"] for e in isvc["spec"]["predictor"]["containers"][0]["env"]}
    assert env["STORAGE_URI"] == NEW_URI and env["DERMAOPS_SERVING_MODEL_VERSION"] == "9"
    assert isvc["spec"]["predictor"]["containers"][0]["readinessProbe"], "the chart's, kept"
    assert "patched InferenceService dermaops/dermaops" in done.stdout


def test_a_moved_field_sends_nothing(cluster: tuple[FakeApi, Path]) -> None:
    api, kubeconfig = cluster
    isvc = api.objects[f"{PATHS['InferenceService']}/dermaops"]
    isvc["spec"]["predictor"]["containers"][0]["env"].reverse()
    done = deploy(kubeconfig)
    assert done.returncode == 1
    assert "nothing was patched" in done.stderr and "env[0]" in done.stderr
    assert not [r for r in api.requests if r[0] == "PATCH"]


def test_a_release_that_is_not_installed_is_named(tmp_path: Path) -> None:
    for api, kubeconfig in _api([], tmp_path):
        done = deploy(kubeconfig)
        assert done.returncode == 1 and "install the chart first" in done.stderr
        assert not [r for r in api.requests if r[0] == "PATCH"]
