"""Stage ``evaluate``: test-split metrics, with the KFP UI's confusion matrix and ROC."""

from kfp.dsl import (
    HTML,
    Artifact,
    ClassificationMetrics,
    Dataset,
    Input,
    Markdown,
    Metrics,
    Model,
    Output,
)


def evaluate(
    prepared: Input[Dataset],
    model: Input[Model],
    evaluation: Output[Artifact],
    metrics: Output[Metrics],
    classification: Output[ClassificationMetrics],
    report_html: Output[HTML],
    report_md: Output[Markdown],
    target_sensitivity: float = 0.85,
    kfp_run_id: str = "",
    model_name: str = "dermaops",
) -> None:
    """Evaluate ``model`` on ``prepared``'s test split; melanoma-vs-rest ROC for the UI."""
    import shutil
    from pathlib import Path

    from dermaops.components.runtime import stage

    with stage("evaluate", kfp_run_id, model_name):
        from dermaops.evaluation.report import write_html
        from dermaops.evaluation.run import evaluate as run
        from dermaops.evaluation.run import melanoma_roc
        from dermaops.labels import CLASSES

        out = Path(evaluation.path)
        scores = run(Path(prepared.path), Path(model.path) / "model", out, target_sensitivity)
        write_html(out / "report.md", Path(report_html.path))
        shutil.copyfile(out / "report.md", report_md.path)
        roc = melanoma_roc(out)
    for key in ("accuracy", "balanced_accuracy", "f1_macro", "f1_weighted", "ece"):
        metrics.log_metric(key, getattr(scores, key))
    metrics.log_metric("melanoma_sensitivity", scores.melanoma.test_sensitivity)
    metrics.log_metric("melanoma_specificity", scores.melanoma.test_specificity)
    metrics.log_metric("melanoma_threshold", scores.melanoma.threshold)
    classification.log_confusion_matrix(list(CLASSES), scores.confusion_matrix)
    classification.log_roc_curve(roc.fpr, roc.tpr, roc.thresholds)
    evaluation.metadata.update({"f1_macro": scores.f1_macro, "generated": scores.generated})
