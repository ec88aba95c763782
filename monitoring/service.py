"""``dermaops monitor serve``: drift on a schedule and on demand, its metrics, and retraining.

GET  /metrics   dermaops_drift_share, dermaops_drift_detected, per-column verdicts, window size,
                last-run time, retraining triggers
GET  /report    the latest Evidently HTML report;  GET /summary  its JSON summary;
                ``?kind=performance[&version=V]``: Evidently's classification report of a served
                version on the clinicians' labels (default: the version labelled last)
GET  /decisions the latest retraining decisions, and why (``?limit=N``)
POST /drift     run the drift job now
POST /records   inference-log records from predictors (statistics and predictions, no pixels),
                appended to the log the drift job reads
POST /alerts    Alertmanager's webhook: a firing alert labelled action=retrain starts one
                retraining run, unless one started within the cooldown (a storm starts one run)
GET  /performance the served versions scored on clinicians' labels (with ``feedback_dir``)
GET  /reconcile the last pass of the reconciler (with ``reconcile_every_s``): the champion, what
                is served, what was done or why it could not be
GET  /rollout   the rollout in progress or the last one, with its checks and events
GET  /estimates each version's performance estimated from its answers, before labels

The three POST paths need ``Authorization: Bearer <token>``; anything else gets 401 and
changes nothing.

The monitor is its concerns, each with its state and its own lock, and its routes:
:mod:`~dermaops.monitoring.records` (the inference log), :mod:`~dermaops.monitoring.drift_watch`
(drift runs and the reference they follow), :mod:`~dermaops.monitoring.retraining` (the
webhook's decisions), :mod:`~dermaops.monitoring.feedback` (clinicians' labels),
:mod:`~dermaops.monitoring.reconciling` (champion and rollouts) and
:mod:`~dermaops.monitoring.estimates` (performance without labels). This module puts them
together, runs their loops and serves them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from dermaops.errors import DermaOpsError
from dermaops.evaluation.sources import Sources
from dermaops.monitoring import drift_watch, estimates, feedback, reconciling, records, retraining
from dermaops.monitoring.drift_watch import DriftWatch
from dermaops.monitoring.estimates import Estimates
from dermaops.monitoring.feedback import FeedbackScores, NoReportError
from dermaops.monitoring.metrics import MonitorMetrics
from dermaops.monitoring.reconciling import Reconciler
from dermaops.monitoring.records import RecordLog
from dermaops.monitoring.retraining import Retrainer
from dermaops.monitoring.settings import MonitorSettings
from dermaops.monitoring.webhooks import BODIES
from dermaops.openapi import publish
from dermaops.tokens import bearer_matches

__all__ = ["Monitor", "MonitorSettings", "build_app"]

log = logging.getLogger(__name__)


@dataclass
class Monitor:
    """The monitor's concerns, sharing its settings and its metrics registry."""

    settings: MonitorSettings
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    metrics: MonitorMetrics = field(init=False)
    records: RecordLog = field(init=False)
    drift: DriftWatch = field(init=False)
    retrainer: Retrainer = field(init=False)
    feedback: FeedbackScores = field(init=False)
    reconciler: Reconciler = field(init=False)
    sources: Sources = field(init=False)
    estimates: Estimates = field(init=False)

    def __post_init__(self) -> None:
        s = self.settings
        self.metrics = m = MonitorMetrics.create(self.registry)
        self.records = RecordLog(Path(s.inference_log), m)
        self.drift = DriftWatch(s, self.records, m)
        self.retrainer = Retrainer(s, m)
        self.feedback = FeedbackScores(s, m)
        self.sources = Sources(s.registry_model, self.drift.current_reference)
        self.reconciler = Reconciler(s, m, labels=lambda: self.feedback.scored,
                                     sources=self.sources.get)  # fmt: skip
        self.estimates = Estimates(s.estimate, self.records, self.sources, m)

    def drift_and_estimate(self) -> None:
        """One scheduled drift run, then the estimates over the same log."""
        try:
            self.drift.run()
        except DermaOpsError as e:  # counted and kept by the watch; the estimates still run
            log.warning("scheduled drift run: %s", e)
        self.estimates.refresh()
        self.estimates.against_labels(self.feedback.scored)

    def score_feedback(self) -> None:
        """Score the served versions on clinicians' labels, and the estimates against them."""
        self.estimates.against_labels(self.feedback.score())

    def loops(self) -> list[tuple[str, float, Callable[[], object]]]:
        """The background work: what, how often, and the call."""
        s = self.settings
        found: list[tuple[str, float, Callable[[], object]]] = [
            ("drift and estimates", s.interval_s, self.drift_and_estimate)
        ]
        if s.feedback_dir:
            found.append(("scoring the feedback store", s.interval_s, self.score_feedback))
        if s.reconcile_every_s:
            found.append(("reconcile pass", s.reconcile_every_s, self.reconciler.run_once))
        return found


async def _every(what: str, period_s: float, work: Callable[[], object]) -> None:
    """``work`` in a worker thread, then ``period_s`` of sleep, for ever: a pass that fails is
    logged and the next one tries again."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            await loop.run_in_executor(None, work)
        except Exception:  # the loop outlives any one pass (a store being rewritten, say)
            log.exception("%s failed", what)
        await asyncio.sleep(period_s)


def build_app(settings: MonitorSettings) -> FastAPI:
    """The monitor's HTTP API, with its background loops running."""
    monitor = Monitor(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(_every(*loop)) for loop in monitor.loops()]
        yield
        for task in tasks:
            task.cancel()

    app = FastAPI(title="DermaOps monitor", lifespan=lifespan)
    app.state.monitor = monitor
    token = settings.token.get_secret_value()

    def authorised(request: Request) -> None:
        """401 unless the request carries the monitor's bearer token."""
        if not bearer_matches(request.headers.get("authorization"), token):
            monitor.metrics.unauthorized.labels(request.url.path).inc()
            raise HTTPException(
                401, "a bearer token is required", headers={"WWW-Authenticate": "Bearer"}
            )

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(monitor.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/report")
    def report(kind: Literal["drift", "performance"] = "drift", version: str = "") -> FileResponse:
        if kind == "performance":
            try:
                return FileResponse(monitor.feedback.report(version), media_type="text/html")
            except NoReportError as e:
                raise HTTPException(e.status, str(e)) from e
        path = Path(settings.out) / "drift_report.html"
        if not path.is_file():
            raise HTTPException(404, "no drift report yet; POST /drift runs one")
        return FileResponse(path, media_type="text/html")

    app.include_router(records.router(monitor.records, authorised))
    app.include_router(drift_watch.router(monitor.drift, authorised))
    app.include_router(retraining.router(monitor.retrainer, authorised))
    app.include_router(feedback.router(monitor.feedback))
    app.include_router(reconciling.router(monitor.reconciler))
    app.include_router(estimates.router(monitor.estimates))
    publish(app, BODIES)
    return app
