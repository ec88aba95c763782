"""The training and retraining pipelines: one graph, two shapes.

ingest -> prepare -> (baseline, train) -> evaluate -> gate -> register -> promote -> [deploy]
inside an exit handler whose ``notify`` task reports success or the stage that failed.
Retraining merges clinician feedback, keeps the champion's split, and must beat the champion.
"""

# No ``from __future__ import annotations``: KFP reads the pipeline's annotations as types.
from pathlib import Path
from typing import Any, Literal

from kfp import compiler, dsl, kubernetes
from kfp.dsl.base_component import BaseComponent

from dermaops.components.build import build
from dermaops.notify import WEBHOOK_ENV
from dermaops.pipelines.settings import PipelineSettings
from dermaops.settings import ARTIFACTS_DESTINATION_ENV, PROMOTION_LEASE_ENV

Kind = Literal["training", "retraining"]
KINDS: tuple[Kind, ...] = ("training", "retraining")
COMPILED = Path(__file__).parent / "compiled"
FEEDBACK_MOUNT = "/mnt/feedback"
CHECKPOINT_MOUNT = "/mnt/checkpoints"

# Retries as in the earlier system's table; none around the gate or anything after it.
RETRIES = {"ingest": 3, "prepare": 1, "train": 1, "evaluate": 1}
# Cached where the same inputs give the same outputs and a rerun would only cost time.
CACHED = {"ingest", "prepare", "baseline"}
MLFLOW_KEYS = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
               ARTIFACTS_DESTINATION_ENV)  # fmt: skip
STORE_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_S3_ENDPOINT_URL")
MLFLOW_TASKS = {"train", "evaluate", "gate", "register", "promote", "deploy", "notify"}
ALIAS_TASKS = {"promote", "deploy"}  # move the aliases or read them to deploy


def build_pipeline(kind: Kind, settings: PipelineSettings | None = None) -> BaseComponent:
    """The ``training`` or ``retraining`` pipeline for one cluster's settings."""
    s = settings or PipelineSettings()
    c = build(s.image)
    retraining = kind == "retraining"

    def pipeline(
        source: str = "synthetic",
        data_path: str = "",
        n: int = 1000,
        data_seed: int = 0,
        base_url: str = "",
        feedback: str = FEEDBACK_MOUNT if retraining else "",
        arch: str = "resnet50",
        weights: str = "imagenet",
        epochs: int = 15,
        image_size: int = 224,
        batch_size: int = 64,
        # KFP reads the default and the bare type from the signature ("Dict" in the IR)
        train_settings: dict = {},  # type: ignore[type-arg]  # noqa: B006
        checkpoints: str = CHECKPOINT_MOUNT if s.checkpoint_pvc else "",
        min_f1_macro: float = 0.6,
        min_melanoma_sensitivity: float = 0.8,
        max_ece: float = 0.15,
        deploy_target: str = "kubernetes",
        namespace: str = "dermaops",
        canary_percent: int = 0,
        webhook_url: str = "",
        model_name: str = "dermaops",
    ) -> None:
        run_id = dsl.PIPELINE_JOB_ID_PLACEHOLDER
        tracked: dict[str, Any] = {"kfp_run_id": run_id, "model_name": model_name}
        done = c.notify(pipeline=kind, webhook_url=webhook_url, **tracked)
        _configure(done, "notify", s, cached=False)
        with dsl.ExitHandler(done, name="dermaops"):
            raw = c.ingest(
                source=source, path=data_path, n=n, seed=data_seed, base_url=base_url,
                feedback=feedback, keep_champion_split=True, model_name=model_name,
            )  # fmt: skip
            _configure(raw, "ingest", s, cached=not retraining)
            if retraining:
                kubernetes.mount_pvc(raw, pvc_name=s.feedback_pvc, mount_path=FEEDBACK_MOUNT)
            prepared = c.prepare(raw=raw.outputs["raw"])
            _configure(prepared, "prepare", s)
            data = prepared.outputs["prepared"]
            baseline = c.baseline(prepared=data)
            _configure(baseline, "baseline", s)
            on_nodes = (
                {"trainjob": s.train_job().model_dump(), "timeout_s": s.train_timeout_s}
                if s.train_nodes > 1 else {}
            )  # fmt: skip
            trained = c.train(
                prepared=data, arch=arch, weights=weights, epochs=epochs, image_size=image_size,
                batch_size=batch_size, settings=train_settings, checkpoints=checkpoints,
                **on_nodes, **tracked,
            )  # fmt: skip
            _configure(trained, "train", s)
            if s.train_nodes == 1:  # else the TrainJob's nodes are on the GPU pool, not this task
                _on_gpu_pool(trained, s)
            if s.checkpoint_pvc:  # a retry, in a new pod, resumes from the last epoch
                kubernetes.mount_pvc(trained, pvc_name=s.checkpoint_pvc,
                                     mount_path=CHECKPOINT_MOUNT)  # fmt: skip
            scored = c.evaluate(prepared=data, model=trained.outputs["model"], **tracked)
            _configure(scored, "evaluate", s)
            thresholds = {
                "min_f1_macro": min_f1_macro,
                "min_melanoma_sensitivity": min_melanoma_sensitivity,
                "max_ece": max_ece,
            }
            gated = c.gate(evaluation=scored.outputs["evaluation"], **thresholds, **tracked)
            _configure(gated, "gate", s)
            registered = c.register(
                prepared=data, model=trained.outputs["model"],
                evaluation=scored.outputs["evaluation"], baseline=baseline.outputs["evaluation"],
                pipeline=kind, **thresholds, **tracked,
            ).after(gated)  # fmt: skip
            _configure(registered, "register", s)
            version = registered.outputs["Output"]  # the version; "card" is the model card
            promoted = c.promote(
                prepared=data, evaluation=scored.outputs["evaluation"],
                version=version, must_beat=retraining, pipeline=kind, **thresholds, **tracked,
            )  # fmt: skip
            _configure(promoted, "promote", s)
            with dsl.If(promoted.output == True, name="promoted"):  # noqa: E712 (a KFP condition)
                deployed = c.deploy(
                    version=version, target=deploy_target, namespace=namespace,
                    release=s.release, canary_percent=canary_percent, pipeline=kind, **tracked,
                )  # fmt: skip
                _configure(deployed, "deploy", s)

    description = (
        "Retrain on the data plus clinician feedback, judged on the champion's test split; "
        "promote only a model that beats the champion."
        if retraining
        else "Train, evaluate, gate, register and promote a HAM10000 classifier; deploy it."
    )
    pipeline_component: BaseComponent = dsl.pipeline(
        pipeline, name=f"dermaops-{kind}", description=description
    )
    return pipeline_component


