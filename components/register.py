"""Stage ``register``: log the run to MLflow and register the model as ``challenger``."""

from kfp.dsl import Artifact, Dataset, Input, Model


def register(
    prepared: Input[Dataset],
    model: Input[Model],
    evaluation: Input[Artifact],
    baseline: Input[Artifact],
    pipeline: str = "training",
    kfp_run_id: str = "",
    model_name: str = "dermaops",
) -> str:
    """Log params, metrics and reports; log the model with calibration and drift reference.

    Returns:
        The new model version.
    """
    from pathlib import Path

    from dermaops.components.runtime import stage

    with stage("register", kfp_run_id, model_name):
        from dermaops.registry import Registry, RegistrySettings
        from dermaops.registry.model import log_training_run

        reg = Registry(RegistrySettings(model_name=model_name))
        run = reg.pipeline_run(kfp_run_id, pipeline)
        version = log_training_run(
            reg, run.info.run_id, Path(prepared.path), Path(model.path),
            Path(evaluation.path), Path(baseline.path),
        )  # fmt: skip
    return version
