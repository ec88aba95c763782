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

The three POST paths need ``Authorization: Bearer <token>``; anything else gets 401 and
changes nothing.

Nothing waits on a drift run: it works on a snapshot of the window in a worker thread, and takes
the monitor's locks only to read the log and to publish its result, so records, alerts and
scrapes go on while Evidently runs. The retraining cooldown and the run in flight are on disk
(``decisions.py``) and read at start: a restarted monitor does not start a second run.

With ``reconcile_every_s`` the monitor also runs the registry's reconciler on that period
(:mod:`dermaops.registry.reconcile`): the champion is served, or ``dermaops_served_version``
stays apart from ``dermaops_champion_version`` and the DermaOpsServedVersionNotChampion alert
fires.

Each drift run compares the traffic of the reference's model version. When the predictors move
to another version, the monitor fetches that version's reference from the registry (with
``registry_model`` set) and follows it; until it has one, it compares image statistics only.
"""

from __future__ import annotations

import asyncio
import logging
import math
import shlex
import subprocess
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from dermaops.errors import DermaOpsError
from dermaops.evaluation.estimate import EstimateSettings
from dermaops.evaluation.live import LiveSettings
from dermaops.inference_log import InferenceLog, InferenceRecord
from dermaops.model.uri import resolve_model
from dermaops.monitoring.decisions import (
    LastRun,
    append_decision,
    load_last_run,
    process_start,
    read_decisions,
    save_last_run,
)
from dermaops.monitoring.drift import (
    DriftError,
    DriftSettings,
    DriftSummary,
    drift_job,
    read_window,
)
from dermaops.monitoring.estimates import refresh as refresh_estimates
from dermaops.monitoring.feedback import performance_path, score_feedback
from dermaops.monitoring.metrics import MonitorMetrics
from dermaops.monitoring.rollouts import drive as drive_rollout
from dermaops.monitoring.rollouts import driver as rollout_driver
from dermaops.monitoring.rollouts import routes as rollout_routes
from dermaops.monitoring.webhooks import BODIES, AlertmanagerWebhook, RecordsAnswer
from dermaops.openapi import publish
from dermaops.rollout.plan import RolloutSettings
from dermaops.settings import Home
from dermaops.tokens import bearer_matches

log = logging.getLogger(__name__)

REFETCH_S = 600.0  # seconds before a version whose reference could not be fetched is retried


class MonitorSettings(BaseModel):
    """The monitor's schedule, inputs and what a retraining trigger runs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    reference: str = Field(..., description="reference_stats.csv, or a model folder holding one")
    reference_version: str = Field(
        "", description="registered version the reference belongs to (empty: unknown)"
    )
    registry_model: str = Field(
        "",
        description="registered model whose versions' references the monitor fetches when "
        "traffic moves to a new version (MLflow, MLFLOW_TRACKING_URI); empty: never fetch",
    )
    inference_log: str = Field(..., description="the predictor's inference log folder")
    out: str = Field(..., description="where reports and the trigger record go")
    interval_s: float = Field(900, gt=0, description="seconds between scheduled drift runs")
    cooldown_s: float = Field(6 * 3600, ge=0, description="no second retraining run within this")
    retrain_command: str = Field(
        "dermaops pipeline run --local --kind retraining",
        description="what a trigger runs (on a cluster: dermaops pipeline submit --host ...)",
    )
    token: SecretStr = Field(..., description="bearer token the POST paths require")
    drift: DriftSettings = DriftSettings()
    reconcile_every_s: float = Field(
        0, ge=0, description="seconds between passes of the champion reconciler (0: never)"
    )
    feedback_dir: str = Field(
        "", description="the clinicians' feedback store, scored per version (empty: none)"
    )
    live: LiveSettings = LiveSettings()
    serve_on: Literal["local", "kubernetes"] = Field(
        "local", description="where the reconciler serves the champion"
    )
    rollout: RolloutSettings = RolloutSettings()
    estimate: EstimateSettings = EstimateSettings()
    prometheus_url: str = Field(
        "", description="Prometheus the rollout judge asks for request counts (empty: none)"
    )
    release: str = Field("dermaops", description="the chart's release (serve_on kubernetes)")
    namespace: str = Field("dermaops", description="its namespace")

    @model_validator(mode="after")
    def _reconcile_needs_a_model(self) -> MonitorSettings:
        if self.reconcile_every_s and not self.registry_model:
            raise ValueError("reconcile_every_s needs registry_model, the model whose champion")
        return self


