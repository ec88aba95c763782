"""The quality gate: may a model be promoted? Pass or fail, always with the reasons."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from dermaops.errors import DermaOpsError

if TYPE_CHECKING:
    from dermaops.evaluation.result import EvaluationMetrics


class GateFailedError(DermaOpsError):
    """The model missed the quality gate; the message lists every reason."""

    def __init__(self, reasons: list[str]):
        super().__init__("quality gate failed: " + "; ".join(reasons))
        self.reasons = reasons


class GateThresholds(BaseModel):
    """The least a model must reach on the test split."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_f1_macro: float = Field(0.6, ge=0, le=1)
    min_melanoma_sensitivity: float = Field(0.8, ge=0, le=1)
    max_ece: float = Field(0.15, ge=0, le=1)


@dataclass(frozen=True)
class GateResult:
    passed: bool
    reasons: list[str] = field(default_factory=list)


def check(metrics: EvaluationMetrics, thresholds: GateThresholds) -> GateResult:
    """Compare ``metrics`` (from ``evaluate``) with ``thresholds``; every miss is a reason.

    A figure that could not be measured (NaN: no melanoma in the split, say) fails the gate: an
    unmeasured model is not promoted.
    """
    checks = [
        ("macro-F1", metrics.f1_macro, ">=", thresholds.min_f1_macro),
        ("melanoma sensitivity", metrics.melanoma.test_sensitivity, ">=",
         thresholds.min_melanoma_sensitivity),
        ("calibration error (ECE)", metrics.ece, "<=", thresholds.max_ece),
    ]  # fmt: skip
    reasons = []
    for name, value, op, limit in checks:
        if math.isnan(value):
            reasons.append(f"{name} could not be measured")
        elif (op == ">=" and value < limit) or (op == "<=" and value > limit):
            reasons.append(f"{name} {value:.4f} is not {op} {limit:.4f}")
    return GateResult(passed=not reasons, reasons=reasons)


def compare(
    challenger: EvaluationMetrics,
    champion: EvaluationMetrics,
    must_beat: bool,
    tolerance: float = 0.0,
) -> GateResult:
    """May ``challenger`` replace ``champion``? Both are metrics of the same test split.

    Macro-F1 must be higher (``must_beat``) or at least as high, and melanoma sensitivity may
    not fall by more than ``tolerance``: a better average never pays for missed melanomas.
    """
    reasons = []
    new_f1, old_f1 = challenger.f1_macro, champion.f1_macro
    if math.isnan(new_f1) or math.isnan(old_f1):
        reasons.append("macro-F1 of the challenger or the champion could not be measured")
    elif (new_f1 <= old_f1) if must_beat else (new_f1 < old_f1):
        word = "does not beat" if must_beat else "is below"
        reasons.append(f"macro-F1 {new_f1:.4f} {word} the champion's {old_f1:.4f}")
    new_mel, old_mel = challenger.melanoma_sensitivity, champion.melanoma_sensitivity
    if new_mel < old_mel - tolerance:  # False when either is NaN: nothing to compare
        reasons.append(f"melanoma sensitivity {new_mel:.4f} is below the champion's {old_mel:.4f}")
    return GateResult(passed=not reasons, reasons=reasons)
