"""Alertmanager's webhook starts retraining: at most one run per cooldown, across restarts.

A firing alert labelled ``action=retrain`` starts one retraining run, unless one is running or
started within the cooldown (a storm of alerts starts one run). The cooldown and the run in
flight are on disk (:mod:`dermaops.monitoring.decisions`) and read at start, so a restarted
monitor does not start a second run; every decision is appended to the decision log.
"""

from __future__ import annotations

import shlex
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError

from dermaops.monitoring.decisions import (
    LastRun,
    append_decision,
    load_last_run,
    process_start,
    read_decisions,
    save_last_run,
)
from dermaops.monitoring.metrics import MonitorMetrics
from dermaops.monitoring.settings import MonitorSettings
from dermaops.monitoring.webhooks import AlertmanagerWebhook


class Retrainer:
    """The last retraining run started (read back at start), and the one this process runs."""

    def __init__(self, settings: MonitorSettings, metrics: MonitorMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.out = Path(settings.out)
        self.lock = threading.Lock()  # one decision at a time
        self.last_run: LastRun | None = load_last_run(self.out)
        self.child: subprocess.Popen[bytes] | None = None  # started by this process

    def handle(self, payload: AlertmanagerWebhook) -> dict[str, Any]:
        """Start at most one retraining run for firing action=retrain alerts; record the decision.

        The decision is saved before the run starts: a monitor killed in between keeps the
        cooldown rather than start a second run."""
        firing = payload.firing("retrain")
        if not firing:
            return {"outcome": "ignored", "reason": "no firing alert labelled action=retrain"}
        names = sorted({a.labels.get("alertname", "?") for a in firing})
        with self.lock:
            now, last = time.time(), self.last_run
            why = self._suppressed_because(now)
            decision: dict[str, Any]
            if why:
                decision = {"outcome": "suppressed", "reason": why, "alerts": names}
                if last is not None:
                    decision["last_run_started"] = _iso(last.started)
            else:
                save_last_run(self.out, LastRun(now))
                self.child = _start(self.settings.retrain_command, self.out)
                pid = self.child.pid
                self.last_run = LastRun(now, pid, process_start(pid))
                save_last_run(self.out, self.last_run)
                decision = {"outcome": "started", "alerts": names, "pid": pid}
            self.metrics.triggers.labels(decision["outcome"]).inc()
            append_decision(self.out, {"time": _iso(now), **decision})
        return decision

    def _suppressed_because(self, now: float) -> str:
        """Why no run may start now, or empty when one may."""
        last = self.last_run
        if last is None:
            return ""
        # This process's own run is polled (and so reaped); one started before a restart runs
        # only if that very process still does.
        running = self.child.poll() is None if self.child is not None else last.alive()
        if running:
            return "a retraining run is in progress"
        cooldown = self.settings.cooldown_s
        if now - last.started < cooldown:
            return f"within the cooldown (until {_iso(last.started + cooldown)})"
        return ""


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


def _start(command: str, out: Path) -> subprocess.Popen[bytes]:
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    with (out / f"retraining-{stamp}.log").open("wb") as logfile:
        return subprocess.Popen(shlex.split(command), stdout=logfile, stderr=logfile)


def router(retrainer: Retrainer, authorised: Callable[[Request], None]) -> APIRouter:
    """POST /alerts (bearer token): Alertmanager's webhook; GET /decisions: what it decided."""
    routes = APIRouter()

    @routes.post("/alerts", dependencies=[Depends(authorised)])
    async def alerts(request: Request) -> dict[str, Any]:
        try:
            payload = AlertmanagerWebhook.model_validate_json(await request.body())
        except ValidationError as e:
            raise HTTPException(
                400, f'expected Alertmanager\'s JSON webhook body with "alerts": [...]: {e}'
            ) from e
        return await run_in_threadpool(retrainer.handle, payload)

    @routes.get("/decisions")
    def decisions(limit: int = 50) -> list[dict[str, Any]]:
        return read_decisions(retrainer.out, limit)

    return routes
