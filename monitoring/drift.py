"""An Evidently data-drift report between the training reference and recent traffic."""

from __future__ import annotations

import json
import logging
import warnings
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from dermaops.data.features import CONFIDENCE, PREDICTION, STAT_NAMES
from dermaops.errors import DermaOpsError
from dermaops.inference_log import read_records
from dermaops.model.artifact import REFERENCE, locate_model_dir
from dermaops.model.projection import PROJECTION_NAMES
from dermaops.model.uri import load_model
from dermaops.settings import Home

log = logging.getLogger(__name__)

MODEL_NUMERIC = (CONFIDENCE, *PROJECTION_NAMES)  # compared when the reference has them


class DriftError(DermaOpsError):
    """Drift cannot be computed from what was given."""


class DriftSettings(BaseModel):
    """How much traffic to look at and when to call it drift."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    window: int = Field(500, ge=10, description="most recent inference-log rows compared")
    min_rows: int = Field(30, ge=5, description="fewer rows than this: no verdict")
    drift_share: float = Field(
        0.3, gt=0, le=1, description="share of drifted columns that makes the set drifted"
    )
    p_value: float = Field(0.05, gt=0, lt=1, description="per-column test threshold")
    reference_split: str = Field(
        "val",
        description="the reference's split (train, val, test, all); val has the model's "
        "outputs on images it never trained on",
    )


@dataclass(frozen=True)
class DriftSummary:
    """The verdict and what it rests on."""

    drifted: bool
    drift_share: float
    drifted_columns: list[str]
    columns: dict[str, dict[str, Any]]  # every compared column: score, method, drifted
    reference_rows: int
    current_rows: int
    computed_at: str
    reference_version: str = ""  # the registered version the reference belongs to, if known
    note: str = ""  # what was left out of the comparison, and why

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Window:
    """The traffic a version's reference is compared with, and whether on the model's outputs."""

    rows: pd.DataFrame
    model_outputs: bool
    note: str = ""


def match_version(current: pd.DataFrame, reference_version: str, min_rows: int) -> Window:
    """The rows to compare with the reference of ``reference_version``.

    Image statistics do not depend on the model; its outputs (class, confidence, embedding) do,
    and another version's outputs against this reference would read as drift after every
    rollout. So: rows of the reference's version when there are enough of them, else every row
    on the image statistics alone. An unknown version ("") or unlabelled traffic compares all.
    """
    if not reference_version or "model_version" not in current.columns:
        return Window(current, True)
    versions = current["model_version"].astype(str)
    same = current[versions == reference_version]
    if len(same) == len(current):
        return Window(current, True)
    others = ", ".join(sorted(set(versions) - {reference_version}))
    if len(same) >= min_rows:
        note = (f"{len(current) - len(same)} rows from version {others} left out: the "
                f"reference is version {reference_version}")  # fmt: skip
        return Window(same, True, note)
    note = (f"traffic from version {others} against the reference of version "
            f"{reference_version}: image statistics only, not the model's outputs")  # fmt: skip
    return Window(current, False, note)


def read_reference(path: Path, split: str = "val") -> pd.DataFrame:
    """The reference statistics, one split or all of them.

    Args:
        path: a ``reference_stats.csv``, or a model folder holding one (a DermaOps model
            directory, an MLflow model, or what KServe's storage initializer fetched).
    """
    if path.is_dir():
        try:
            path = locate_model_dir(path) / REFERENCE
        except DermaOpsError as e:
            raise DriftError(f"no drift reference in {path}: {e}") from e
    try:
        frame = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise DriftError(f"cannot read the drift reference {path}: {e}") from e
    missing = [c for c in STAT_NAMES if c not in frame.columns]
    if missing:
        raise DriftError(f"{path} lacks {', '.join(missing)}: not a reference_stats.csv")
    if split != "all":
        frame = frame[frame["split"] == split]
    if frame.empty:
        raise DriftError(f"{path} has no rows of split {split!r}")
    return frame


def read_window(
    folder: Path, rows: int, lock: AbstractContextManager[Any] | None = None
) -> pd.DataFrame:
    """The last ``rows`` records of the traffic in the inference log; a rollout's shadow
    answers (the challenger's, of mirrored requests) are not traffic. ``lock``: see
    :func:`~dermaops.inference_log.read_records`."""
    traffic = [r for r in read_records(folder, lock) if not r.get("shadow")]
    frame = pd.DataFrame.from_records(traffic[-rows:])
    missing = [c for c in STAT_NAMES if c not in frame.columns]
    if traffic and missing:
        raise DriftError(f"the inference log in {folder} lacks {', '.join(missing)}")
    return frame


def compute_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame | Window,
    s: DriftSettings,
    out: Path,
    reference_version: str = "",
) -> DriftSummary:
    """Run the Evidently report; write ``drift_report.html`` and ``drift_summary.json``.

    ``current`` is the traffic, or a :class:`Window` of it that says whether the model's
    outputs may be compared (see :func:`match_version`).
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    window = current if isinstance(current, Window) else Window(current, True)
    current = window.rows
    if len(current) < s.min_rows:
        raise DriftError(
            f"{len(current)} rows of traffic; drift needs at least {s.min_rows} (min_rows)"
        )
    outputs = [c for c in (*MODEL_NUMERIC, PREDICTION) if _comparable(c, reference, current)]
    outputs = outputs if window.model_outputs else []
    numeric = [*STAT_NAMES, *(c for c in outputs if c != PREDICTION)]
    categorical = [PREDICTION] if PREDICTION in outputs else []
    columns = [*numeric, *categorical]
    log.info("comparing %d columns: %s", len(columns), ", ".join(columns))
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    datasets = [
        Dataset.from_pandas(frame[columns].reset_index(drop=True), data_definition=definition)
        for frame in (current, reference)
    ]
    preset = DataDriftPreset(drift_share=s.drift_share, threshold=s.p_value)
    with warnings.catch_warnings():
        # Constant columns (every image one size) make Evidently's correlations divide by a
        # zero deviation; the drift tests themselves are unaffected.
        warnings.simplefilter("ignore", RuntimeWarning)
        snapshot = Report([preset], include_tests=True).run(*datasets)
    out.mkdir(parents=True, exist_ok=True)
    snapshot.save_html(str(out / "drift_report.html"))
    summary = _summarise(json.loads(snapshot.json()), len(reference), len(current))
    summary = replace(summary, reference_version=reference_version, note=window.note)
    if window.note:
        log.warning("drift: %s", window.note)
    (out / "drift_summary.json").write_text(json.dumps(summary.as_dict(), indent=2) + "\n")
    return summary


def _comparable(column: str, reference: pd.DataFrame, current: pd.DataFrame) -> bool:
    """Both sides have the column, filled: a reference without the model's outputs (prepare's
    own, or its train split) or traffic from a model without a projection leaves it out."""
    return all(column in f.columns and f[column].notna().all() for f in (reference, current))


def _summarise(report: dict[str, Any], reference_rows: int, current_rows: int) -> DriftSummary:
    """Per-column verdicts from the tests (a p-value or a distance, Evidently decides which)."""
    scores = {}
    for metric in report["metrics"]:
        column = metric["config"].get("column")
        if column:
            scores[column] = {"score": float(metric["value"]), "method": metric["config"]["method"]}
    overall = False
    for test in report["tests"]:
        params = test["metric_config"]["params"]
        column = params.get("column")
        if column in scores:
            scores[column]["drifted"] = test["status"] != "SUCCESS"
        elif "drift_share" in params:
            overall = test["status"] != "SUCCESS"
    counted = next(m for m in report["metrics"] if "DriftedColumnsCount" in m["metric_name"])
    share = float(counted["value"]["share"])
    return DriftSummary(
        drifted=overall,
        drift_share=share,
        drifted_columns=sorted(c for c, v in scores.items() if v.get("drifted")),
        columns=scores,
        reference_rows=reference_rows,
        current_rows=current_rows,
        computed_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def drift_job(
    reference: Path,
    reference_version: str,
    current: pd.DataFrame,
    s: DriftSettings,
    out: Path,
) -> tuple[DriftSummary, Window]:
    """One drift run, as the CLI and the monitor run it: the reference's split, the traffic of
    its version (see :func:`match_version`), the Evidently report written to ``out``."""
    ref = read_reference(reference, s.reference_split)
    window = match_version(current, reference_version, s.min_rows)
    return compute_drift(ref, window, s, out, reference_version), window


def deployed_reference(home: Home) -> tuple[Path, str]:
    """The drift reference registered with the locally deployed model, and its version."""
    artifact, version = load_model("", home, when_missing="pass --reference")
    return artifact.reference_path, version
