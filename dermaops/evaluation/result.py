"""``metrics.json``: what ``evaluate`` and ``baseline`` measured on the test split, as one type.

Written only by :meth:`EvaluationMetrics.write` and read only by :meth:`EvaluationMetrics.read`
(the gate, promotion, registration, the model card, the CLI). A missing or unknown field, or a
value of the wrong kind, is a :class:`MetricsFileError` naming the file. A figure that could not
be measured (melanoma sensitivity on a split without melanomas) is NaN, as ``json`` writes it.

The sections owned by other modules keep their own shape: ``ood``
(:func:`dermaops.evaluation.ood.fit_and_measure`), ``subgroups``
(:func:`dermaops.evaluation.subgroups.evaluate_subgroups`) and ``precision``
(:class:`dermaops.model.quantize.PrecisionDecision`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from dermaops.errors import DermaOpsError
from dermaops.labels import CLASSES
from dermaops.model.quantize import PrecisionDecision

METRICS = "metrics.json"


class MetricsFileError(DermaOpsError):
    """A metrics.json that is missing, is not JSON, or does not hold the evaluation's fields."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


class ClassFigures(_Strict):
    """One class's test figures, one-vs-rest at the top-1 prediction."""

    precision: float
    recall: float
    f1: float
    support: int = Field(ge=0)


class MelanomaFigures(_Strict):
    """The melanoma operating point chosen on validation, and what it did on test."""

    threshold: float = Field(description="Flag melanoma when calibrated P(mel) >= threshold.")
    target_sensitivity: float
    val_sensitivity: float
    val_specificity: float
    test_sensitivity: float
    test_specificity: float
    test_support: int = Field(ge=0, description="Melanomas in the test split.")


class ModelDescription(_Strict):
    """Which model was measured."""

    arch: str
    image_size: int | None = None
    best_epoch: int | None = None
    weights_sha256: str | None = Field(
        default=None, description="sha256 of the weights measured (absent in older files)."
    )


class EvaluationMetrics(_Strict):
    """One model's figures on one test split (``metrics.json``)."""

    accuracy: float
    balanced_accuracy: float
    f1_macro: float
    f1_weighted: float
    auc_macro_ovr: float | None = Field(description="None when fewer than two classes occur.")
    ece: float = Field(description="Expected calibration error after temperature scaling.")
    per_class: dict[str, ClassFigures]
    melanoma: MelanomaFigures
    temperature: float = Field(gt=0)
    class_bias: dict[str, float] | None = Field(
        None,
        description="Per-class bias on the temperature-scaled log-probabilities, fitted on "
        "validation; what the label-free estimates read (None: evaluated before it was fitted).",
    )
    ece_uncalibrated: float
    confusion_matrix: list[list[int]] = Field(description="Rows: true class; columns: predicted.")
    split: Literal["test"]
    images: int = Field(ge=0)
    model: ModelDescription
    generated: bool = Field(description="Measured on generated images: not a clinical result.")
    notice: str
    ood: dict[str, Any] | None = None
    subgroups: dict[str, Any] | None = None
    precision: PrecisionDecision | None = None

    @field_validator("per_class")
    @classmethod
    def _every_class(cls, value: dict[str, ClassFigures]) -> dict[str, ClassFigures]:
        if list(value) != list(CLASSES):
            raise ValueError(f"per_class must hold {', '.join(CLASSES)} in that order")
        return value

    @field_validator("confusion_matrix")
    @classmethod
    def _square(cls, value: list[list[int]]) -> list[list[int]]:
        if len(value) != len(CLASSES) or any(len(row) != len(CLASSES) for row in value):
            raise ValueError(f"the confusion matrix must be {len(CLASSES)} x {len(CLASSES)}")
        return value

    @classmethod
    def read(cls, path: Path) -> EvaluationMetrics:
        """The metrics in ``path``: a metrics.json, or the evaluation folder holding one."""
        path = path / METRICS if path.is_dir() else path
        try:
            loaded = json.loads(path.read_text())
        except FileNotFoundError as e:
            raise MetricsFileError(f"{path}: no such metrics file (run `dermaops evaluate`)") from e
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise MetricsFileError(f"{path}: cannot be read as JSON: {e}") from e
        return cls.parse(loaded, str(path))

    @classmethod
    def parse(cls, loaded: object, source: str) -> EvaluationMetrics:
        """Validate ``loaded`` (a metrics.json's object); errors name ``source``."""
        try:
            return cls.model_validate(loaded)
        except ValidationError as e:
            problems = "; ".join(
                f"{'.'.join(map(str, err['loc'])) or 'the file'}: {err['msg']}"
                for err in e.errors()
            )
            raise MetricsFileError(f"{source}: not an evaluation's metrics: {problems}") from e

    def write(self, folder: Path) -> Path:
        """Write ``folder/metrics.json`` and return its path: NaN as ``json`` writes it, and the
        sections never set (a baseline has no ``ood``) left out, as earlier versions did."""
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / METRICS
        path.write_text(json.dumps(self.model_dump(exclude_unset=True), indent=2) + "\n")
        return path

    @property
    def melanoma_sensitivity(self) -> float:
        """Test melanoma sensitivity at the operating point (NaN: no melanoma in the split)."""
        return self.melanoma.test_sensitivity


def measured(value: float | None) -> float | None:
    """``value``, or None when it could not be measured (None or NaN)."""
    if value is None or math.isnan(value):
        return None
    return value
