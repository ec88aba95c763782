"""The served version follows the champion: one level-triggered reconciler.

Whatever moved the ``champion`` alias (a pipeline's promote stage, ``registry promote``,
``registry rollback``) and whatever became of the deploy after it (a failed patch, a killed
stage), :func:`reconcile` reads the champion and what is served, and deploys the champion where
they differ. It holds the promotion lock while it does, so no alias moves between its read and
its deploy; it is safe to call at any time, any number of times. The monitor runs it in a loop
on a cluster (``monitor serve --reconcile-every``); the pipeline's deploy stage, the ``registry``
commands and the demo call it once.

What is served is read where the predictor reads it: locally the pointer
``$DERMAOPS_HOME/serving/current.json``; on a cluster the ``dermaops.io/model-version`` label the
deploy patch sets on the chart's InferenceService (or its plain Deployment).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from dermaops.errors import ConfigError
from dermaops.registry.client import Registry, alias_version
from dermaops.registry.locks import promotion_lock
from dermaops.registry.model import CHAMPION
from dermaops.registry.promotion import repair
from dermaops.registry.rollout import RolloutDriver
from dermaops.registry.serving import DeployError, Serving, named, serve_locked

log = logging.getLogger(__name__)


class ReconcileError(DeployError):
    """The champion could not be served; ``champion`` and ``served`` as last read (None:
    none, or not read)."""

    def __init__(self, message: str, champion: str | None = None, served: str | None = None):
        super().__init__(message, served)
        self.champion = champion


@dataclass(frozen=True)
class Reconciled:
    """One pass: the champion, what was served before and after, and what was done."""

    champion: str | None
    was: str | None
    served: str | None
    action: str

    @property
    def converged(self) -> bool:
        """The champion is served (or there is no champion yet)."""
        return self.champion is None or self.served == self.champion


def reconcile(reg: Registry, serving: Serving, rollouts: RolloutDriver | None = None) -> Reconciled:
    """Serve the champion where it is not served; nothing where it is. With ``rollouts`` (and
    rollouts enabled), a champion newer than the served version is not served at once: its
    rollout starts, or goes on (:mod:`dermaops.registry.rollout` serves it when it passes). An
    older champion is a rollback: served at once.

    Raises:
        ReconcileError: the deploy failed, or what is served after it is still not the champion.
        RegistryError: the registry could not be read.
        RolloutError: another version's rollout is not finished.
    """
    with promotion_lock(reg):
        repair(reg)  # a transition cut short is finished before the champion is read
        champion = alias_version(reg, CHAMPION)
        served = serving.version()
        if champion is None:
            return Reconciled(None, served, served, f"{reg.model_name} has no champion yet")
        if served == champion:
            return Reconciled(champion, served, served, f"version {champion} is served")
        rolling = rollouts if rollouts is not None and rollouts.settings.enabled else None
        if rolling is not None and served is not None and _newer(champion, served):
            r = rolling.begin(served, champion)
            return Reconciled(champion, served, served, f"version {champion} rolling out "
                              f"({r.current.label}); version {served} served")  # fmt: skip
        try:
            done = serve_locked(reg, serving, champion, served)
        except (ConfigError, DeployError) as e:
            now = e.served if isinstance(e, DeployError) and e.served is not None else served
            raise ReconcileError(
                f"champion version {champion} is not served on {serving.where} (it serves "
                f"{named(now)}): {e}", champion, now,
            ) from e  # fmt: skip
    log.info("champion version %s served on %s (was %s)", champion, serving.where, served)
    return Reconciled(champion, served, champion, done.action)


def _newer(champion: str, served: str) -> bool:
    """Is ``champion`` a later version than ``served`` (a promotion, not a rollback)?"""
    return champion.isdigit() and served.isdigit() and int(champion) > int(served)
