"""The served versions scored on the clinicians' feedback store, for the monitor: the live
gauges, and Evidently's classification report of each version's window.

GET /performance  each version's figures on its latest labelled window (``feedback_dir``)
"""

from __future__ import annotations

import logging
import math
import os
import threading
import warnings
from pathlib import Path
from typing import Any

import pandas as pd
from fastapi import APIRouter, HTTPException

from dermaops.errors import DermaOpsError
from dermaops.evaluation.live import score_windows, windows
from dermaops.monitoring.metrics import MonitorMetrics
from dermaops.monitoring.settings import MonitorSettings

log = logging.getLogger(__name__)


class NoFeedbackStoreError(LookupError):
    """The monitor was started without a feedback store (``--feedback-dir``)."""


class NoReportError(LookupError):
    """No classification report of that version (no store, no labelled case, or no report
    possible yet); ``status`` is the HTTP status that says so."""

    def __init__(self, message: str, status: int = 404) -> None:
        super().__init__(message)
        self.status = status


class FeedbackScores:
    """The served versions scored on the clinicians' feedback store: the live gauges, and the
    classification report of each version's window. ``lock`` lets one pass at a time; the
    reports are only rewritten when a version's labelled cases changed."""

    def __init__(self, settings: MonitorSettings, metrics: MonitorMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.folder = Path(settings.feedback_dir) if settings.feedback_dir else None
        self.lock = threading.Lock()
        self.scored: dict[str, dict[str, Any]] = {}  # the last pass, per version
        self._unreported: dict[str, str] = {}  # version -> why it has no report
        self._reported: dict[str, int] = {}  # version -> the cases its report is of
        self._registered: dict[str, float | None] = {}  # version -> registered sensitivity
        self._disagreed: set[str] = set()  # feedback ids counted in disagreements

    def score(self) -> dict[str, dict[str, Any]]:
        """Score the served versions on the store; the gauges and the reports follow.

        Raises:
            NoFeedbackStoreError: no feedback store configured.
            DermaOpsError: the store has rows it cannot read (the message says which).
        """
        if self.folder is None:
            raise NoFeedbackStoreError("no feedback store (monitor serve --feedback-dir)")
        with self.lock:
            return self._score(self.folder)

    def _score(self, folder: Path) -> dict[str, dict[str, Any]]:
        from dermaops.data.feedback import read_feedback

        feedback = read_feedback(folder) if (folder / "feedback.csv").is_file() else pd.DataFrame()
        live = self.settings.live
        latest = windows(feedback, live)
        found = score_windows(latest, live)
        for version, rows in latest.items():
            self._report(version, rows)
        for version, scored in found.items():
            self._export(version, scored)
        m = self.metrics
        for row in feedback.itertuples(index=False) if not feedback.empty else ():
            dx, predicted = getattr(row, "dx", ""), getattr(row, "predicted_dx", "")
            answered = isinstance(predicted, str) and predicted  # an empty cell reads as NaN
            if answered and dx != predicted and row.feedback_id not in self._disagreed:
                self._disagreed.add(str(row.feedback_id))
                m.disagreements.labels(dx, predicted).inc()
        self.scored = found
        return found

    def _report(self, version: str, rows: pd.DataFrame) -> None:
        path = performance_path(self.settings, version)
        seen = _fingerprint(rows)
        if self._reported.get(version) == seen and path.is_file():
            return  # the same cases as the report on disk: no new Evidently run
        try:
            performance_report(rows, path)
        except DermaOpsError as e:
            path.unlink(missing_ok=True)
            self._unreported[version] = str(e)
        else:
            self._unreported.pop(version, None)
        self._reported[version] = seen

    def _export(self, version: str, scored: dict[str, Any]) -> None:
        m = self.metrics
        m.feedback_cases.labels(version).set(scored["cases"])
        m.feedback_melanomas.labels(version).set(scored["melanomas"])
        m.live_sensitivity.labels(version).set(scored["melanoma_sensitivity"])
        low = scored["ci95"].get("melanoma_sensitivity", [None])[0]
        m.live_sensitivity_lower.labels(version).set(math.nan if low is None else low)
        m.live_f1.labels(version).set(scored["f1_macro"])
        registered = self._registered_sensitivity(version)
        if registered is not None:
            m.registered_sensitivity.labels(version).set(registered)

    def report(self, version: str = "") -> Path:
        """The classification report of ``version`` (default: the version labelled last), fresh.

        Raises:
            NoReportError: no store, no labelled case of that version, or no report possible.
        """
        try:
            scored = self.score()
        except NoFeedbackStoreError as e:
            raise NoReportError(str(e)) from e
        except DermaOpsError as e:
            raise NoReportError(f"the feedback store cannot be scored: {e}", 409) from e
        if not scored:
            raise NoReportError("no labelled cases yet: clinicians' feedback scores a version")
        chosen = version or max(scored, key=lambda v: scored[v]["last_labelled"])
        if chosen not in scored:
            labelled = ", ".join(sorted(scored))
            raise NoReportError(f"no labelled cases of version {chosen!r}; labelled: {labelled}")
        with self.lock:
            why = self._unreported.get(chosen)
        if why is not None:
            raise NoReportError(f"no report of version {chosen}: {why}", 409)
        return performance_path(self.settings, chosen)

    def _registered_sensitivity(self, version: str) -> float | None:
        """The melanoma sensitivity ``version`` was registered with, from the registry's tags
        (read once per version: a registered figure does not change)."""
        if version in self._registered:
            return self._registered[version]
        if not self.settings.registry_model:
            return None
        from dermaops.registry import Registry, RegistrySettings
        from dermaops.registry.promotion import model_version
        from dermaops.registry.tags import MELANOMA_SENSITIVITY_TAG

        try:
            reg = Registry(RegistrySettings(model_name=self.settings.registry_model))
            tag = model_version(reg, version).tags.get(MELANOMA_SENSITIVITY_TAG)
        except DermaOpsError as e:
            log.warning("registered sensitivity of version %s: %s", version, e)
            return None  # asked again next pass
        self._registered[version] = float(tag) if tag else None
        return self._registered[version]


def router(scores: FeedbackScores) -> APIRouter:
    """GET /performance: the served versions scored on clinicians' labels."""
    routes = APIRouter()

    @routes.get("/performance")
    def performance() -> dict[str, Any]:
        try:
            return {"versions": finite(scores.score())}
        except NoFeedbackStoreError as e:
            raise HTTPException(404, str(e)) from e
        except DermaOpsError as e:  # a store with rows it cannot read says which
            raise HTTPException(409, f"the feedback store cannot be scored: {e}") from e

    return routes


def finite(value: Any) -> Any:
    """JSON has no NaN: undefined figures become null."""
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return None if isinstance(value, float) and math.isnan(value) else value


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
