"""Stage ``register``: log the run to MLflow and register the model as ``challenger``."""

from kfp.dsl import Artifact, Dataset, Input, Markdown, Model, Output


def register(
    prepared: Input[Dataset],
    model: Input[Model],
    evaluation: Input[Artifact],
    baseline: Input[Artifact],
    card: Output[Markdown],
    pipeline: str = "training",
    min_f1_macro: float = 0.6,
    min_melanoma_sensitivity: float = 0.8,
    max_ece: float = 0.15,
    kfp_run_id: str = "",
    model_name: str = "dermaops",
) -> str:
    """Log params, metrics and reports; log the model with calibration, drift reference and
    the gate it passed (hand promotion and rollback judge it by the same); write the
    version's model card (logged to MLflow, and ``card`` for the KFP UI).

    Returns:
        The new model version.
    """
    import shutil
    import tempfile
    from pathlib import Path

    from dermaops.components.runtime import stage

    with stage("register", kfp_run_id, model_name, pipeline):
        from dermaops.evaluation.gate import GateThresholds
        from dermaops.registry import Registry, RegistrySettings
        from dermaops.registry.model import log_training_run

        reg = Registry(RegistrySettings(model_name=model_name))
        thresholds = GateThresholds(
            min_f1_macro=min_f1_macro,
            min_melanoma_sensitivity=min_melanoma_sensitivity,
            max_ece=max_ece,
        )
        run = reg.pipeline_run(kfp_run_id, pipeline)
        with tempfile.TemporaryDirectory() as cards:
            version = log_training_run(
                reg, run.info.run_id, Path(prepared.path), Path(model.path),
                Path(evaluation.path), Path(baseline.path), card_out=Path(cards),
                thresholds=thresholds,
            )  # fmt: skip
            shutil.copyfile(Path(cards) / "model_card.md", card.path)
    return version