@dataclass
class MonitorState:
    """What the monitor knows, under short locks that no request holds for long: ``lock`` for
    the summary, the reference and the retraining decision; ``log_lock`` for the inference log's
    writer and the window's read. ``drifting`` lets one drift run at a time (only drift runs take
    it) and ``fetching`` one reference fetch, so that records never wait on the registry."""

    settings: MonitorSettings
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    lock: threading.Lock = field(default_factory=threading.Lock)
    log_lock: threading.Lock = field(default_factory=threading.Lock)
    drifting: threading.Lock = field(default_factory=threading.Lock)
    summary: DriftSummary | None = None
    last_error: str = ""
    last_run: LastRun | None = None  # the last retraining run started, read back at start
    retraining: subprocess.Popen[bytes] | None = None  # that run, when this process started it
    writer: InferenceLog | None = None
    reference: str = field(init=False)  # what drift compares with: the settings', or fetched
    reference_version: str = field(init=False)
    unfetchable: dict[str, float] = field(default_factory=dict)  # version -> when it failed
    fetching: threading.Lock = field(default_factory=threading.Lock)
    reconciled: dict[str, Any] = field(default_factory=dict)  # the last pass, for GET /reconcile
    unreported: dict[str, str] = field(default_factory=dict)  # version -> why it has no report
    reported: dict[str, int] = field(default_factory=dict)  # version -> the cases its report is of
    scoring: threading.Lock = field(default_factory=threading.Lock)
    registered: dict[str, float | None] = field(default_factory=dict)  # version -> sensitivity
    performance: dict[str, dict[str, Any]] = field(default_factory=dict)  # GET /performance
    disagreed: set[str] = field(default_factory=set)  # feedback ids counted in disagreements
    estimates: dict[str, Any] = field(default_factory=dict)  # version -> Estimate, or why not
    metrics: MonitorMetrics = field(init=False)  # in ``registry``

    def __post_init__(self) -> None:
        self.reference = self.settings.reference
        self.reference_version = self.settings.reference_version
        self.last_run = load_last_run(Path(self.settings.out))
        self.metrics = MonitorMetrics.create(self.registry)


def reconcile_once(state: MonitorState) -> dict[str, Any]:
    """One pass of the registry's reconciler; its gauges and ``state.reconciled`` follow it."""
    from dermaops.registry import Registry, RegistrySettings
    from dermaops.registry.reconcile import ReconcileError, reconcile
    from dermaops.registry.serving import serving_for

    s = state.settings
    serving = serving_for(s.serve_on, release=s.release, namespace=s.namespace)
    at = datetime.now(UTC).isoformat(timespec="seconds")
    reg = Registry(RegistrySettings(model_name=s.registry_model))
    rollouts = rollout_driver(reg, serving, Path(s.out), Path(s.inference_log), s.rollout,
                              s.prometheus_url)  # fmt: skip
    try:
        done = reconcile(reg, serving, rollouts)
    except (ReconcileError, DermaOpsError) as e:
        state.metrics.reconcile_failures.inc()
        champion, served = getattr(e, "champion", None), getattr(e, "served", None)
        if champion is not None:
            state.metrics.champion.set(float(champion))
            state.metrics.served.set(float(served or 0))
        log.warning("reconcile: %s", e)
        result = {"at": at, "converged": False, "champion": champion, "served": served,
                  "error": str(e)}  # fmt: skip
    else:
        state.metrics.champion.set(float(done.champion or 0))
        state.metrics.served.set(float(done.served or 0))
        result = {"at": at, "converged": done.converged, "champion": done.champion,
                  "served": done.served, "action": done.action}  # fmt: skip
    if s.rollout.enabled:
        try:
            result |= drive_rollout(rollouts, state.metrics)
        except DermaOpsError as e:  # the rollout stays where it was; the next pass tries again
            log.warning("rollout: %s", e)
            result["rollout_error"] = str(e)
    state.reconciled = result
    return result


