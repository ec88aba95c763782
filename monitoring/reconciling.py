"""The monitor runs the registry's reconciler (:mod:`dermaops.registry.reconcile`) on a period:
the champion is served, or ``dermaops_served_version`` stays apart from
``dermaops_champion_version`` and the DermaOpsServedVersionNotChampion alert fires. With
rollouts on, each pass also starts or judges the rollout (:mod:`dermaops.monitoring.rollouts`).

GET /reconcile  the last pass: the champion, what is served, what was done or why it could not be
GET /rollout    the rollout in progress or the last one
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, HTTPException

from dermaops.errors import DermaOpsError
from dermaops.monitoring.metrics import MonitorMetrics
from dermaops.monitoring.rollouts import drive as drive_rollout
from dermaops.monitoring.rollouts import driver as rollout_driver
from dermaops.monitoring.rollouts import routes as rollout_routes
from dermaops.monitoring.settings import MonitorSettings

if TYPE_CHECKING:
    from dermaops.registry.rollout import SourceOf

log = logging.getLogger(__name__)


class Reconciler:
    """The last pass, for GET /reconcile; ``lock`` lets one pass at a time."""

    def __init__(
        self, settings: MonitorSettings, metrics: MonitorMetrics,
        labels: Callable[[], Mapping[str, Mapping[str, Any]]] | None = None,
        sources: SourceOf | None = None,
    ) -> None:  # fmt: skip
        self.settings = settings
        self.metrics = metrics
        self.labels = labels  # the live figures from clinicians' labels, for the rollout judge
        self.sources = sources  # each version's calibration, for the judge's estimates
        self.lock = threading.Lock()
        self.last: dict[str, Any] = {}

    def run_once(self) -> dict[str, Any]:
        """One pass; the gauges and :attr:`last` follow it. A pass that raises is kept as its
        error (the next one tries again)."""
        with self.lock:
            try:
                self.last = self._pass()
            except Exception as e:
                self.metrics.reconcile_failures.inc()
                self.last = {"converged": False, "error": f"{type(e).__name__}: {e}"}
                raise
            return self.last

    def _pass(self) -> dict[str, Any]:
        from dermaops.registry import Registry, RegistrySettings
        from dermaops.registry.reconcile import ReconcileError, reconcile
        from dermaops.registry.serving import serving_for

        s, m = self.settings, self.metrics
        serving = serving_for(s.serve_on, release=s.release, namespace=s.namespace)
        at = datetime.now(UTC).isoformat(timespec="seconds")
        reg = Registry(RegistrySettings(model_name=s.registry_model))
        rollouts = rollout_driver(reg, serving, Path(s.out), Path(s.inference_log), s.rollout,
                                  s.prometheus_url, self.labels, self.sources,
                                  s.estimate)  # fmt: skip
        try:
            done = reconcile(reg, serving, rollouts)
        except (ReconcileError, DermaOpsError) as e:
            m.reconcile_failures.inc()
            champion, served = getattr(e, "champion", None), getattr(e, "served", None)
            if champion is not None:
                m.champion.set(float(champion))
                m.served.set(float(served or 0))
            log.warning("reconcile: %s", e)
            result = {"at": at, "converged": False, "champion": champion, "served": served,
                      "error": str(e)}  # fmt: skip
        else:
            m.champion.set(float(done.champion or 0))
            m.served.set(float(done.served or 0))
            result = {"at": at, "converged": done.converged, "champion": done.champion,
                      "served": done.served, "action": done.action}  # fmt: skip
        if s.rollout.enabled:
            try:
                result |= drive_rollout(rollouts, m)
            except DermaOpsError as e:  # the rollout stays where it was; the next pass tries
                log.warning("rollout: %s", e)
                result["rollout_error"] = str(e)
        return result

    def latest(self) -> dict[str, Any]:
        """The last pass, or that none has run."""
        return self.last or {"converged": None, "action": "no pass yet"}


def router(reconciler: Reconciler) -> APIRouter:
    """GET /reconcile (404 with the reconciler off) and GET /rollout."""
    routes = APIRouter()
    s = reconciler.settings

    @routes.get("/reconcile")
    def reconciled() -> dict[str, Any]:
        if not s.reconcile_every_s:
            raise HTTPException(404, "the reconciler is off (monitor serve --reconcile-every)")
        return reconciler.latest()

    rollout_routes(routes, Path(s.out))
    return routes
