"""`dermaops deploy` through the Kubernetes client, against an API on loopback that holds the
chart's rendered objects and applies JSON patches with a real `kubectl patch --local` (no
kube-apiserver can run here). Proves what goes over the wire: the objects read, one
`application/json-patch+json` request per object, and nothing sent when the chart's fields moved.
The promotion Lease goes through the same API: created and replaced as the API server does it
(``resourceVersion``: a stale update gets 409), every Lease sent validated strictly against the
Kubernetes 1.30 schema; and the reconciler serves the registry's champion on the release.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.conftest import Trained
from tests.k8s.chart import URI, render
from tests.k8s.conftest import find_tool

pytestmark = pytest.mark.integration

NEW_URI = "s3://dermaops-mlflow/artifacts/9/models/m-feedface/artifacts"
PATHS = {
    "InferenceService": "/apis/serving.kserve.io/v1beta1/namespaces/dermaops/inferenceservices",
    "Deployment": "/apis/apps/v1/namespaces/dermaops/deployments",
    "Lease": "/apis/coordination.k8s.io/v1/namespaces/dermaops/leases",
    "HTTPRoute": "/apis/gateway.networking.k8s.io/v1/namespaces/dermaops/httproutes",
}


class FakeApi(ThreadingHTTPServer):
    """Objects by API path; PATCH applies a JSON patch with kubectl, as the API server would.
    Deployments get a generation and a status as their controller keeps them: a patch that
    changes the spec bumps the generation, and ``rollout_s`` later the status says the new
    pods are all updated and available (``events`` holds when, in order with the patches)."""

    def __init__(
        self, objects: list[dict[str, Any]], kubectl: str, tmp: Path, rollout_s: float = 0.3
    ):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.objects = {f"{PATHS[o['kind']]}/{o['metadata']['name']}": o for o in objects
                        if o["kind"] in PATHS}  # fmt: skip
        self.kubectl, self.tmp, self.rollout_s = kubectl, tmp, rollout_s
        self.requests: list[tuple[str, str, str, Any]] = []  # method, path, content type, body
        self.events: list[tuple[str, str]] = []  # ("patched" | "rolled out", path), in order
        self.versions = 0  # resourceVersion, as the API server counts writes
        self.lock = threading.Lock()
        for path, obj in self.objects.items():
            if obj["kind"] == "Deployment":  # installed and running, as helm left them
                obj["metadata"]["generation"] = 1
                self._rolled_out(path)

    def _rolled_out(self, path: str) -> None:
        obj = self.objects[path]
        replicas = obj["spec"].get("replicas", 1)
        obj["status"] = {"observedGeneration": obj["metadata"]["generation"], "replicas": replicas,
                         "updatedReplicas": replicas, "availableReplicas": replicas}  # fmt: skip

    def _controller(self, path: str, generation: int) -> None:
        """The Deployment controller: the new pods up and ready, unless a newer spec came."""
        time.sleep(self.rollout_s)
        with self.lock:
            if self.objects[path]["metadata"]["generation"] == generation:
                self._rolled_out(path)
                self.events.append(("rolled out", path))

    def write(self, method: str, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """POST (create) or PUT (replace, only at the stored resourceVersion) of a Lease."""
        try:
            kubernetes_validate.validate(body, "1.30.0", strict=True)
        except kubernetes_validate.ValidationError as e:
            return 422, {"kind": "Status", "message": str(e)}
        with self.lock:
            name = path if method == "PUT" else f"{path}/{body['metadata']['name']}"
            stored = self.objects.get(name)
            if method == "POST" and stored is not None:
                return 409, {"kind": "Status", "reason": "AlreadyExists"}
            if method == "PUT":
                if stored is None:
                    return 404, {"kind": "Status"}
                if body["metadata"].get("resourceVersion") != stored["metadata"]["resourceVersion"]:
                    return 409, {"kind": "Status", "reason": "Conflict"}
            self.versions += 1
            body["metadata"]["resourceVersion"] = str(self.versions)
            self.objects[name] = body
            return (201 if method == "POST" else 200), body

    def apply(self, path: str, ops: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
        source = self.tmp / "object.yaml"
        source.write_text(yaml.safe_dump(self.objects[path]))
        done = subprocess.run([self.kubectl, "patch", "--local", "-f", str(source), "--type",
                               "json", "-p", json.dumps(ops), "-o", "json"],
                              capture_output=True, text=True, check=False)  # fmt: skip
        if done.returncode:
            return 422, {"kind": "Status", "message": done.stderr.strip()}
        with self.lock:
            before, after = self.objects[path], json.loads(done.stdout)
            self.events.append(("patched", path))
            if after["kind"] == "Deployment" and after["spec"] != before["spec"]:
                after["metadata"]["generation"] = before["metadata"]["generation"] + 1
                after["status"] = {**before["status"], "updatedReplicas": 0}  # rolling out
                threading.Thread(target=self._controller, daemon=True,
                                 args=(path, after["metadata"]["generation"])).start()  # fmt: skip
            self.objects[path] = after
        return 200, after


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

    def do_POST(self) -> None:
        self._write("POST")

    def do_PUT(self) -> None:
        self._write("PUT")

    def _write(self, method: str) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append((method, self.path, self.headers["Content-Type"], body))
        if not self.path.startswith(PATHS["Lease"]):
            self._answer(405, {"kind": "Status"})
            return
        self._answer(*self.server.write(method, self.path, body))

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


def _api(
    objects: list[dict[str, Any]], tmp: Path, rollout_s: float = 0.3
) -> Iterator[tuple[FakeApi, Path]]:
    api = FakeApi(objects, find_tool("kubectl"), tmp, rollout_s)
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


def test_a_plain_deployment_canary_patches_its_deployment_and_the_routes_weights(
    tmp_path: Path,
) -> None:
    """Without KServe, over the wire: a 10 % step reads the canary Deployment and the HTTPRoute
    the chart rendered, gives the canary the version and a pod and, once that pod is ready, the
    route 90/10; full puts the version on the stable Deployment, the route back to 100/0 once
    its pods serve it, then the canary at 0 pods."""
    docs = render(*URI, "--set", "kserve.enabled=false", "--set", "predictor.canary.enabled=true",
                  "--set", "predictor.canary.parentRefs[0].name=clinic-gateway")  # fmt: skip
    deployments, route = PATHS["Deployment"], f"{PATHS['HTTPRoute']}/dermaops-predictor"
    for api, kubeconfig in _api(docs, tmp_path):
        step = deploy(kubeconfig, "--canary", "10")
        assert step.returncode == 0, step.stderr
        assert {path for method, path, *_ in api.requests if method == "PATCH"} == {
            f"{deployments}/dermaops-predictor", f"{deployments}/dermaops-predictor-canary",
            f"{deployments}/dermaops-monitor", route}  # fmt: skip
        assert "10 % of the HTTPRoute's traffic to 1 canary pod(s)" in step.stdout
        canary = api.objects[f"{deployments}/dermaops-predictor-canary"]
        assert canary["spec"]["replicas"] == 1
        assert canary["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"] == "9"
        weights = [b["weight"] for b in api.objects[route]["spec"]["rules"][0]["backendRefs"]]
        assert weights == [90, 10]
        stable = api.objects[f"{deployments}/dermaops-predictor"]["spec"]["template"]["spec"]
        assert stable["containers"][0]["env"][0]["value"] != "9", "the stable pods untouched"
        canary_path = f"{deployments}/dermaops-predictor-canary"
        assert _order(
            api, ("patched", canary_path), ("rolled out", canary_path), ("patched", route)
        ), "the route moves once the canary's pods are ready"
        api.events.clear()

        full = deploy(kubeconfig)
        assert full.returncode == 0, full.stderr
        stable = api.objects[f"{deployments}/dermaops-predictor"]["spec"]["template"]["spec"]
        assert stable["containers"][0]["env"][0]["value"] == "9"
        assert api.objects[f"{deployments}/dermaops-predictor-canary"]["spec"]["replicas"] == 0
        weights = [b["weight"] for b in api.objects[route]["spec"]["rules"][0]["backendRefs"]]
        assert weights == [100, 0]
        stable_path = f"{deployments}/dermaops-predictor"
        assert _order(api, ("patched", stable_path), ("rolled out", stable_path),
                      ("patched", route), ("patched", canary_path)), (
            "all traffic back on the stable pods once they serve the version, then the canary "
            f"goes: {api.events}")  # fmt: skip


def _order(api: FakeApi, *events: tuple[str, str]) -> bool:
    """Whether ``events`` happened in this order (others between them allowed)."""
    found = iter(api.events)
    return all(event in found for event in events)


def test_a_release_that_is_not_installed_is_named(tmp_path: Path) -> None:
    for api, kubeconfig in _api([], tmp_path):
        done = deploy(kubeconfig)
        assert done.returncode == 1 and "install the chart first" in done.stderr
        assert not [r for r in api.requests if r[0] == "PATCH"]


LEASE = f"{PATHS['Lease']}/dermaops-promotion"
HOLD = """
import json, os, sys, time
from pathlib import Path
from dermaops.registry import Registry
from dermaops.registry.locks import promotion_lock
reg = Registry()  # each process its own sqlite registry: only the Lease is shared
with promotion_lock(reg):
    entered = time.time()
    time.sleep(1.0)
    print(json.dumps([entered, time.time()]))
