"""Stage ``gate``: stop the pipeline before registration when the model is not good enough.

It runs once: the pipeline gives it no retry, so a failing model is never trained again.
"""

from kfp.dsl import Artifact, Input


def gate(
    evaluation: Input[Artifact],
    min_f1_macro: float = 0.6,
    min_melanoma_sensitivity: float = 0.8,
    max_ece: float = 0.15,
    kfp_run_id: str = "",
    model_name: str = "dermaops",
) -> None:
    """Raise ``GateFailedError`` with every reason when the test metrics miss a threshold."""
    from pathlib import Path

    from dermaops.components.runtime import stage

    with stage("gate", kfp_run_id, model_name):
        from dermaops.evaluation.gate import GateFailedError, GateThresholds, check
        from dermaops.evaluation.result import EvaluationMetrics

        thresholds = GateThresholds(
            min_f1_macro=min_f1_macro,
            min_melanoma_sensitivity=min_melanoma_sensitivity,
            max_ece=max_ece,
        )
        metrics = EvaluationMetrics.read(Path(evaluation.path))
        result = check(metrics, thresholds)
        if not result.passed:
            raise GateFailedError(result.reasons)
