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
from contextlib import contextmanager
from dataclasses import dataclass
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


def _answers(folder: Path, version: str, n: int, flag_every: int) -> None:
    """``n`` answers of ``version`` as its predictor logs them (after the rollout's stage
    began), one in ``flag_every`` flagged melanoma."""
    from dermaops.inference_log import LOG_NAME

    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    with (folder / LOG_NAME).open("a") as log:
        for i in range(n):
            flagged = i % flag_every == 0
            log.write(json.dumps({"time": now, "request_id": f"{version}-{i}",
                                  "model_version": version, "melanoma": flagged,
                                  "prediction": "mel" if flagged else "nv"}) + "\n")  # fmt: skip


def _paired(folder: Path, stable: str, candidate: str, n: int, lost: bool) -> None:
    """``n`` requests answered by ``stable`` and mirrored to ``candidate`` (one request id, the
    candidate's marked shadow), one in four flagged melanoma by the stable version; ``lost``:
    the candidate flags none of them."""
    from dermaops.inference_log import LOG_NAME

    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    with (folder / LOG_NAME).open("a") as log:
        for i in range(n):
            flagged = i % 4 == 0
            kept = flagged and not lost
            common = {"time": now, "request_id": f"{stable}-{candidate}-{i}",
                      "in_distribution": True}  # fmt: skip
            for version, flag, shadow in (
                (stable, flagged, {}),
                (candidate, kept, {"shadow": True}),
            ):
                record = {
                    **common,
                    "model_version": version,
                    "melanoma": flag,
                    "prediction": "mel" if flag else "nv",
                    "p_mel": 0.9 if flag else 0.1,
                }
                log.write(json.dumps(record | shadow) + "\n")


@dataclass
class OnRelease:
    """A rollout driven on a release the loopback API holds: three registered versions, the
    first champion and served."""

    api: FakeApi
    reg: Any  # dermaops.registry.Registry (imported inside: MLflow loads only where needed)
    release: Any  # dermaops.registry.serving.ClusterServing
    driver: Any  # dermaops.registry.rollout.RolloutDriver
    logs: Path
    versions: tuple[str, str, str]


@contextmanager
def _rollout_on_release(
    objects: list[dict[str, Any]], tmp_path: Path, trained: Trained,
    monkeypatch: pytest.MonkeyPatch, prefix: str,
) -> Iterator[OnRelease]:  # fmt: skip
    from dermaops.registry import Registry
    from dermaops.registry.promotion import promote_stored
    from dermaops.registry.reconcile import reconcile
    from dermaops.registry.rollout import RolloutDriver, log_records
    from dermaops.registry.serving import ClusterServing
    from dermaops.rollout.judge import JudgeSettings
    from dermaops.rollout.plan import RolloutSettings, RolloutStore
    from tests.integration.test_registry import _register

    for api, kubeconfig in _api(objects, tmp_path):
        _on_cluster(kubeconfig, monkeypatch)
        reg, release, logs = Registry(), ClusterServing("dermaops", "dermaops"), tmp_path / "log"
        first, second, third = (_register(reg, trained, f"{prefix}-{i}") for i in range(3))
        assert promote_stored(reg, first, None, False).promoted
        assert reconcile(reg, release).served == first
        settings = RolloutSettings(enabled=True, steps=[10, 50], min_stage_s=0,
                                   judge=JudgeSettings(min_requests=50, min_pairs=50))  # fmt: skip
        driver = RolloutDriver(reg, release, RolloutStore(tmp_path / "state"), settings,
                               log_records(logs))  # fmt: skip
        yield OnRelease(api, reg, release, driver, logs, (first, second, third))


