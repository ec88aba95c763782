"""The train stage on more than one node: its TrainJob created once per pipeline run, followed to
its end, and the trained run handed to the next stage as the one-node path hands it.

The KFP task does not train. It copies the prepared set onto the shared volume (the pipelines'
checkpoint claim, mounted at ``shared_root`` in the task and at
:data:`~dermaops.train.trainjob.SHARED` on every node), creates the run's TrainJob and the
NetworkPolicy that admits only its own nodes to each other, prints node 0's log into its own
while it waits for ``Complete`` or ``Failed``, and copies the run folder back into its output.

A retried task (its pod lost, its node preempted) finds the TrainJob by name (409 on create) and
follows it instead of starting a second; one that ended ``Failed`` is deleted and created again
with ``--resume``, so training goes on from the last checkpoint on the volume.
"""

from __future__ import annotations

import functools
import json
import logging
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel

from dermaops.errors import DermaOpsError
from dermaops.train.layout import CHECKPOINT
from dermaops.train.trainjob import (
    API_VERSION,
    JOBSET_LABEL,
    SHARED,
    TrainJobSettings,
    job_name,
    network_policy,
    trainjob,
)

log = logging.getLogger(__name__)

GROUP, VERSION = API_VERSION.split("/")
PLURAL = "trainjobs"
NODE_ZERO = "batch.kubernetes.io/job-completion-index=0"  # the Indexed Job's first pod
State = Literal["running", "complete", "failed"]


class TrainJobError(DermaOpsError):
    """The TrainJob could not be created or followed, failed, or ran past its time."""


def state_of(job: dict[str, Any]) -> tuple[State, str]:
    """Where a TrainJob stands, from its status conditions, and the condition's message."""
    for condition in job.get("status", {}).get("conditions", []):
        if condition.get("status") != "True":
            continue
        if condition.get("type") == "Complete":
            return "complete", str(condition.get("message", ""))
        if condition.get("type") == "Failed":
            return "failed", str(condition.get("message") or condition.get("reason", ""))
    return "running", ""


