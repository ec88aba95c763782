"""The TrainJob a train stage creates to train on more than one node (Kubeflow Trainer v2).

One TrainJob per pipeline run, named after it, on the chart's ``ClusterTrainingRuntime``
(``<release>-torch``): Trainer's torch plugin starts ``numNodes`` pods and gives each its place
through ``PET_NNODES``, ``PET_NPROC_PER_NODE``, ``PET_NODE_RANK``, ``PET_MASTER_ADDR`` and
``PET_MASTER_PORT``, which ``torchrun`` reads as its defaults; torchrun then starts
``numProcPerNode`` processes per node with ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``, which
``dermaops train`` reads (:class:`dermaops.train.step.Distributed`). The ``PET_`` names belong
to the plugin: Trainer's webhook refuses a TrainJob that sets them, and so do the settings.

Data in and the run folder out go through the volume every node mounts at :data:`SHARED` (the
pipelines' checkpoint claim, ReadWriteMany): the task copies its prepared set there and the
trained run back. The runtime holds what every run shares (the volume, memory-backed
``/dev/shm`` for NCCL, the GPU pool's selector and toleration); the TrainJob, what this run is.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, field_validator

API_VERSION: Final = "trainer.kubeflow.org/v1alpha1"
RUNTIME_KIND: Final = "ClusterTrainingRuntime"
SHARED: Final = "/shared"  # where every node mounts the shared volume
PLUGIN_ENV: Final = frozenset(
    {"PET_NNODES", "PET_NPROC_PER_NODE", "PET_NODE_RANK", "PET_MASTER_ADDR", "PET_MASTER_PORT"}
)
JOBSET_LABEL: Final = "jobset.sigs.k8s.io/jobset-name"  # on every pod of a TrainJob's JobSet
MAX_NAME: Final = 40  # JobSet names pods <trainjob>-node-<i>-<j>-<hash>: leave room for it


class TrainJobSettings(BaseModel):
    """Where a multi-node training runs, and on what."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    nodes: int = Field(2, ge=2, description="training nodes (one pod each)")
    gpus_per_node: int = Field(1, ge=0, description="accelerators per node (0: CPU, gloo)")
    image: str = Field(..., min_length=1, description="the trainer image")
    runtime: str = Field("dermaops-torch", description="the chart's ClusterTrainingRuntime")
    accelerator: str = Field("nvidia.com/gpu", description="the accelerator resource")
    cpu: str = Field("8", description="CPU request per node")
    memory: str = Field("32G", description="memory request per node")
    env: dict[str, str] = Field(default_factory=dict, description="more env for every node")

    @field_validator("env")
    @classmethod
    def _not_the_plugins(cls, env: dict[str, str]) -> dict[str, str]:
        taken = sorted(PLUGIN_ENV & env.keys())
        if taken:
            raise ValueError(f"{', '.join(taken)} are set by Trainer's torch plugin, not by us")
        return env

    @property
    def processes_per_node(self) -> int:
        """One process per accelerator; one per node on CPUs."""
        return self.gpus_per_node or 1


def job_name(run_id: str) -> str:
    """The TrainJob's name for a pipeline run: a DNS-1035 label, the same for every retry of the
    run's train task (so a retry finds the job it started), short enough for JobSet's pod names.

    Raises:
        ValueError: an empty run id.
    """
    if not run_id.strip():
        raise ValueError("a TrainJob is named after its pipeline run: the run id is empty")
    digest = hashlib.sha256(run_id.encode()).hexdigest()[:8]
    readable = re.sub(r"[^a-z0-9]+", "-", run_id.lower()).strip("-")
    room = MAX_NAME - len("train--") - len(digest)
    return f"train-{readable[:room].strip('-') or 'run'}-{digest}".replace("--", "-")


def run_folders(run_id: str) -> tuple[str, str]:
    """The prepared set and the run folder of ``run_id`` on the shared volume."""
    base = f"{SHARED}/runs/{job_name(run_id)}"
    return f"{base}/prepared", f"{base}/train"


def trainjob(
    run_id: str, namespace: str, s: TrainJobSettings, config: str = "", resume: bool = False
) -> dict[str, Any]:
    """The TrainJob of ``run_id``: ``dermaops train`` under torchrun on ``s.nodes`` nodes,
    reading the run's prepared set and writing its run folder on the shared volume.
    ``config``: a settings file there (the train settings the task chose); ``resume``: go on
    from the run folder's checkpoint (a retried task whose job was lost)."""
    data, out = run_folders(run_id)
    args = ["--no-python", "dermaops", "train", "--data", data, "--out", out]
    if config:
        args += ["--config", config]
    if resume:
        args.append("--resume")
    requests = {"cpu": s.cpu, "memory": s.memory}
    resources: dict[str, Any] = {"requests": requests}
    if s.gpus_per_node:
        resources["limits"] = {s.accelerator: s.gpus_per_node}
    env = {"DERMAOPS_TRAIN_DEVICE": "cuda" if s.gpus_per_node else "cpu", **s.env}
    return {
        "apiVersion": API_VERSION,
        "kind": "TrainJob",
        "metadata": {
            "name": job_name(run_id),
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/name": "dermaops",
                "app.kubernetes.io/component": "train",
            },
            "annotations": {"dermaops.io/pipeline-run": run_id},
        },
        "spec": {
            "runtimeRef": {
                "apiGroup": "trainer.kubeflow.org",
                "kind": RUNTIME_KIND,
                "name": s.runtime,
            },
            "trainer": {
                "image": s.image,
                "command": ["torchrun"],
                "args": args,
                "env": [{"name": k, "value": v} for k, v in sorted(env.items())],
                "numNodes": s.nodes,
                "numProcPerNode": s.processes_per_node,
                "resourcesPerNode": resources,
            },
        },
    }


def network_policy(run_id: str, namespace: str) -> dict[str, Any]:
    """Ingress to the pods of ``run_id``'s TrainJob from its own pods only: torchrun's
    rendezvous (29500) and NCCL's or gloo's connections between nodes. The pods are JobSet's,
    labelled with its name (the TrainJob's); the task creates this beside the TrainJob and
    deletes it with it."""
    name = job_name(run_id)
    pods = {"matchLabels": {JOBSET_LABEL: name}}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/name": "dermaops",
                "app.kubernetes.io/component": "train",
            },
        },
        "spec": {
            "podSelector": pods,
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": pods}]}],
        },
    }