def run_drift(state: MonitorState) -> DriftSummary:
    """One drift run on a snapshot of the window; updates the gauges (or counts the failure)
    and keeps the summary. Requests never wait for it (see :class:`MonitorState`)."""
    s = state.settings
    with state.drifting:
        try:
            current = read_window(Path(s.inference_log), s.drift.window, state.log_lock)
            follow_version(state, current)  # may wait on the registry; nothing else waits
            with state.lock:
                reference, version = Path(state.reference), state.reference_version
            summary, window = drift_job(reference, version, current, s.drift, Path(s.out))
        except DermaOpsError as e:
            state.metrics.failures.inc()
            state.last_error = str(e)
            raise
        with state.lock:
            state.summary, state.last_error = summary, ""
            state.metrics.share.set(summary.drift_share)
            state.metrics.detected.set(int(summary.drifted))
            for column in summary.columns:
                state.metrics.column.labels(column).set(int(column in summary.drifted_columns))
            state.metrics.window.set(summary.current_rows)
            state.metrics.outputs_compared.set(int(window.model_outputs))
            state.metrics.last_drift.set(time.time())
    log.info("drift share %.2f (%s)", summary.drift_share, "DRIFT" if summary.drifted else "ok")
    return summary


def follow_version(state: MonitorState, current: pd.DataFrame) -> None:
    """Switch to the reference of the version that served the newest record, fetched from the
    registry; a version that cannot be fetched is retried after ``REFETCH_S``."""
    name = state.settings.registry_model
    if not name or current.empty or "model_version" not in current.columns:
        return
    newest = str(current["model_version"].iloc[-1])
    if newest == state.reference_version or not newest.isdigit():
        return
    with state.fetching:  # one fetch at a time; a second run finds it done
        if newest == state.reference_version:
            return
        if time.monotonic() - state.unfetchable.get(newest, float("-inf")) < REFETCH_S:
            return
        try:
            folder, _ = resolve_model(f"models:/{name}/{newest}", Home.from_env())
        except (DermaOpsError, OSError) as e:
            state.unfetchable[newest] = time.monotonic()
            log.warning("no drift reference for %s version %s yet: %s", name, newest, e)
            return
        log.info("drift reference: %s version %s (was %s)", name, newest,
                 state.reference_version or "unknown")  # fmt: skip
        with state.lock:
            state.reference, state.reference_version = str(folder), newest


def receive_records(state: MonitorState, payload: Any) -> RecordsAnswer:
    """Append the records that are inference records to the inference log (as sent); count the
    rest as rejected.

    Raises:
        ValueError: the body is not ``{"records": [...]}``.
    """
    if not isinstance(payload, dict) or not isinstance(payload.get("records"), list):
        raise ValueError('expected {"records": [...]}')
    good = [r for r in payload["records"] if _inference_record(r)]
    with state.log_lock:
        if state.writer is None:
            state.writer = InferenceLog(Path(state.settings.inference_log))
        dropped_before = state.writer.dropped
        for record in good:
            state.writer.write(record)
        dropped = state.writer.dropped - dropped_before  # the log's disk full, say
    rejected = len(payload["records"]) - len(good)
    state.metrics.records.labels("accepted").inc(len(good) - dropped)
    state.metrics.records.labels("rejected").inc(rejected)
    state.metrics.records.labels("dropped").inc(dropped)
    return RecordsAnswer(accepted=len(good) - dropped, rejected=rejected, dropped=dropped)


def _inference_record(record: Any) -> bool:
    """An inference record: every image statistic a finite number, nothing else unknown, no
    long strings (nothing that looks like pixels)."""
    try:
        InferenceRecord.model_validate(record)
    except ValidationError:
        return False
    return True


