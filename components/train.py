"""Stage ``train``: the CNN, on the GPU node pool when the pipeline runs on a cluster."""

from kfp.dsl import Dataset, Input, Model, Output


def train(
    prepared: Input[Dataset],
    model: Output[Model],
    arch: str = "resnet50",
    weights: str = "imagenet",
    epochs: int = 15,
    image_size: int = 224,
    batch_size: int = 64,
    # KFP reads the default and the bare type from the signature ("Dict" in the IR)
    settings: dict = {},  # type: ignore[type-arg]  # noqa: B006
    checkpoints: str = "",
    kfp_run_id: str = "",
    model_name: str = "dermaops",
    trainjob: dict = {},  # type: ignore[type-arg]  # noqa: B006
    namespace: str = "",
    timeout_s: int = 172800,
) -> None:
    """Train into ``model`` (a run folder: ``model/`` directory, curves, history).

    ``settings`` takes any other ``TrainSettings`` field, e.g. ``{"lr": 0.0005}``.
    ``checkpoints``: a durable folder (the checkpoint volume the pipeline mounts) where the
    checkpoint is kept under this run and task, so that a retry in a new pod, with an empty
    ``model`` folder, resumes; empty keeps it in ``model`` (a retry resumes only if it reuses
    the folder, as the local runner does).
    ``trainjob`` (``TrainJobSettings``: nodes, GPUs per node, image, runtime, requests): train
    on a Kubeflow Trainer TrainJob of that shape in ``namespace`` (default this pod's), through
    the ``checkpoints`` volume, within ``timeout_s``; this task only creates and follows it.
    """
    from pathlib import Path

    from dermaops.components.runtime import stage

    with stage("train", kfp_run_id, model_name):
        from dermaops.train.layout import CHECKPOINT
        from dermaops.train.loop import task_checkpoints
        from dermaops.train.loop import train as run
        from dermaops.train.settings import TrainSettings

        chosen = TrainSettings(
            **{**settings, "model": arch, "weights": weights, "epochs": epochs,
               "image_size": image_size, "batch_size": batch_size}
        )  # fmt: skip
        if trainjob:
            from dermaops.pipelines.trainjobs import on_nodes
            from dermaops.train.trainjob import TrainJobSettings

            trained = on_nodes(Path(prepared.path), Path(model.path), kfp_run_id,
                               Path(checkpoints), chosen, TrainJobSettings(**trainjob),
                               namespace, timeout_s)  # fmt: skip
        else:
            kept = task_checkpoints(Path(checkpoints), kfp_run_id) if checkpoints else None
            # A retried task finds its own checkpoint and goes on from the last finished epoch.
            resume = ((kept or Path(model.path)) / CHECKPOINT).is_file()
            result = run(Path(prepared.path), Path(model.path), chosen, resume, kept)
            trained = {"best_epoch": result.best_epoch, "best_val_f1_macro": result.best_val_f1}
    model.metadata.update(
        {
            "arch": arch,
            **trained,
            "settings": chosen.model_dump(mode="json"),
            "nodes": trainjob.get("nodes", 1),
        }
    )
