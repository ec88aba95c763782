"""Settings that shape the compiled pipeline: image, GPU node pool, secrets, retries."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from dermaops.deploy import CHART, TRAINER_IMAGE, fullname
from dermaops.train.trainjob import TrainJobSettings


class PipelineSettings(BaseModel):
    """What differs between clusters; runtime choices (data, epochs, thresholds) are parameters."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    image: str = Field(TRAINER_IMAGE, description="the project image every task runs")
    release: str = Field(CHART, description="the Helm release whose predictor deploy patches")
    accelerator: str = Field("nvidia.com/gpu", description="the train task's accelerator resource")
    gpus: int = Field(
        1, ge=0, description="accelerators for train, per node (0: train on CPU nodes)"
    )
    train_nodes: int = Field(
        1,
        ge=1,
        description="nodes train runs on: more than 1 trains on a Kubeflow Trainer "
        "TrainJob (the chart's trainer.enabled), the train task only following it",
    )
    train_timeout_s: int = Field(
        172800, gt=0, description="how long train waits for its TrainJob (train_nodes > 1)"
    )
    gpu_node_label: str = Field("nvidia.com/gpu.present", description="node selector key")
    gpu_node_value: str = Field("true", description="node selector value")
    gpu_toleration_key: str = Field("nvidia.com/gpu", description="taint key of the GPU pool")
    gpu_toleration_effect: str = Field(
        "NoSchedule", pattern="^(NoSchedule|PreferNoSchedule|NoExecute)$"
    )
    train_cpu: str = Field("8", description="CPU request of train")
    train_memory: str = Field("32G", description="memory request of train")
    mlflow_secret: str = Field(
        "dermaops-mlflow",
        description="Secret with MLFLOW_TRACKING_URI (and user/password; and, when the server "
        "proxies artifacts, DERMAOPS_REGISTRY_ARTIFACTS_DESTINATION)",
    )
    storage_secret: str = Field(
        "dermaops-object-store", description="Secret with the artifact store's S3 credentials"
    )
    webhook_secret: str = Field("dermaops-webhook", description="Secret with DERMAOPS_WEBHOOK_URL")
    config_map: str = Field(
        "dermaops-pipelines",
        description="ConfigMap the chart writes in the pipelines' namespace, with "
        "DERMAOPS_PROMOTION_LEASE (the Lease promote and deploy hold while moving aliases)",
    )
    feedback_pvc: str = Field("dermaops-feedback", description="PVC with clinician feedback")
    checkpoint_pvc: str = Field(
        "dermaops-checkpoints",
        description="PVC where train keeps its checkpoint per run, so that a retry in a new pod "
        "resumes (the chart's pipelines.checkpoints); empty: in the task's output only",
    )
    ingest_backoff: str = Field("30s", description="first wait before an ingest retry")
    train_backoff: str = Field(
        "60s", description="wait before a train retry (a preempted GPU node is replaced)"
    )

    def train_job(self, **overrides: object) -> TrainJobSettings:
        """What a multi-node train stage's TrainJob runs: these settings' image, GPUs per node,
        requests and the release's runtime (the chart's ``<fullname>-torch``). The one builder
        for the compiled pipeline and ``dermaops pipeline trainjob``.

        Raises:
            pydantic.ValidationError: an override the TrainJob's settings refuse.
        """
        shape: dict[str, object] = {
            "nodes": max(2, self.train_nodes), "gpus_per_node": self.gpus, "image": self.image,
            "runtime": f"{fullname(self.release)}-torch", "accelerator": self.accelerator,
            "cpu": self.train_cpu, "memory": self.train_memory,
        }  # fmt: skip
        return TrainJobSettings.model_validate({**shape, **overrides})

    @model_validator(mode="after")
    def _nodes_share_a_volume(self) -> PipelineSettings:
        if self.train_nodes > 1 and not self.checkpoint_pvc:
            raise ValueError("train_nodes > 1 needs checkpoint_pvc: every node mounts it")
        return self