def handle_alerts(state: MonitorState, payload: AlertmanagerWebhook) -> dict[str, Any]:
    """Start at most one retraining run for firing action=retrain alerts; record the decision.

    No run starts while the last one runs or within the cooldown after it started, across
    restarts of the monitor: the decision is saved before the run starts (a monitor killed in
    between keeps the cooldown rather than start a second run)."""
    firing = payload.firing("retrain")
    if not firing:
        return {"outcome": "ignored", "reason": "no firing alert labelled action=retrain"}
    names = sorted({a.labels.get("alertname", "?") for a in firing})
    out = Path(state.settings.out)
    with state.lock:
        now, last = time.time(), state.last_run
        why = _suppressed_because(state, now)
        decision: dict[str, Any]
        if why:
            decision = {"outcome": "suppressed", "reason": why, "alerts": names}
        else:
            save_last_run(out, LastRun(now))
            state.retraining = _start(state.settings)
            pid = state.retraining.pid
            state.last_run = LastRun(now, pid, process_start(pid))
            save_last_run(out, state.last_run)
            decision = {"outcome": "started", "alerts": names, "pid": pid}
        if last is not None and decision["outcome"] == "suppressed":
            decision["last_run_started"] = _iso(last.started)
        state.metrics.triggers.labels(decision["outcome"]).inc()
        append_decision(out, {"time": _iso(now), **decision})
    return decision


def _suppressed_because(state: MonitorState, now: float) -> str:
    """Why no run may start now, or empty when one may."""
    last = state.last_run
    if last is None:
        return ""
    # This process's own run is polled (and so reaped); one started before a restart runs
    # only if that very process still does.
    child = state.retraining
    running = child.poll() is None if child is not None else last.alive()
    if running:
        return "a retraining run is in progress"
    if now - last.started < state.settings.cooldown_s:
        return f"within the cooldown (until {_iso(last.started + state.settings.cooldown_s)})"
    return ""


def _finite(value: Any) -> Any:
    """JSON has no NaN: undefined figures become null."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return None if isinstance(value, float) and math.isnan(value) else value


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


def _start(s: MonitorSettings) -> subprocess.Popen[bytes]:
    out = Path(s.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    with (out / f"retraining-{stamp}.log").open("wb") as logfile:
        return subprocess.Popen(shlex.split(s.retrain_command), stdout=logfile, stderr=logfile)


async def _scheduled_drift(state: MonitorState) -> None:
    loop = asyncio.get_running_loop()
    while True:
        try:
            await loop.run_in_executor(None, run_drift, state)
        except DriftError as e:
            log.warning("scheduled drift run: %s", e)
        try:
            await loop.run_in_executor(None, refresh_estimates, state)
        except Exception:  # the loop outlives a log it cannot read this time
            log.exception("estimating performance failed")
        await asyncio.sleep(state.settings.interval_s)


async def _scoring_feedback(state: MonitorState) -> None:
    loop = asyncio.get_running_loop()
    while True:
        try:
            await loop.run_in_executor(None, score_feedback, state)
        except Exception:  # the loop outlives a store being rewritten or unreadable
            log.exception("scoring the feedback store failed")
        await asyncio.sleep(state.settings.interval_s)


async def _reconciling(state: MonitorState) -> None:
    loop = asyncio.get_running_loop()
    while True:
        try:
            await loop.run_in_executor(None, reconcile_once, state)
        except Exception as e:  # the loop outlives any one pass; the next one tries again
            state.metrics.reconcile_failures.inc()
            state.reconciled = {"converged": False, "error": f"{type(e).__name__}: {e}"}
            log.exception("reconcile pass failed")
        await asyncio.sleep(state.settings.reconcile_every_s)


def _performance_report(state: MonitorState, version: str) -> Path:
    """The classification report of ``version`` (default: the version labelled last), fresh.

    Raises:
        HTTPException: 404, no feedback store, or no labelled case of that version.
    """
    if not state.settings.feedback_dir:
        raise HTTPException(404, "no feedback store (monitor serve --feedback-dir)")
    try:
        scored = score_feedback(state)
    except DermaOpsError as e:
        raise HTTPException(409, f"the feedback store cannot be scored: {e}") from e
    if not scored:
        raise HTTPException(404, "no labelled cases yet: clinicians' feedback scores a version")
    chosen = version or max(scored, key=lambda v: scored[v]["last_labelled"])
    if chosen not in scored:
        raise HTTPException(
            404, f"no labelled cases of version {chosen!r}; labelled: {', '.join(sorted(scored))}"
        )
    if chosen in state.unreported:
        raise HTTPException(409, f"no report of version {chosen}: {state.unreported[chosen]}")
    return performance_path(state.settings, chosen)


def _optional_routes(app: FastAPI, state: MonitorState) -> None:
    """GET /performance (with a feedback store) and GET /reconcile (with the reconciler)."""
    settings = state.settings

    @app.get("/performance")
    def performance() -> dict[str, Any]:
        if not settings.feedback_dir:
            raise HTTPException(404, "no feedback store (monitor serve --feedback-dir)")
        try:
            return {"versions": _finite(score_feedback(state))}
        except DermaOpsError as e:  # a store with rows it cannot read says which
            raise HTTPException(409, f"the feedback store cannot be scored: {e}") from e

    @app.get("/reconcile")
    def reconciled() -> dict[str, Any]:
        if not settings.reconcile_every_s:
            raise HTTPException(404, "the reconciler is off (monitor serve --reconcile-every)")
        return state.reconciled or {"converged": None, "action": "no pass yet"}

    rollout_routes(app, Path(settings.out))

    @app.get("/estimates")
    def estimates() -> dict[str, Any]:
        """Each version's performance estimated without labels, or why there is none."""
        return {
            version: found if isinstance(found, str) else found.model_dump()
            for version, found in state.estimates.items()
        }


