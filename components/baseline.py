"""Stage ``baseline``: the Random Forest on handcrafted features, scored like every model."""

from kfp.dsl import Artifact, Dataset, Input, Metrics, Output


def baseline(
    prepared: Input[Dataset],
    evaluation: Output[Artifact],
    metrics: Output[Metrics],
    trees: int = 300,
    seed: int = 0,
) -> None:
    """Fit on train, calibrate on val, score test; ``evaluation`` holds model and report."""
    from pathlib import Path

    from dermaops.components.runtime import stage

    with stage("baseline"):
        from dermaops.train.baseline import run_baseline

        scores = run_baseline(Path(prepared.path), Path(evaluation.path), trees=trees, seed=seed)
    metrics.log_metric("f1_macro", scores.f1_macro)
    metrics.log_metric("accuracy", scores.accuracy)
    metrics.log_metric("melanoma_sensitivity", scores.melanoma_sensitivity)
