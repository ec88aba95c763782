"""The train task's TrainJob logic through the real Kubernetes client, against an API on
loopback that answers as the Kubernetes API does for TrainJobs (no cluster can run here): create
(409 when it exists), get (404 when it does not), status conditions, node 0's pod and its log,
delete; every TrainJob sent validated strictly against Trainer's CRD, every NetworkPolicy against
Kubernetes 1.30. What only a cluster proves: that Trainer's controller starts the nodes, that
they reach each other, that NCCL runs over the pod network."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import kubernetes_validate
import pytest
import yaml

from dermaops.pipelines.trainjobs import TrainJobError, TrainJobs, best_of, train_on_nodes
from dermaops.train.trainjob import JOBSET_LABEL, TrainJobSettings, job_name
from tests.k8s.conftest import CRDS, _crd_validator

pytestmark = pytest.mark.integration

NS = "kubeflow"
JOBS = f"/apis/trainer.kubeflow.org/v1alpha1/namespaces/{NS}/trainjobs"
POLICIES = f"/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies"
PODS = f"/api/v1/namespaces/{NS}/pods"
SETTINGS = TrainJobSettings(nodes=2, gpus_per_node=0, image="ghcr.io/dermaops/trainer:test")


class TrainerApi(ThreadingHTTPServer):
    """TrainJobs and NetworkPolicies by name; node 0's pod and log for each TrainJob."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.jobs: dict[str, dict[str, Any]] = {}
        self.policies: dict[str, dict[str, Any]] = {}
        self.logs: dict[str, list[str]] = {}  # TrainJob -> node 0's log lines so far
        self.requests: list[tuple[str, str]] = []
        self.conflict_once = False  # a parallel try creates the job between our GET and POST
        self.terminating: dict[str, int] = {}  # TrainJob -> GETs left until its pods are gone
        self.deletions: list[dict[str, Any]] = []  # the DeleteOptions sent
        self.validate = _crd_validator("TrainJob", "v1alpha1")
        self.lock = threading.Lock()

    def finish(self, name: str, state: str, message: str = "") -> None:
        """What Trainer's controller writes when the nodes end."""
        with self.lock:
            self.jobs[name]["status"] = {"conditions": [
                {"type": "Created", "status": "True"},
                {"type": state, "status": "True", "message": message, "reason": state},
            ]}  # fmt: skip


class _Handler(BaseHTTPRequestHandler):
    server: TrainerApi

    def do_GET(self) -> None:
        url = urlparse(self.path)
        self.server.requests.append(("GET", url.path))
        api = self.server
        if url.path.startswith(f"{JOBS}/"):
            name = url.path.rsplit("/", 1)[1]
            with api.lock:  # a foreground deletion ends when the JobSet's pods are gone
                if name in api.terminating:
                    api.terminating[name] -= 1
                    if api.terminating[name] < 0:
                        del api.terminating[name], api.jobs[name]
                found = api.jobs.get(name)
            self._json(200, found) if found else self._json(404, _status(404, "NotFound"))
        elif url.path == PODS:
            selector = parse_qs(url.query)["labelSelector"][0]
            labels = dict(part.split("=", 1) for part in selector.split(","))
            name = labels[JOBSET_LABEL]
            assert labels["batch.kubernetes.io/job-completion-index"] == "0"
            items = [{"metadata": {"name": f"{name}-node-0-0-x1"}}] if name in api.jobs else []
            self._json(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {},
                             "items": items})  # fmt: skip
        elif url.path.startswith(f"{PODS}/") and url.path.endswith("/log"):
            job = url.path.split("/")[-2].rsplit("-node-", 1)[0]
            self._text("\n".join(api.logs.get(job, [])) + "\n")
        else:
            self._json(404, _status(404, "NotFound"))

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append(("POST", self.path))
        api, name = self.server, body["metadata"]["name"]
        if self.path == JOBS:
            errors = sorted(e.message for e in api.validate.iter_errors(body))
            if errors:
                self._json(422, _status(422, "Invalid", "; ".join(errors)))
                return
            with api.lock:
                if name in api.jobs or api.conflict_once:
                    api.conflict_once = False
                    api.jobs.setdefault(name, body)
                    self._json(409, _status(409, "AlreadyExists"))
                    return
                api.jobs[name] = body
            self._json(201, body)
        elif self.path == POLICIES:
            kubernetes_validate.validate(body, "1.30.0", strict=True)
            if name in api.policies:
                self._json(409, _status(409, "AlreadyExists"))
                return
            api.policies[name] = body
            self._json(201, body)
        else:
            self._json(404, _status(404, "NotFound"))

    def do_DELETE(self) -> None:
        api, name = self.server, self.path.rsplit("/", 1)[1]
        api.requests.append(("DELETE", self.path))
        length = int(self.headers.get("Content-Length") or 0)
        options = json.loads(self.rfile.read(length)) if length else {}
        if self.path.startswith(JOBS):
            with api.lock:  # foreground: marked, and gone only after its dependents (3 GETs)
                found = api.jobs.get(name)
                if found is not None:
                    api.deletions.append(options)
                    found.setdefault("metadata", {})["deletionTimestamp"] = "2026-12-06T00:00:00Z"
                    api.terminating.setdefault(name, 3)
        else:
            found = api.policies.pop(name, None)
        if found is None:
            self._json(404, _status(404, "NotFound"))
        else:
            self._json(200, _status(200, "Success"))

    def _json(self, status: int, body: Any) -> None:
        self._send(status, json.dumps(body).encode(), "application/json")

    def _text(self, text: str) -> None:
        self._send(200, text.encode(), "text/plain")

    def _send(self, status: int, data: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


def _status(code: int, reason: str, message: str = "") -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
            "reason": reason, "message": message or reason}  # fmt: skip