def _configure(
    task: dsl.PipelineTask, stage: str, s: PipelineSettings, cached: bool | None = None
) -> None:
    """Display name, retries, caching and secrets of one stage's task."""
    task.set_display_name(stage)
    retries = RETRIES.get(stage, 0)
    if stage == "ingest":
        task.set_retry(retries, backoff_duration=s.ingest_backoff, backoff_factor=2,
                       backoff_max_duration="600s")  # fmt: skip
    elif stage == "train":  # resumes from its checkpoint volume (see PipelineSettings)
        task.set_retry(retries, backoff_duration=s.train_backoff)
    elif retries:
        task.set_retry(retries)
    task.set_caching_options(enable_caching=stage in CACHED if cached is None else cached)
    if stage in MLFLOW_TASKS or stage == "ingest":
        _mlflow_env(task, s, webhook=stage == "notify")
    if stage in ALIAS_TASKS:  # they take the chart's promotion Lease (locally: a file lock)
        kubernetes.use_config_map_as_env(
            task, s.config_map, {PROMOTION_LEASE_ENV: PROMOTION_LEASE_ENV}, optional=True
        )


def _mlflow_env(task: dsl.PipelineTask, s: PipelineSettings, webhook: bool) -> None:
    """MLflow and object-store credentials from Secrets: names in the YAML, never values."""
    secrets = {s.mlflow_secret: MLFLOW_KEYS, s.storage_secret: STORE_KEYS}
    if webhook:
        secrets[s.webhook_secret] = (WEBHOOK_ENV,)
    for name, keys in secrets.items():
        kubernetes.use_secret_as_env(task, name, {k: k for k in keys}, optional=True)


def _on_gpu_pool(task: dsl.PipelineTask, s: PipelineSettings) -> None:
    task.set_cpu_request(s.train_cpu).set_memory_request(s.train_memory)
    if not s.gpus:
        return
    task.set_accelerator_type(s.accelerator).set_accelerator_limit(s.gpus)
    kubernetes.add_node_selector(task, label_key=s.gpu_node_label, label_value=s.gpu_node_value)
    kubernetes.add_toleration(
        task, key=s.gpu_toleration_key, operator="Exists", effect=s.gpu_toleration_effect
    )


def compile_all(out: Path, settings: PipelineSettings | None = None) -> list[Path]:
    """Write ``training_pipeline.yaml`` and ``retraining_pipeline.yaml`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for kind in KINDS:
        path = out / f"{kind}_pipeline.yaml"
        compiler.Compiler().compile(build_pipeline(kind, settings), str(path))
        written.append(path)
    return written
