"""The quality gate: may a model be promoted? Pass or fail, always with the reasons."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


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


def check(metrics: dict[str, Any], thresholds: GateThresholds) -> GateResult:
    """Compare ``metrics`` (from ``evaluate``) with ``thresholds``; every miss is a reason.

    A metrics file without a needed key fails the gate: an unmeasured model is not promoted.
    """
    checks = [
        ("macro-F1", _get(metrics, "f1_macro"), ">=", thresholds.min_f1_macro),
        ("melanoma sensitivity", _get(metrics, "melanoma", "test_sensitivity"), ">=",
         thresholds.min_melanoma_sensitivity),
        ("calibration error (ECE)", _get(metrics, "ece"), "<=", thresholds.max_ece),
    ]  # fmt: skip
    reasons = []
    for name, value, op, limit in checks:
        if value is None:
            reasons.append(f"{name} is missing from the metrics")
        elif (op == ">=" and value < limit) or (op == "<=" and value > limit):
            reasons.append(f"{name} {value:.4f} is not {op} {limit:.4f}")
    return GateResult(passed=not reasons, reasons=reasons)


def _get(metrics: dict[str, Any], *keys: str) -> float | None:
    value: Any = metrics
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    if not isinstance(value, int | float) or math.isnan(value):
        return None  # NaN means it could not be measured (e.g. no melanoma in the split)
    return float(value)