@pytest.fixture
def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TrainerApi]:
    if not CRDS.is_dir():
        pytest.fail(f"the CRD schemas are missing: {CRDS}")
    server = TrainerApi()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "loopback",
        "clusters": [{"name": "loopback",
                      "cluster": {"server": f"http://127.0.0.1:{server.server_address[1]}"}}],
        "users": [{"name": "runner", "user": {"token": "pipeline-runner"}}],
        "contexts": [{"name": "loopback", "context": {"cluster": "loopback", "user": "runner"}}],
    }))  # fmt: skip
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _nodes_train(shared: Path, name: str) -> None:
    """What the nodes leave on the shared volume when they complete."""
    run = shared / "runs" / name / "train"
    (run / "model").mkdir(parents=True)
    (run / "model" / "model.onnx").write_bytes(b"onnx")
    history = [{"epoch": 1, "val_f1_macro": 0.4}, {"epoch": 2, "val_f1_macro": 0.55},
               {"epoch": 3, "val_f1_macro": 0.5}]  # fmt: skip
    (run / "history.json").write_text(json.dumps(history))


def test_a_trainjob_is_created_followed_to_complete_and_its_run_handed_on(
    api: TrainerApi, tmp_path: Path
) -> None:
    prepared, shared, out = tmp_path / "prepared", tmp_path / "shared", tmp_path / "out"
    prepared.mkdir()
    (prepared / "splits.csv").write_text("image_id,split\n")
    name, echoed = job_name("run-1"), []
    api.logs[name] = ["epoch 1", "epoch 2"]

    staged: dict[str, Any] = {}

    def echo(line: str) -> None:
        echoed.append(line)
        if line.endswith("epoch 2") and name in api.jobs:  # the nodes end meanwhile
            here = shared / "runs" / name
            staged["data"] = (here / "prepared" / "splits.csv").is_file()
            staged["settings"] = yaml.safe_load((here / "train.yaml").read_text())
            api.logs[name].append("done")
            _nodes_train(shared, name)
            api.finish(name, "Complete")

    jobs = TrainJobs(NS, poll_s=0.05)
    assert train_on_nodes(prepared, out, "run-1", shared, SETTINGS, {"lr": 0.001}, jobs, 10,
                          echo) == name  # fmt: skip
    assert (out / "model" / "model.onnx").read_bytes() == b"onnx"
    assert best_of(out) == {"best_epoch": 2, "best_val_f1_macro": 0.55}
    assert [line.split("] ", 1)[1] for line in echoed if "] " in line] == [
        "epoch 1", "epoch 2", "done"], "node 0's log, each line once"  # fmt: skip
    assert staged == {"data": True, "settings": {"lr": 0.001}}, "what the nodes read"
    assert not (shared / "runs" / name).exists(), "the shared volume freed once handed on"
    posted = [p for m, p in api.requests if m == "POST"]
    assert posted == [POLICIES, JOBS], "the policy first: no node runs unguarded"
    assert not api.jobs and not api.policies, "deleted once the run is handed on"