def build_app(settings: MonitorSettings) -> FastAPI:
    """The monitor's HTTP API, with the scheduled drift job running in the background."""
    state = MonitorState(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(_scheduled_drift(state))]
        if settings.feedback_dir:
            tasks.append(asyncio.create_task(_scoring_feedback(state)))
        if settings.reconcile_every_s:
            tasks.append(asyncio.create_task(_reconciling(state)))
        yield
        for task in tasks:
            task.cancel()

    app = FastAPI(title="DermaOps monitor", lifespan=lifespan)
    app.state.monitor = state
    token = settings.token.get_secret_value()

    def authorised(request: Request) -> None:
        """401 unless the request carries the monitor's bearer token."""
        if not bearer_matches(request.headers.get("authorization"), token):
            state.metrics.unauthorized.labels(request.url.path).inc()
            raise HTTPException(
                401, "a bearer token is required", headers={"WWW-Authenticate": "Bearer"}
            )

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(state.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/drift", dependencies=[Depends(authorised)])
    def drift_now() -> dict[str, Any]:
        try:
            return run_drift(state).as_dict()
        except DriftError as e:
            raise HTTPException(409, str(e)) from e

    @app.get("/summary")
    def summary() -> JSONResponse:
        if state.summary is None:
            raise HTTPException(404, f"no drift report yet: {state.last_error or 'none run'}")
        return JSONResponse(state.summary.as_dict())

    @app.get("/report")
    def report(kind: Literal["drift", "performance"] = "drift", version: str = "") -> FileResponse:
        if kind == "performance":
            return FileResponse(_performance_report(state, version), media_type="text/html")
        path = Path(settings.out) / "drift_report.html"
        if not path.is_file():
            raise HTTPException(404, "no drift report yet; POST /drift runs one")
        return FileResponse(path, media_type="text/html")

    _optional_routes(app, state)

    @app.get("/decisions")
    def decisions(limit: int = 50) -> list[dict[str, Any]]:
        return read_decisions(Path(settings.out), limit)

    @app.post("/records", dependencies=[Depends(authorised)], response_model=None)
    async def records(request: Request) -> dict[str, int]:
        try:
            # The file write in a worker: the event loop never waits on the disk or a lock.
            answer = await run_in_threadpool(receive_records, state, await request.json())
        except ValueError as e:
            raise HTTPException(400, f"expected the predictor's records: {e}") from e
        return answer.model_dump(exclude_defaults=True)

    @app.post("/alerts", dependencies=[Depends(authorised)])
    async def alerts(request: Request) -> dict[str, Any]:
        try:
            payload = AlertmanagerWebhook.model_validate_json(await request.body())
        except ValidationError as e:
            raise HTTPException(
                400, f'expected Alertmanager\'s JSON webhook body with "alerts": [...]: {e}'
            ) from e
        return await run_in_threadpool(handle_alerts, state, payload)

    publish(app, BODIES)
    return app