"""


def _on_cluster(kubeconfig: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "")  # not in a pod: the kubeconfig
    monkeypatch.setenv("DERMAOPS_PROMOTION_LEASE", "dermaops/dermaops-promotion")


def test_alias_moves_in_two_places_take_turns_under_the_promotion_lease(
    cluster: tuple[FakeApi, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes with two registries (so two file locks) and one Lease: their critical
    sections never overlap, and the Lease is free afterwards."""
    api, kubeconfig = cluster
    _on_cluster(kubeconfig, monkeypatch)
    holders = [
        subprocess.Popen([sys.executable, "-c", HOLD], stdout=subprocess.PIPE, text=True,
                         env=os.environ | {"DERMAOPS_HOME": str(tmp_path / f"home{i}")})
        for i in range(2)
    ]  # fmt: skip
    spans = sorted(json.loads(h.communicate(timeout=120)[0]) for h in holders)
    assert all(h.returncode == 0 for h in holders)
    assert spans[0][1] <= spans[1][0], f"the critical sections overlapped: {spans}"
    assert api.objects[LEASE]["spec"]["holderIdentity"] is None, "given back"
    writes = [r for r in api.requests if r[0] in ("POST", "PUT")]
    assert writes and all(kind == "application/json" for _, _, kind, _ in writes)


