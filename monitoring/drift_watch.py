"""Drift runs over the monitor's traffic, and the reference each run compares it with.

Nothing waits on a drift run: it works on a snapshot of the window in a worker thread, and takes
``lock`` only to read the reference and to publish its result, so records, alerts and scrapes go
on while Evidently runs. ``running`` lets one run at a time and ``fetching`` one reference
fetch, so that records never wait on the registry.

Each run compares the traffic of the reference's model version. When the predictors move to
another version, the watch fetches that version's reference from the registry (with
``registry_model`` set) and follows it; until it has one, it compares image statistics only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse

from dermaops.errors import DermaOpsError
from dermaops.evaluation.sources import REFETCH_S
from dermaops.model.uri import resolve_model
from dermaops.monitoring.drift import DriftError, DriftSummary, drift_job
from dermaops.monitoring.metrics import MonitorMetrics
from dermaops.monitoring.records import RecordLog
from dermaops.monitoring.settings import MonitorSettings
from dermaops.settings import Home

log = logging.getLogger(__name__)


class DriftWatch:
    """The latest drift summary, and the reference (and its version) the next run uses."""

    def __init__(self, settings: MonitorSettings, records: RecordLog, metrics: MonitorMetrics):
        self.settings = settings
        self.records = records
        self.metrics = metrics
        self.lock = threading.Lock()  # summary, last_error, reference, reference_version
        self.running = threading.Lock()
        self.fetching = threading.Lock()
        self.summary: DriftSummary | None = None
        self.last_error = ""
        self.reference = settings.reference
        self.reference_version = settings.reference_version
        self.unfetchable: dict[str, float] = {}  # version -> when its fetch failed

    def current_reference(self) -> tuple[Path, str]:
        """The reference the next run compares with, and its version (empty: unknown)."""
        with self.lock:
            return Path(self.reference), self.reference_version

    def run(self) -> DriftSummary:
        """One drift run on a snapshot of the window; updates the gauges (or counts the failure)
        and keeps the summary.

        Raises:
            DermaOpsError: the window or the reference cannot be compared (DriftError, say).
        """
        s = self.settings
        with self.running:
            try:
                current = self.records.window(s.drift.window)
                self.follow(current)  # may wait on the registry; nothing else waits
                reference, version = self.current_reference()
                summary, window = drift_job(reference, version, current, s.drift, Path(s.out))
            except DermaOpsError as e:
                self.metrics.failures.inc()
                with self.lock:
                    self.last_error = str(e)
                raise
            with self.lock:
                self.summary, self.last_error = summary, ""
            self._export(summary, int(window.model_outputs))
        log.info("drift share %.2f (%s)", summary.drift_share, "DRIFT" if summary.drifted else "ok")
        return summary

    def _export(self, summary: DriftSummary, model_outputs: int) -> None:
        m = self.metrics
        m.share.set(summary.drift_share)
        m.detected.set(int(summary.drifted))
        for column in summary.columns:
            m.column.labels(column).set(int(column in summary.drifted_columns))
        m.window.set(summary.current_rows)
        m.outputs_compared.set(model_outputs)
        m.last_drift.set(time.time())

    def follow(self, current: pd.DataFrame) -> None:
        """Switch to the reference of the version that served the newest record, fetched from
        the registry; a version that cannot be fetched is retried after ``REFETCH_S``."""
        name = self.settings.registry_model
        if not name or current.empty or "model_version" not in current.columns:
            return
        newest = str(current["model_version"].iloc[-1])
        if newest == self.reference_version or not newest.isdigit():
            return
        with self.fetching:  # one fetch at a time; a second run finds it done
            if newest == self.reference_version:
                return
            if time.monotonic() - self.unfetchable.get(newest, float("-inf")) < REFETCH_S:
                return
            try:
                folder, _ = resolve_model(f"models:/{name}/{newest}", Home.from_env())
            except (DermaOpsError, OSError) as e:
                self.unfetchable[newest] = time.monotonic()
                log.warning("no drift reference for %s version %s yet: %s", name, newest, e)
                return
            log.info("drift reference: %s version %s (was %s)", name, newest,
                     self.reference_version or "unknown")  # fmt: skip
            with self.lock:
                self.reference, self.reference_version = str(folder), newest

    def latest(self) -> dict[str, Any]:
        """The latest summary.

        Raises:
            LookupError: no run has succeeded yet (with the last run's error).
        """
        with self.lock:
            if self.summary is None:
                raise LookupError(f"no drift report yet: {self.last_error or 'none run'}")
            return self.summary.as_dict()


def router(watch: DriftWatch, authorised: Callable[[Request], None]) -> APIRouter:
    """POST /drift (bearer token) runs one now; GET /summary is the latest one's."""
    routes = APIRouter()

    @routes.post("/drift", dependencies=[Depends(authorised)])
    def drift_now() -> dict[str, Any]:
        try:
            return watch.run().as_dict()
        except DriftError as e:
            raise HTTPException(409, str(e)) from e

    @routes.get("/summary")
    def summary() -> JSONResponse:
        try:
            return JSONResponse(watch.latest())
        except LookupError as e:
            raise HTTPException(404, str(e)) from e

    return routes
