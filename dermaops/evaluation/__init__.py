"""Evaluation: metrics, calibration, per-group gaps, the report, the model card, the quality gate.

Temperature and the melanoma threshold are fitted on validation, and everything is measured on the
test split, the same way for every model (the baseline, a trained network, a registered version).
"""

from typing import TYPE_CHECKING

from dermaops._lazy import attach

if TYPE_CHECKING:
    from dermaops.evaluation.calibration import apply_temperature as apply_temperature
    from dermaops.evaluation.calibration import choose_threshold as choose_threshold
    from dermaops.evaluation.calibration import fit_temperature as fit_temperature
    from dermaops.evaluation.card import Lineage as Lineage
    from dermaops.evaluation.card import write_card as write_card
    from dermaops.evaluation.gate import GateFailedError as GateFailedError
    from dermaops.evaluation.gate import GateResult as GateResult
    from dermaops.evaluation.gate import GateThresholds as GateThresholds
    from dermaops.evaluation.metrics import summary as summary
    from dermaops.evaluation.run import evaluate as evaluate
    from dermaops.evaluation.subgroups import SubgroupSettings as SubgroupSettings
    from dermaops.evaluation.subgroups import evaluate_subgroups as evaluate_subgroups

__getattr__, __dir__, __all__ = attach(__name__, __file__)