def test_a_retried_task_follows_the_job_it_created_and_a_failed_one_resumes(
    api: TrainerApi, tmp_path: Path
) -> None:
    jobs = TrainJobs(NS, poll_s=0.05)
    name, how = jobs.ensure("run-2", SETTINGS)
    assert how == "created" and name in api.jobs
    assert jobs.ensure("run-2", SETTINGS) == (name, "followed")
    assert [m for m, p in api.requests if m == "POST" and p == JOBS] == ["POST"]

    api.finish(name, "Failed", "node 1 was preempted")
    with pytest.raises(TrainJobError, match="failed: node 1 was preempted"):
        jobs.wait(name, 5)
    # It failed after a checkpoint: the new job resumes from it.
    run_folder = tmp_path / "train"
    run_folder.mkdir()
    (run_folder / "checkpoint.pt").write_bytes(b"epoch 3")
    assert jobs.ensure("run-2", SETTINGS, run_folder=run_folder) == (name, "restarted")
    assert "--resume" in api.jobs[name]["spec"]["trainer"]["args"]
    assert "status" not in api.jobs[name], "a new TrainJob, not the failed one"
    assert api.deletions == [{"propagationPolicy": "Foreground"}], "its pods gone first"
    # It failed before its first epoch ended: a fresh start on an emptied folder.
    api.finish(name, "Failed", "node 0 was preempted")
    (run_folder / "checkpoint.pt").unlink()
    (run_folder / "settings.json").write_text("{}")
    assert jobs.ensure("run-2", SETTINGS, run_folder=run_folder) == (name, "restarted")
    assert "--resume" not in api.jobs[name]["spec"]["trainer"]["args"]
    assert not run_folder.exists(), "nothing of the failed try for the new one to refuse"
    (aside,) = tmp_path.glob("train.set-aside-*")
    assert (aside / "settings.json").is_file(), "moved aside, not deleted: it may still be written"


def test_a_trained_run_is_handed_on_even_when_its_job_will_not_go(
    api: TrainerApi, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The model is out when the deletion lags (a finalizer that never ends): a warning naming
    the TrainJob and how to delete it, not a failed task that a retry would train again."""
    prepared, shared, out = tmp_path / "prepared", tmp_path / "shared", tmp_path / "out"
    prepared.mkdir()
    name = job_name("run-6")

    def echo(line: str) -> None:
        if name in api.jobs and "status" not in api.jobs[name]:
            _nodes_train(shared, name)
            api.finish(name, "Complete")
            api.terminating[name] = 10**6

    api.logs[name] = ["epoch 1"]
    jobs = TrainJobs(NS, poll_s=0.02, delete_wait_s=0.1)
    assert train_on_nodes(prepared, out, "run-6", shared, SETTINGS, {}, jobs, 10, echo) == name
    assert (out / "model" / "model.onnx").read_bytes() == b"onnx"
    assert f"kubectl delete trainjob {name} -n {NS}" in caplog.text


def test_a_deletion_waits_until_the_api_has_let_the_job_go(api: TrainerApi) -> None:
    """Deleting is asynchronous in Kubernetes: a TrainJob created again before the old one's
    pods are gone would meet a 409 and be taken for a parallel try's."""
    jobs = TrainJobs(NS, poll_s=0.01)
    name, _ = jobs.ensure("run-5", SETTINGS)
    jobs.delete(name)
    assert name not in api.jobs and [m for m, _ in api.requests].count("GET") >= 4
    api.jobs[name] = {"metadata": {"name": name}}
    api.terminating[name] = 10**6  # a finalizer that never ends
    with pytest.raises(TrainJobError, match="still there 0 s after deleting it"):
        jobs.delete(name, wait_s=0.05)


def test_a_job_created_by_a_parallel_try_is_followed_and_silence_times_out(
    api: TrainerApi,
) -> None:
    jobs = TrainJobs(NS, poll_s=0.05)
    api.conflict_once = True
    name, how = jobs.ensure("run-3", SETTINGS)
    assert how == "followed" and name in api.jobs
    with pytest.raises(TrainJobError, match="still running after 0 s"):
        jobs.wait(name, 0.2)
    jobs.delete(name)
    with pytest.raises(TrainJobError, match="is gone"):
        jobs.wait(name, 1)


def test_a_trainjob_the_api_refuses_says_why(api: TrainerApi) -> None:
    jobs = TrainJobs(NS)
    bad = SETTINGS.model_copy(update={"image": "registry.example/" + "x" * 500})
    with pytest.raises(TrainJobError, match=r"creating TrainJob .*: 422") as caught:
        jobs.ensure("run-4", bad)
    assert "is too long" in str(caught.value) and not api.jobs
