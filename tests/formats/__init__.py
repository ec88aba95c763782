"""Files as earlier versions of DermaOps wrote them: every reader must still load them.

Each file here was written by the code of its day (``metrics_evaluate.json`` by ``dermaops
evaluate``, ``metrics_baseline.json`` by ``dermaops baseline``, on the generated set;
``feedback/`` by ``record_feedback``, as the clinician page calls it, before the row had a type);
never edit one by hand. A format that changes gets a new file beside the old ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dermaops.evaluation.result import EvaluationMetrics

FORMATS = Path(__file__).parent


def metrics(melanoma_sensitivity: float | None = None, **figures: Any) -> EvaluationMetrics:
    """A real evaluation's metrics with some figures replaced."""
    base = EvaluationMetrics.read(FORMATS / "metrics_evaluate.json")
    if melanoma_sensitivity is not None:
        figures["melanoma"] = base.melanoma.model_copy(
            update={"test_sensitivity": melanoma_sensitivity}
        )
    return base.model_copy(update=figures)