@dataclass
class TrainJobs:
    """TrainJobs in ``namespace``, through the Kubernetes API (in-cluster, or a kubeconfig)."""

    namespace: str
    poll_s: float = 5.0
    delete_wait_s: float = 300.0  # how long a deletion may take before it is an error
    _printed: dict[str, int] = field(default_factory=dict)  # pod -> log lines printed

    def __post_init__(self) -> None:
        from kubernetes import client

        from dermaops.registry.kube import connect

        if not connect():
            raise TrainJobError("no Kubernetes API: neither in-cluster config nor a kubeconfig")
        self._custom = client.CustomObjectsApi()
        self._core = client.CoreV1Api()
        self._network = client.NetworkingV1Api()

    def _call(self, what: str, call: Callable[[], Any], missing_ok: bool = False) -> Any:
        from kubernetes.client.exceptions import ApiException

        try:
            return call()
        except ApiException as e:
            if missing_ok and e.status == 404:
                return None
            raise TrainJobError(f"{what}: {e.status} {e.reason}: {_message(e.body)}") from e

    def get(self, name: str) -> dict[str, Any] | None:
        """The TrainJob, or None when there is none."""
        found: dict[str, Any] | None = self._call(
            f"reading TrainJob {name}",
            lambda: self._custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name
            ),
            missing_ok=True,
        )
        return found

    def ensure(
        self, run_id: str, s: TrainJobSettings, config: str = "", run_folder: Path | None = None
    ) -> tuple[str, Literal["created", "followed", "restarted"]]:
        """The run's TrainJob: the one a previous try created and is still running, or a new
        one (replacing a failed one). ``run_folder``: where this task sees the job's run folder
        on the shared volume; a new job resumes from the checkpoint there, and starts on an
        empty folder when there is none (a try that died before its first epoch ended: its
        folder is moved aside, kept with the run's files until the run is handed on, so a
        failure to move it is an error here rather than a refusal from ``train`` later).

        Raises:
            TrainJobError: the API refused, or the folder could not be moved aside.
        """
        name = job_name(run_id)
        found = self.get(name)
        if found is not None and state_of(found)[0] != "failed":
            return name, "followed"
        if found is not None:
            log.warning("TrainJob %s failed (%s): starting it again", name, state_of(found)[1])
            self.delete(name)
        resume = run_folder is not None and (run_folder / CHECKPOINT).is_file()
        if run_folder is not None and not resume and run_folder.exists():
            _set_aside(run_folder)
        self._policy(network_policy(run_id, self.namespace))
        body = trainjob(run_id, self.namespace, s, config, resume=resume)
        created = self._call(
            f"creating TrainJob {name}",
            lambda: self._create(body),
        )
        if created is None:  # created meanwhile by a parallel try
            return name, "followed"
        return name, "created" if found is None else "restarted"

    def _create(self, body: dict[str, Any]) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            created: dict[str, Any] = self._custom.create_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, body
            )
        except ApiException as e:
            if e.status == 409:
                return None
            raise
        return created

    def _policy(self, body: dict[str, Any]) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self._network.create_namespaced_network_policy(self.namespace, body)
        except ApiException as e:
            if e.status != 409:  # already there: a previous try's
                raise TrainJobError(f"creating NetworkPolicy {body['metadata']['name']}: "
                                    f"{e.status} {_message(e.body)}") from e  # fmt: skip

    def wait(self, name: str, timeout_s: float, echo: Callable[[str], None] = print) -> None:
        """Until ``name`` completes, printing node 0's new log lines as they come.

        Raises:
            TrainJobError: it failed (its condition's message), vanished, or ran past
                ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            job = self.get(name)
            if job is None:
                raise TrainJobError(f"TrainJob {name} is gone (deleted by someone else?)")
            self._echo_node_zero(name, echo)
            state, message = state_of(job)
            if state == "complete":
                return
            if state == "failed":
                raise TrainJobError(f"TrainJob {name} failed: {message}")
            if time.monotonic() > deadline:
                raise TrainJobError(f"TrainJob {name} still running after {timeout_s:.0f} s")
            time.sleep(self.poll_s)

    def _echo_node_zero(self, name: str, echo: Callable[[str], None]) -> None:
        pods = self._call(
            f"listing the pods of {name}",
            lambda: self._core.list_namespaced_pod(
                self.namespace, label_selector=f"{JOBSET_LABEL}={name},{NODE_ZERO}"
            ),
        )
        for pod in pods.items:
            pod_name: str = pod.metadata.name
            try:
                text = self._call(
                    f"reading the log of {pod_name}",
                    functools.partial(self._core.read_namespaced_pod_log, pod_name, self.namespace),
                    missing_ok=True,
                )
            except TrainJobError as e:  # its container not started yet: the next poll
                log.debug("%s", e)
                continue
            lines = str(text or "").splitlines()
            for line in lines[self._printed.get(pod_name, 0) :]:
                echo(f"[{pod_name}] {line}")
            self._printed[pod_name] = max(self._printed.get(pod_name, 0), len(lines))

    def delete(self, name: str, wait_s: float | None = None) -> None:
        """The TrainJob (its JobSet and pods first: foreground deletion) and its NetworkPolicy;
        returns once the API no longer has the TrainJob, so a new one of the name can start.

        Raises:
            TrainJobError: the API refused, or the TrainJob was still there after ``wait_s``
                (default ``delete_wait_s``).
        """
        from kubernetes import client

        self._call(
            f"deleting TrainJob {name}",
            lambda: self._custom.delete_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name,
                body=client.V1DeleteOptions(propagation_policy="Foreground"),
            ),
            missing_ok=True,
        )  # fmt: skip
        self._call(
            f"deleting NetworkPolicy {name}",
            lambda: self._network.delete_namespaced_network_policy(name, self.namespace),
            missing_ok=True,
        )
        wait_s = self.delete_wait_s if wait_s is None else wait_s
        deadline = time.monotonic() + wait_s
        while self.get(name) is not None:
            if time.monotonic() > deadline:
                raise TrainJobError(f"TrainJob {name} still there {wait_s:.0f} s after deleting it")
            time.sleep(self.poll_s)


def _set_aside(folder: Path) -> Path:
    """Move a run folder without a checkpoint out of a new job's way (``train`` refuses an
    occupied folder unless it resumes); the shared volume's cleanup removes it with the run."""
    aside = folder.with_name(f"{folder.name}.set-aside-{uuid.uuid4().hex[:12]}")
    try:
        folder.rename(aside)
    except OSError as e:
        raise TrainJobError(f"could not move {folder} aside for a new TrainJob: {e}") from e
    log.warning("%s held no checkpoint: moved to %s; the new TrainJob starts afresh", folder, aside)
    return aside


