"""The monitor drives rollouts: each reconciler pass starts one for a newer champion, then
judges the stage in progress on the inference log the predictors' records fill, and exports
where it stands (``dermaops_rollout_*``). The rollout is kept beside the monitor's other state
(its ``out`` folder), so a restarted monitor resumes it in the same stage."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, HTTPException

from dermaops.evaluation.estimate import EstimateSettings
from dermaops.monitoring.metrics import SeriesPass
from dermaops.rollout.plan import Rollout, RolloutStore

if TYPE_CHECKING:
    from dermaops.monitoring.metrics import MonitorMetrics
    from dermaops.registry.client import Registry
    from dermaops.registry.rollout import RolloutDriver, SourceOf
    from dermaops.registry.serving import Serving
    from dermaops.rollout.plan import RolloutSettings

log = logging.getLogger(__name__)

PHASES = ("shadow", "canary", "full")
STATUSES = ("running", "held", "promoted", "rolled_back")
VERDICTS = ("pass", "fail", "no_data")


def driver(
    reg: Registry, serving: Serving, out: Path, inference_log: Path, settings: RolloutSettings,
    prometheus: str = "", labels: Callable[[], Mapping[str, Mapping[str, Any]]] | None = None,
    sources: SourceOf | None = None, estimates: EstimateSettings | None = None,
) -> RolloutDriver:  # fmt: skip
    """The monitor's driver: rollouts in ``out``, judged on its own inference log, with
    ``prometheus`` on the request counts there, ``labels`` on the live figures from clinicians'
    labels (the feedback scores' last pass), and ``sources`` on each version's calibration for
    its estimates (made as ``estimates`` says)."""
    from dermaops.registry.rollout import (
        RolloutDriver,
        log_records,
        no_error_counts,
        no_labels,
        no_sources,
    )
    from dermaops.rollout.queries import PrometheusCounts

    counts = PrometheusCounts(prometheus) if prometheus else no_error_counts
    return RolloutDriver(reg, serving, RolloutStore(out), settings, log_records(inference_log),
                         counts, labels=labels or no_labels, sources=sources or no_sources,
                         estimates=estimates or EstimateSettings())  # fmt: skip


def export(r: Rollout | None, metrics: MonitorMetrics) -> None:
    """Where ``r`` stands, as the ``dermaops_rollout_*`` gauges."""
    for phase in PHASES:
        for status in STATUSES:
            current = r is not None and (r.current.name, r.status) == (phase, status)
            metrics.rollout_phase.labels(phase, status).set(int(current))
    metrics.rollout_weight.set(r.current.weight if r is not None else 0)
    p = SeriesPass(metrics.rollout_check, metrics.rollout_check_value,
                   metrics.rollout_check_samples)  # fmt: skip
    for check in r.last.checks if r is not None and r.last is not None else []:
        for verdict in VERDICTS:
            p.set(metrics.rollout_check, (check.name, verdict), int(check.verdict == verdict))
        p.set(metrics.rollout_check_samples, (check.name,), check.samples)
        if check.value is not None:
            p.set(metrics.rollout_check_value, (check.name,), check.value)
    p.finish()


def drive(d: RolloutDriver, metrics: MonitorMetrics) -> dict[str, Any]:
    """Judge the rollout in progress once and export where it stands; what was done."""
    r, action = d.tick()
    export(r, metrics)
    if r is None:
        return {"rollout": None}
    if action != "wait":
        log.info("rollout of version %s: %s (%s)", r.candidate, action, r.events[-1].reason)
    return {"rollout": r.candidate, "stage": r.current.label, "status": r.status,
            "action": action}  # fmt: skip


def routes(router: APIRouter, out: Path) -> None:
    """GET /rollout: the rollout in progress or the last one, with its checks and events."""

    @router.get("/rollout", response_model=Rollout)
    def rollout() -> Rollout:
        found = RolloutStore(out).load()
        if found is None:
            raise HTTPException(404, "no rollout yet")
        return found