def test_a_rollout_on_the_release_moves_kserve_canary_weights_and_rolls_back_a_worse_one(
    tmp_path: Path, trained: Trained, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Serverless mode: each canary step patches canaryTrafficPercent onto the candidate
    (10, 50, then 100 at full); a candidate whose melanoma-flag rate collapsed in its canary is
    rolled back: the champion alias restored and the stable version patched back at 100 %."""
    from dermaops.registry.promotion import alias_version, promote_stored, rollback
    from dermaops.registry.reconcile import reconcile

    objects = render(*URI, "--set", "kserve.deploymentMode=Serverless")
    with _rollout_on_release(objects, tmp_path, trained, monkeypatch, "kfp-roll") as on:
        api, reg, release, driver, logs = on.api, on.reg, on.release, on.driver, on.logs
        first, second, third = on.versions

        def weights(api: FakeApi = api) -> list[Any]:
            sent = [body for method, path, _, body in api.requests
                    if method == "PATCH" and "inferenceservices" in path]  # fmt: skip
            return [c["value"] for body in sent for c in body
                    if c["path"] == "/spec/predictor/canaryTrafficPercent"]  # fmt: skip

        assert promote_stored(reg, second, None, False).promoted
        assert "rolling out (canary 10%)" in reconcile(reg, release, driver).action
        assert weights() == [10] and release.version() == second
        for expected, action in (([10, 50], "next"), ([10, 50, 100], "promote")):
            _answers(logs, first, 60, 4)
            _answers(logs, second, 60, 4)
            r, done = driver.tick()
            assert done == action and weights() == expected, r
        assert r is not None and r.status == "promoted"

        assert promote_stored(reg, third, None, False).promoted
        assert "rolling out (canary 10%)" in reconcile(reg, release, driver).action
        _answers(logs, second, 80, 4)  # a quarter flagged
        _answers(logs, third, 80, 40)  # one in forty
        r, done = driver.tick()
        assert done == "roll_back" and r is not None and r.status == "rolled_back", r
        assert r.last is not None and "melanoma_flag_rate_drop" in r.last.reason
        assert weights()[-2:] == [10, 100] and release.version() == second
        assert alias_version(reg, "champion") == second
        isvc = api.objects[f"{PATHS['InferenceService']}/dermaops"]
        assert isvc["spec"]["predictor"]["canaryTrafficPercent"] == 100

        # Version 3 again, rolled back by hand mid-canary: the rollout ends as superseded and
        # the champion is served at 100 % (not at the canary's 10 %).
        assert promote_stored(reg, third, None, False).promoted
        assert "rolling out (canary 10%)" in reconcile(reg, release, driver).action
        rollback(reg, "not today", to=second)
        r, done = driver.tick()
        assert done == "wait" and r is not None and r.status == "superseded"
        assert weights()[-2:] == [10, 100] and release.version() == second


def test_a_rollout_in_rawdeployment_mode_adds_and_drops_the_inferenceservices_canary(
    tmp_path: Path, trained: Trained, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RawDeployment mode (the chart's default): each canary step sets `spec.canary` to the
    served predictor copied with the candidate's version at the step's percent, the stable
    predictor untouched; full serves the candidate alone; a worse candidate is rolled back and
    its canary dropped, the stable predictor as it was."""
    from dermaops.registry.promotion import alias_version, promote_stored
    from dermaops.registry.reconcile import reconcile

    with _rollout_on_release(render(*URI), tmp_path, trained, monkeypatch, "kfp-raw") as on:
        api, reg, release, driver, logs = on.api, on.reg, on.release, on.driver, on.logs
        first, second, third = on.versions

        def spec(api: FakeApi = api) -> dict[str, Any]:
            isvc: dict[str, Any] = api.objects[f"{PATHS['InferenceService']}/dermaops"]
            return isvc["spec"]

        def versions(predictor: dict[str, Any]) -> str:
            return str(predictor["containers"][0]["env"][0]["value"])

        assert promote_stored(reg, second, None, False).promoted
        assert "rolling out (canary 10%)" in reconcile(reg, release, driver).action
        (canary,) = spec()["canary"]
        assert canary["trafficPercent"] == 10 and versions(canary["predictor"]) == second
        assert versions(spec()["predictor"]) == first, "the stable predictor serves the rest"
        for percent, action in ((50, "next"), (None, "promote")):
            _answers(logs, first, 60, 4)
            _answers(logs, second, 60, 4)
            r, done = driver.tick()
            assert done == action, r
            if percent is not None:
                assert [c["trafficPercent"] for c in spec()["canary"]] == [percent]
        assert "canary" not in spec() and versions(spec()["predictor"]) == second
        assert r is not None and r.status == "promoted" and release.version() == second

        assert promote_stored(reg, third, None, False).promoted
        assert "rolling out (canary 10%)" in reconcile(reg, release, driver).action
        _answers(logs, second, 80, 4)  # a quarter flagged
        _answers(logs, third, 80, 40)  # one in forty
        r, done = driver.tick()
        assert done == "roll_back" and r is not None and r.status == "rolled_back", r
        assert "canary" not in spec() and versions(spec()["predictor"]) == second
        assert release.version() == second and alias_version(reg, "champion") == second


def test_a_rollout_without_kserve_starts_in_a_mirrored_shadow_and_moves_the_routes_weights(
    tmp_path: Path, trained: Trained, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plain Deployment behind the chart's HTTPRoute: the rollout starts in shadow (the route
    mirrors every request to the canary Deployment, marked a shadow of the stable version, its
    weights 100/0), moves on the paired checks to 10 and 50 % and is promoted (the stable
    Deployment serves the candidate, the canary at 0 pods, the route 100/0 and stripping the
    header again); a candidate that lost its melanoma flags is rolled back in its shadow."""
    from dermaops.registry.promotion import alias_version, promote_stored
    from dermaops.registry.reconcile import reconcile

    objects = render(*URI, "--set", "kserve.enabled=false",
                     "--set", "predictor.canary.enabled=true",
                     "--set", "predictor.canary.parentRefs[0].name=clinic-gateway")  # fmt: skip
    with _rollout_on_release(objects, tmp_path, trained, monkeypatch, "kfp-plain") as on:
        api, reg, release, driver, logs = on.api, on.reg, on.release, on.driver, on.logs
        first, second, third = on.versions
        route, canary = (f"{PATHS['HTTPRoute']}/dermaops-predictor",
                         f"{PATHS['Deployment']}/dermaops-predictor-canary")  # fmt: skip

        def weights(api: FakeApi = api) -> list[int]:
            return [ref["weight"] for ref in api.objects[route]["spec"]["rules"][0]["backendRefs"]]

        def mirrored(api: FakeApi = api) -> bool:
            filters = api.objects[route]["spec"]["rules"][0]["filters"]
            return any(f["type"] == "RequestMirror" for f in filters)

        assert promote_stored(reg, second, None, False).promoted
        assert "rolling out (shadow)" in reconcile(reg, release, driver).action
        assert mirrored() and weights() == [100, 0] and api.objects[canary]["spec"]["replicas"] == 1
        _paired(logs, first, second, 60, lost=False)
        r, done = driver.tick()
        assert done == "next" and weights() == [90, 10] and not mirrored(), r
        for expected, action in (([50, 50], "next"), ([100, 0], "promote")):
            _answers(logs, first, 60, 4)
            _answers(logs, second, 60, 4)
            r, done = driver.tick()
            assert done == action and weights() == expected, r
        assert r is not None and r.status == "promoted" and release.version() == second
        assert api.objects[canary]["spec"]["replicas"] == 0 and not mirrored()

        assert promote_stored(reg, third, None, False).promoted
        assert "rolling out (shadow)" in reconcile(reg, release, driver).action
        _paired(logs, second, third, 60, lost=True)
        r, done = driver.tick()
        assert done == "roll_back" and r is not None and r.status == "rolled_back", r
        assert r.last is not None and "melanoma_flips" in r.last.reason
        assert weights() == [100, 0] and not mirrored()
        assert release.version() == second and alias_version(reg, "champion") == second


def test_under_kserve_a_rollout_starts_in_a_shadow_on_the_canary_deployment(
    tmp_path: Path, trained: Trained, monkeypatch: pytest.MonkeyPatch
) -> None:
    """KServe (RawDeployment) with the chart's canary Deployment: the rollout starts in shadow,
    the candidate on the canary Deployment, its pods ready before the reconciler's pass ends,
    the InferenceService untouched (the stable predictor mirrors, asking the monitor when); on
    the paired checks it moves to KServe's own canary at 10 %, the canary Deployment back to 0
    pods; a candidate that lost its melanoma flags is rolled back in its shadow."""
    from dermaops.registry.promotion import alias_version, promote_stored
    from dermaops.registry.reconcile import reconcile

    objects = render(*URI, "--set", "predictor.canary.enabled=true")
    with _rollout_on_release(objects, tmp_path, trained, monkeypatch, "kfp-shadow") as on:
        api, reg, release, driver, logs = on.api, on.reg, on.release, on.driver, on.logs
        first, second, third = on.versions
        home = f"{PATHS['Deployment']}/dermaops-predictor-canary"
        isvc = f"{PATHS['InferenceService']}/dermaops"

        def shadow_pods(api: FakeApi = api) -> tuple[int, str]:
            canary = api.objects[home]
            env = canary["spec"]["template"]["spec"]["containers"][0]["env"]
            return canary["spec"]["replicas"], env[0]["value"]

        assert promote_stored(reg, second, None, False).promoted
        before = json.dumps(api.objects[isvc])
        assert "rolling out (shadow)" in reconcile(reg, release, driver).action
        assert shadow_pods() == (1, second) and json.dumps(api.objects[isvc]) == before
        assert api.objects[home]["status"]["updatedReplicas"] == 1, "ready before the pass ended"
        assert ("rolled out", home) in api.events
        assert release.version() == first, "the InferenceService still serves the stable one"
        assert "rolling out (shadow)" in reconcile(reg, release, driver).action, "a pass resumes"
        _paired(logs, first, second, 60, lost=False)
        r, done = driver.tick()
        assert done == "next" and r is not None and r.current.label == "canary 10%", r
        assert api.objects[isvc]["spec"]["canary"][0]["trafficPercent"] == 10
        assert shadow_pods()[0] == 0, "KServe's canary takes the step: the shadow's pods go"
        for action in ("next", "promote"):
            _answers(logs, first, 60, 4)
            _answers(logs, second, 60, 4)
            r, done = driver.tick()
            assert done == action, r
        assert release.version() == second and shadow_pods()[0] == 0

        assert promote_stored(reg, third, None, False).promoted
        assert "rolling out (shadow)" in reconcile(reg, release, driver).action
        assert shadow_pods() == (1, third)
        _paired(logs, second, third, 60, lost=True)
        r, done = driver.tick()
        assert done == "roll_back" and r is not None and r.status == "rolled_back", r
        assert r.last is not None and "melanoma_flips" in r.last.reason
        assert shadow_pods()[0] == 0 and "canary" not in api.objects[isvc]["spec"]
        assert release.version() == second and alias_version(reg, "champion") == second


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
    monkeypatch.setattr(kube, "LEASE_SECONDS", 1)
    with kube.lease("dermaops", "dermaops-promotion", "slow deploy"):
        for _ in range(3):
            time.sleep(0.7)  # 2.1 s in all: twice the duration
            assert not kube._take("dermaops", "dermaops-promotion", "another")
        renewed = [r for r in api.requests if r[0] == "PUT" and r[3]["spec"]["holderIdentity"]
                   == "slow deploy"]  # fmt: skip
        assert len(renewed) >= 3, "renewed every third of a second"
    assert api.objects[LEASE]["spec"]["holderIdentity"] is None, "given back"