def test_an_expired_lease_is_taken_over_and_a_held_one_waited_for(
    cluster: tuple[FakeApi, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from dermaops.registry.kube import KubernetesError, lease

    api, kubeconfig = cluster
    _on_cluster(kubeconfig, monkeypatch)
    stamp = "%Y-%m-%dT%H:%M:%S.%fZ"
    for held_since, free in ((time.time() - 120, True), (time.time(), False)):
        api.objects[LEASE] = {
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "dermaops-promotion", "namespace": "dermaops",
                         "resourceVersion": "100"},
            "spec": {"holderIdentity": "a pod that died", "leaseDurationSeconds": 60,
                     "renewTime": datetime.fromtimestamp(held_since, UTC).strftime(stamp)},
        }  # fmt: skip
        if free:
            with lease("dermaops", "dermaops-promotion", "me"):
                assert api.objects[LEASE]["spec"]["holderIdentity"] == "me"
        else:
            held = pytest.raises(KubernetesError, match="was held for over 1 s")
            with held, lease("dermaops", "dermaops-promotion", "me", timeout=1):
                pass
            assert api.objects[LEASE]["spec"]["holderIdentity"] == "a pod that died"


def test_dermaops_deploy_patches_only_while_it_holds_the_promotion_lease(
    cluster: tuple[FakeApi, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The command takes the reconciler's path: the Lease is taken before the first patch and
    given back after the last, and the version is read back from the release."""
    api, kubeconfig = cluster
    _on_cluster(kubeconfig, monkeypatch)
    done = deploy(kubeconfig)
    assert done.returncode == 0, done.stderr
    order = [(method, path) for method, path, _, _ in api.requests
             if method in ("POST", "PUT", "PATCH")]  # fmt: skip
    lease_writes = [
        i for i, (_, path) in enumerate(order) if path.startswith(LEASE.rsplit("/", 1)[0])
    ]
    patches = [i for i, (method, _) in enumerate(order) if method == "PATCH"]
    assert lease_writes and patches, order
    assert lease_writes[0] < patches[0] and patches[-1] < lease_writes[-1], order
    assert api.objects[LEASE]["spec"]["holderIdentity"] is None, "given back"
    assert "version 9 (was 1)" in done.stdout


def test_the_reconciler_serves_the_champion_on_the_release(
    cluster: tuple[FakeApi, Path], trained: Trained, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dermaops.registry import Registry
    from dermaops.registry.promotion import promote_stored
    from dermaops.registry.reconcile import reconcile
    from dermaops.registry.serving import ClusterServing
    from tests.integration.test_registry import _register

    api, kubeconfig = cluster
    _on_cluster(kubeconfig, monkeypatch)
    reg = Registry()
    _register(reg, trained, "kfp-cluster-1")  # version 1, what the chart's values serve
    version = _register(reg, trained, "kfp-cluster-2")
    assert promote_stored(reg, version, None, False).promoted  # under the Lease
    release = ClusterServing("dermaops", "dermaops")
    done = reconcile(reg, release)
    assert done.served == version and "patched InferenceService dermaops/dermaops" in done.action
    isvc = api.objects[f"{PATHS['InferenceService']}/dermaops"]
    assert isvc["metadata"]["labels"]["dermaops.io/model-version"] == version
    patches = len([r for r in api.requests if r[0] == "PATCH"])
    assert reconcile(reg, release).action == f"version {version} is served"
    assert len([r for r in api.requests if r[0] == "PATCH"]) == patches, "nothing to patch"


def test_a_route_waits_for_pods_that_never_come_and_then_sends_nothing(tmp_path: Path) -> None:
    """A canary whose pods never become ready (its controller never reports them): the deploy
    patches the canary Deployment, waits, and fails naming what it waited for, the route's
    weights untouched; what `kubectl rollout status` checks is what the wait reads."""
    from dermaops.registry import kube

    docs = render(*URI, "--set", "kserve.enabled=false", "--set", "predictor.canary.enabled=true",
                  "--set", "predictor.canary.parentRefs[0].name=clinic-gateway")  # fmt: skip
    route = f"{PATHS['HTTPRoute']}/dermaops-predictor"
    for api, kubeconfig in _api(docs, tmp_path, rollout_s=3600):
        before = json.dumps(api.objects[route])
        env = os.environ | {"KUBECONFIG": str(kubeconfig), "KUBERNETES_SERVICE_HOST": ""}
        code = ("from dermaops.registry import kube\nkube.ROLLOUT_TIMEOUT_S = 2\n"
                "from dermaops.cli import main\nmain()")  # fmt: skip
        done = subprocess.run([sys.executable, "-c", code, "deploy", "9", "--storage-uri",
                               NEW_URI, "--canary", "10"], capture_output=True, text=True,
                              env=env, check=False)  # fmt: skip
        assert done.returncode == 1, done.stdout
        assert ("dermaops-predictor-canary not rolled out after 2 s (its controller has not seen "
                "the new spec), so HTTPRoute dermaops/dermaops-predictor was not patched"
                in done.stderr), done.stderr  # fmt: skip
        assert json.dumps(api.objects[route]) == before, "no weight moved to pods not ready"
    waits = kube._rollout_waits_for
    ready = {"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3}
    deployment = {"metadata": {"generation": 2}, "spec": {"replicas": 3}}
    assert waits(deployment | {"status": ready}) == ""
    assert "not seen" in waits(deployment | {"status": ready | {"observedGeneration": 1}})
    assert "1 old pod(s)" in waits(deployment | {"status": ready | {"replicas": 4}})
    assert "2 of 3 pods updated" in waits(deployment | {"status": ready | {"updatedReplicas": 2}})
    assert "2 of 3 updated pods available" in waits(
        deployment | {"status": ready | {"availableReplicas": 2}}
    )


def test_a_lease_held_longer_than_its_duration_is_renewed_not_lost(
    cluster: tuple[FakeApi, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deploy that waits for pods holds the Lease for minutes: renewed every third of its
    duration, it is never free for another holder meanwhile."""
    from dermaops.registry import kube

    api, kubeconfig = cluster
    _on_cluster(kubeconfig, monkeypatch)
    # Renewed every second; lost only if a renewal were two seconds late (a loaded CI machine
    # delayed a renewal by more than the 0.7 s a one-second Lease left it).
    monkeypatch.setattr(kube, "LEASE_SECONDS", 3)
    with kube.lease("dermaops", "dermaops-promotion", "slow deploy"):
        for _ in range(3):
            time.sleep(2)  # 6 s in all: twice the duration
            assert not kube._take("dermaops", "dermaops-promotion", "another")
        renewed = [r for r in api.requests if r[0] == "PUT" and r[3]["spec"]["holderIdentity"]
                   == "slow deploy"]  # fmt: skip
        assert len(renewed) >= 3, "renewed every third of the duration"
    assert api.objects[LEASE]["spec"]["holderIdentity"] is None, "given back"
