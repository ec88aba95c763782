"""The served versions scored on the clinicians' feedback store, for the monitor: the live
gauges, and Evidently's classification report of each version's window."""

from __future__ import annotations

import logging
import math
import os
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from dermaops.errors import DermaOpsError
from dermaops.evaluation.live import score_windows, windows

if TYPE_CHECKING:
    from dermaops.monitoring.service import MonitorSettings, MonitorState

log = logging.getLogger(__name__)


def score_feedback(state: MonitorState) -> dict[str, dict[str, Any]]:
    """Score the served versions on the feedback store; the live gauges and the reports follow
    (one pass at a time)."""
    with state.scoring:
        return _score_feedback(state)


def _score_feedback(state: MonitorState) -> dict[str, dict[str, Any]]:
    from dermaops.data.feedback import read_feedback

    folder = Path(state.settings.feedback_dir)
    feedback = read_feedback(folder) if (folder / "feedback.csv").is_file() else pd.DataFrame()
    latest = windows(feedback, state.settings.live)
    found = score_windows(latest, state.settings.live)
    for version, rows in latest.items():
        path = performance_path(state.settings, version)
        seen = _fingerprint(rows)
        if state.reported.get(version) == seen and path.is_file():
            continue  # the same cases as the report on disk: no new Evidently run
        try:
            performance_report(rows, path)
        except DermaOpsError as e:
            path.unlink(missing_ok=True)
            state.unreported[version] = str(e)
        else:
            state.unreported.pop(version, None)
        state.reported[version] = seen
    for version, scored in found.items():
        state.metrics.feedback_cases.labels(version).set(scored["cases"])
        state.metrics.feedback_melanomas.labels(version).set(scored["melanomas"])
        state.metrics.live_sensitivity.labels(version).set(scored["melanoma_sensitivity"])
        low = scored["ci95"].get("melanoma_sensitivity", [None])[0]
        state.metrics.live_sensitivity_lower.labels(version).set(math.nan if low is None else low)
        state.metrics.live_f1.labels(version).set(scored["f1_macro"])
        registered = _registered_sensitivity(state, version)
        if registered is not None:
            state.metrics.registered_sensitivity.labels(version).set(registered)
    for row in feedback.itertuples(index=False) if not feedback.empty else ():
        dx, predicted = getattr(row, "dx", ""), getattr(row, "predicted_dx", "")
        if predicted and dx != predicted and row.feedback_id not in state.disagreed:
            state.disagreed.add(str(row.feedback_id))
            state.metrics.disagreements.labels(dx, predicted).inc()
    state.performance = found
    return found


def performance_report(rows: pd.DataFrame, path: Path) -> None:
    """Evidently's classification report of labelled cases: the clinician's diagnosis as the
    target, the model's top class as the prediction (melanoma against the other class where
    only two classes occur: Evidently reads two labels as a binary task).

    Raises:
        DermaOpsError: a single class among the cases, which no classification report scores.
    """
    from evidently import (
        BinaryClassification,
        DataDefinition,
        Dataset,
        MulticlassClassification,
        Report,
    )
    from evidently.presets import ClassificationPreset

    frame = rows[["dx", "predicted_dx"]].reset_index(drop=True)
    classes = sorted(set(frame["dx"]) | set(frame["predicted_dx"]))
    if len(classes) < 2:
        raise DermaOpsError(f"every labelled case and answer is {classes[0]}: nothing to compare")
    task: BinaryClassification | MulticlassClassification = (
        MulticlassClassification(target="dx", prediction_labels="predicted_dx")
        if len(classes) > 2
        else BinaryClassification(target="dx", prediction_labels="predicted_dx",
                                  pos_label="mel" if "mel" in classes else classes[0])
    )  # fmt: skip
    definition = DataDefinition(classification=[task], categorical_columns=["dx", "predicted_dx"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a class never predicted: 0/0 precision
        warnings.simplefilter("ignore", UserWarning)  # scikit-learn's, likewise
        snapshot = Report([ClassificationPreset()]).run(
            Dataset.from_pandas(frame, data_definition=definition), None
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.partial")
    snapshot.save_html(str(staged))
    staged.replace(path)


def _fingerprint(rows: pd.DataFrame) -> int:
    """What a version's report depends on: its cases' diagnoses and answers, in order."""
    columns = [c for c in ("created_at", "dx", "predicted_dx", "flagged") if c in rows]
    return hash(pd.util.hash_pandas_object(rows[columns], index=False).to_numpy().tobytes())


def performance_path(settings: MonitorSettings, version: str) -> Path:
    return Path(settings.out) / f"performance_report-v{version}.html"


def _registered_sensitivity(state: MonitorState, version: str) -> float | None:
    """The melanoma sensitivity ``version`` was registered with, from the registry's tags
    (read once per version: a registered figure does not change)."""
    if version in state.registered:
        return state.registered[version]
    if not state.settings.registry_model:
        return None
    from dermaops.registry import Registry, RegistrySettings
    from dermaops.registry.promotion import model_version

    try:
        reg = Registry(RegistrySettings(model_name=state.settings.registry_model))
        tag = model_version(reg, version).tags.get("dermaops.melanoma_sensitivity")
    except DermaOpsError as e:
        log.warning("registered sensitivity of version %s: %s", version, e)
        return None  # asked again next pass
    state.registered[version] = float(tag) if tag else None
    return state.registered[version]
