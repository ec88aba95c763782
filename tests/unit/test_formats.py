"""Files that cross a boundary are read through one type; today's files still load."""

from __future__ import annotations

import io
import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from dermaops.data.feedback import COLUMNS as FEEDBACK_COLUMNS
from dermaops.data.feedback import FeedbackRow, read_feedback, record_feedback
from dermaops.errors import DatasetLayoutError
from dermaops.evaluation.result import METRICS, EvaluationMetrics, MetricsFileError
from dermaops.labels import CLASSES
from tests.formats import FORMATS

WRITTEN = ["metrics_evaluate.json", "metrics_baseline.json"]


@pytest.mark.parametrize("name", WRITTEN)
def test_metrics_written_by_earlier_versions_load_and_write_back_unchanged(
    name: str, tmp_path: Path
) -> None:
    metrics = EvaluationMetrics.read(FORMATS / name)
    assert list(metrics.per_class) == list(CLASSES) and metrics.split == "test"
    assert metrics.images == sum(row.support for row in metrics.per_class.values())
    assert metrics.generated and "GENERATED" in metrics.notice.upper()
    written = metrics.write(tmp_path)
    assert written == tmp_path / METRICS
    assert json.loads(written.read_text()) == json.loads((FORMATS / name).read_text())


def test_the_evaluation_keeps_its_sections_and_the_baseline_has_none() -> None:
    trained = EvaluationMetrics.read(FORMATS / "metrics_evaluate.json")
    assert trained.ood is not None and trained.subgroups is not None
    assert trained.precision is not None and trained.precision.serve in {"int8", "fp32"}
    baseline = EvaluationMetrics.read(FORMATS / "metrics_baseline.json")
    assert baseline.model.arch.startswith("random_forest")
    assert (baseline.ood, baseline.subgroups, baseline.precision) == (None, None, None)


def test_an_unmeasured_figure_stays_nan_through_a_file(tmp_path: Path) -> None:
    metrics = EvaluationMetrics.read(FORMATS / "metrics_baseline.json")
    melanoma = metrics.melanoma.model_copy(update={"test_sensitivity": float("nan")})
    metrics.model_copy(update={"melanoma": melanoma}).write(tmp_path)
    assert math.isnan(EvaluationMetrics.read(tmp_path).melanoma_sensitivity)


def _broken(tmp_path: Path, change: dict[str, object], drop: str = "") -> Path:
    loaded = json.loads((FORMATS / "metrics_baseline.json").read_text()) | change
    loaded.pop(drop, None)
    path = tmp_path / METRICS
    path.write_text(json.dumps(loaded))
    return path


@pytest.mark.parametrize(
    ("change", "drop", "says"),
    [
        ({}, "f1_macro", "f1_macro: Field required"),
        ({"f1_score": 0.5}, "", "f1_score: Extra inputs are not permitted"),
        ({"images": "many"}, "", "images: Input should be a valid integer"),
        ({"per_class": {}}, "", "per_class must hold akiec"),
        ({"confusion_matrix": [[1, 2], [3, 4]]}, "", "must be 7 x 7"),
        ({"split": "val"}, "", "split: Input should be 'test'"),
    ],
)
def test_a_damaged_metrics_file_is_refused_naming_the_file_and_the_field(
    tmp_path: Path, change: dict[str, object], drop: str, says: str
) -> None:
    path = _broken(tmp_path, change, drop)
    with pytest.raises(MetricsFileError) as caught:
        EvaluationMetrics.read(path)
    assert str(caught.value).startswith(f"{path}: not an evaluation's metrics") and says in str(
        caught.value
    )


def test_a_missing_or_unreadable_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(MetricsFileError, match="no such metrics file"):
        EvaluationMetrics.read(tmp_path)  # a folder without metrics.json
    (tmp_path / METRICS).write_text("{not json")
    with pytest.raises(MetricsFileError, match="cannot be read as JSON"):
        EvaluationMetrics.read(tmp_path)
    (tmp_path / METRICS).write_text("[]")
    with pytest.raises(MetricsFileError, match="not an evaluation's metrics"):
        EvaluationMetrics.read(tmp_path)


def test_a_feedback_store_written_by_an_earlier_version_loads(tmp_path: Path) -> None:
    rows = read_feedback(FORMATS / "feedback")
    assert list(rows.columns) == list(FEEDBACK_COLUMNS)
    answered, bare = (FeedbackRow.model_validate(r.dropna().to_dict()) for _, r in rows.iterrows())
    assert (answered.dx, answered.predicted_dx, answered.melanoma_flag) == ("mel", "nv", "false")
    assert (answered.age, answered.sex, answered.localization) == ("55", "female", "back")
    assert (bare.dx, bare.melanoma_flag, bare.age) == ("bkl", "true", "")
    shutil.copytree(FORMATS / "feedback", tmp_path / "store")
    record_feedback(tmp_path / "store", jpeg(), "df", "Dr C", "4", "df", melanoma_flag=False)
    assert len(read_feedback(tmp_path / "store")) == 3, "a new row appended to the old file"


@pytest.mark.parametrize(
    ("column", "value", "said"),
    [
        ("melanoma_flag", "yes", "line 2: melanoma_flag 'yes' String should match pattern"),
        ("predicted_dx", "melanoma", "line 2: predicted_dx 'melanoma' is not one of akiec"),
        ("created_at", "last week", "line 2: created_at 'last week' Invalid isoformat"),
        ("dx", "psoriasis", "line 2: dx 'psoriasis' is not one of"),
    ],
)
def test_a_damaged_feedback_row_is_refused_by_line_and_field(
    column: str, value: str, said: str, tmp_path: Path
) -> None:
    shutil.copytree(FORMATS / "feedback", tmp_path / "store")
    path = tmp_path / "store" / "feedback.csv"
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame.loc[0, column] = value
    frame.to_csv(path, index=False)
    with pytest.raises(DatasetLayoutError) as caught:
        read_feedback(tmp_path / "store")
    assert str(path) in str(caught.value) and said in str(caught.value)


def test_a_feedback_store_with_an_unknown_column_is_refused(tmp_path: Path) -> None:
    shutil.copytree(FORMATS / "feedback", tmp_path / "store")
    path = tmp_path / "store" / "feedback.csv"
    frame = pd.read_csv(path, dtype=str, keep_default_na=False).assign(diagnosis="mel")
    frame.to_csv(path, index=False)
    with pytest.raises(DatasetLayoutError, match=r"feedback.csv has unknown column\(s\) diagnosis"):
        read_feedback(tmp_path / "store")


def test_the_model_answer_beside_a_diagnosis_must_be_a_class(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="predicted_dx"):
        record_feedback(tmp_path, jpeg(), "mel", "Dr A", "3", "melanoma")
    assert not (tmp_path / "feedback.csv").exists(), "nothing written"


def jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (150, 70, 60)).save(buffer, "JPEG")
    return buffer.getvalue()