def _message(body: Any) -> str:
    try:
        return str(json.loads(body).get("message", body))
    except (TypeError, ValueError, AttributeError):
        return str(body)


def train_on_nodes(
    prepared: Path, out: Path, run_id: str, shared_root: Path, s: TrainJobSettings,
    train_settings: dict[str, Any], jobs: TrainJobs, timeout_s: float,
    echo: Callable[[str], None] = print,
) -> str:  # fmt: skip
    """Train ``prepared`` into ``out`` on the run's TrainJob; the TrainJob's name.

    ``shared_root`` is where this task mounts the volume the nodes mount at ``/shared``."""
    name = job_name(run_id)
    here = shared_root / "runs" / name
    staged = here / "prepared"
    if not (here / "prepared.done").is_file():  # a retry finds the copy whole, or redoes it
        shutil.rmtree(staged, ignore_errors=True)
        shutil.copytree(prepared, staged)
        (here / "prepared.done").touch()
    (here / "train.yaml").write_text(yaml.safe_dump(train_settings, sort_keys=False))
    name, how = jobs.ensure(
        run_id, s, config=f"{SHARED}/runs/{name}/train.yaml", run_folder=here / "train"
    )
    echo(f"TrainJob {name} ({how}): {s.nodes} nodes x {s.processes_per_node} processes")
    jobs.wait(name, timeout_s, echo)
    trained = here / "train"
    if not (trained / "model").is_dir():
        raise TrainJobError(f"TrainJob {name} completed without a model in {trained}")
    shutil.copytree(trained, out, dirs_exist_ok=True)
    try:
        jobs.delete(name)
    except TrainJobError as e:  # the model is out: a slow or refused delete fails nothing
        log.warning("TrainJob %s trained the model but was not deleted: %s; delete it by "
                    "hand: kubectl delete trainjob %s -n %s", name, e, name,
                    jobs.namespace)  # fmt: skip
    shutil.rmtree(here)  # the prepared copy and the run: the shared volume is not an archive
    return name


def own_namespace() -> str:
    """The namespace this pod runs in (its service account's), for the TrainJob beside it.

    Raises:
        TrainJobError: not in a pod, and no namespace given.
    """
    path = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    try:
        return path.read_text().strip()
    except OSError as e:
        raise TrainJobError("no namespace for the TrainJob: give one (not in a pod)") from e


def best_of(run: Path) -> dict[str, Any]:
    """The best epoch and its validation macro-F1, from the run's ``history.json``."""
    history = json.loads((run / "history.json").read_text())
    best = max(history, key=lambda row: row["val_f1_macro"])
    return {"best_epoch": int(best["epoch"]), "best_val_f1_macro": float(best["val_f1_macro"])}


def on_nodes(
    prepared: Path, out: Path, run_id: str, shared_root: Path, chosen: BaseModel,
    s: TrainJobSettings, namespace: str, timeout_s: float,
) -> dict[str, Any]:  # fmt: skip
    """What the train component runs for a TrainJob of shape ``s``: the run trained on it, and
    the best epoch and macro-F1 for the model's metadata."""
    if not str(shared_root) or str(shared_root) == ".":
        raise TrainJobError("training on nodes needs the shared checkpoint volume (checkpoints)")
    jobs = TrainJobs(namespace or own_namespace())
    train_on_nodes(prepared, out, run_id, shared_root, s, chosen.model_dump(mode="json"), jobs,
                   timeout_s)  # fmt: skip
    return best_of(out)
