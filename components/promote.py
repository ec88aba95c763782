"""Stage ``promote``: challenger becomes champion only through the gate and the comparison."""

from kfp.dsl import Artifact, Dataset, Input


def promote(
    prepared: Input[Dataset],
    evaluation: Input[Artifact],
    version: str,
    must_beat: bool = False,
    min_f1_macro: float = 0.6,
    min_melanoma_sensitivity: float = 0.8,
    max_ece: float = 0.15,
    pipeline: str = "training",
    kfp_run_id: str = "",
    model_name: str = "dermaops",
) -> bool:
    """Gate ``version``, re-evaluate the champion on this test split, move the aliases.

    Returns:
        True when ``version`` is now the champion.
    """
    from pathlib import Path

    from dermaops.components.runtime import stage

    with stage("promote", kfp_run_id, model_name, pipeline):
        from dermaops.evaluation.gate import GateThresholds
        from dermaops.evaluation.result import EvaluationMetrics
        from dermaops.notify import RunFacts
        from dermaops.registry import Registry, RegistrySettings
        from dermaops.registry.promotion import promote_challenger

        reg = Registry(RegistrySettings(model_name=model_name))
        metrics = EvaluationMetrics.read(Path(evaluation.path))
        thresholds = GateThresholds(
            min_f1_macro=min_f1_macro,
            min_melanoma_sensitivity=min_melanoma_sensitivity,
            max_ece=max_ece,
        )
        result = promote_challenger(
            reg, version, metrics, Path(prepared.path), thresholds, must_beat
        )
        reg.tag_pipeline_run(kfp_run_id, RunFacts(promoted=result.promoted))
    return result.promoted
