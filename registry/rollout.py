"""The rollout driver: judges the stage in progress and does what the verdict says.

The state machine and the judge are pure (:mod:`dermaops.rollout`); this module reads the
inference log, moves the champion alias back on a failure (the registry's own rollback: the
previous champion restored, the challenger's audit saying why), serves the candidate when the
rollout ends in ``full``, records the verdict on the version, and saves the rollout after the
action succeeded. A driver killed anywhere resumes in the same stage: every action is safe to
do twice.

Where traffic goes in each stage is the serving target's business. A stage is served by the
target's :meth:`route`: locally the stable predictor runs with ``--shadow-url`` (the local
predictor serves one version, so a local rollout is ``shadow -> full``); on a cluster the
chart's canary weights (a later step of this work).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException

from dermaops.errors import ConfigError
from dermaops.inference_log import read_records
from dermaops.notify import announce
from dermaops.registry.client import Registry, RegistryError, alias_version
from dermaops.registry.locks import actor
from dermaops.registry.model import CHAMPION
from dermaops.registry.promotion import audit, rollback
from dermaops.registry.serving import DeployError, LocalServing, Serving, deploy_version
from dermaops.rollout.judge import (
    ErrorCounts,
    Judgement,
    JudgeSettings,
    error_check,
    judge,
    paired_checks,
    pairs,
    split_checks,
)
from dermaops.rollout.plan import (
    Action,
    Rollout,
    RolloutError,
    RolloutSettings,
    RolloutStore,
    advance,
    by_hand,
    start,
)

log = logging.getLogger(__name__)

ROLLOUT_TAG = "dermaops.rollout"  # on the candidate version: how its rollout ended, and why

Records = Callable[[], Iterable[Mapping[str, Any]]]
Errors = Callable[[Rollout], ErrorCounts | None]


def log_records(*folders: Path) -> Records:
    """The inference logs in ``folders`` (the monitor's, or each local predictor's)."""

    def read() -> list[dict[str, Any]]:
        return [record for folder in folders for record in read_records(folder)]

    return read


def no_error_counts(_: Rollout) -> ErrorCounts | None:
    return None


def judge_stage(
    r: Rollout, records: Iterable[Mapping[str, Any]], counts: ErrorCounts | None, s: JudgeSettings
) -> Judgement:
    """The checks of ``r``'s stage on the ``records`` since it began: paired in shadow, split in
    a canary step, and the challenger's 5xx share where ``counts`` are given (None: no
    Prometheus to ask, the check is left out)."""
    since = datetime.fromtimestamp(r.stage_started, UTC).isoformat(timespec="milliseconds")
    window = [rec for rec in records if str(rec.get("time") or "") >= since]
    if r.current.name == "shadow":
        checks, needed = paired_checks(pairs(window, r.stable, r.candidate), s), s.min_pairs
    else:
        checks, needed = split_checks(window, r.stable, r.candidate, s), s.min_requests
    if counts is not None:
        checks.append(error_check(counts, s, needed))
    return judge(checks, s)


@dataclass
class RolloutDriver:
    """Rollouts of ``reg``'s champion on ``serving``; state in ``store``."""

    reg: Registry
    serving: Serving
    store: RolloutStore
    settings: RolloutSettings
    records: Records
    errors: Errors = no_error_counts
    clock: Callable[[], float] = time.time
    notes: list[str] = field(default_factory=list)  # what each call did, for the caller

    def begin(self, stable: str, candidate: str) -> Rollout:
        """Start rolling ``candidate`` out in place of ``stable`` (which stays served)."""
        current = self.store.load()
        if current is not None and not current.finished:
            if (current.stable, current.candidate) == (stable, candidate):
                return current  # a pass that started it was cut short before saying so
            raise RolloutError(
                f"the rollout of version {current.candidate} is {current.status} in "
                f"{current.current.label}: finish it first (dermaops rollout promote|abort)"
            )
        settings = self.settings
        if isinstance(self.serving, LocalServing) and settings.steps:
            settings = settings.model_copy(update={"steps": []})  # one version per process
        r = start(self.reg.model_name, stable, candidate, settings, self.clock())
        self.store.save(r)
        self._audit(candidate, f"rollout started in shadow, version {stable} still served")
        return r

    def tick(self) -> tuple[Rollout | None, Action]:
        """Judge the stage in progress and act on the verdict; the rollout after, and the
        action taken (``wait`` when nothing moved)."""
        r = self.store.load()
        if r is None or r.status != "running":
            return r, "wait"
        verdict = self.judgement(r)
        after, action = advance(r, verdict, self.clock(), self.settings)
        self._act(after, action)
        self.store.save(after)
        return after, action

    def judgement(self, r: Rollout) -> Judgement:
        """The checks of ``r``'s stage on the records since it began."""
        return judge_stage(r, self.records(), self.errors(r), self.settings.judge)

    def by_hand(self, action: str) -> Rollout:
        """``rollout promote`` or ``rollout abort``, audited with who did it."""
        r = self.store.load()
        if r is None:
            raise RolloutError(f"no rollout of {self.reg.model_name} to {action}")
        if action not in ("promote", "abort"):
            raise RolloutError(f"{action!r}: promote or abort")
        after = by_hand(r, "promote" if action == "promote" else "abort", self.clock(), actor())
        self._act(after, "promote" if action == "promote" else "roll_back")
        self.store.save(after)
        return after

    def _act(self, r: Rollout, action: Action) -> None:
        event = r.events[-1] if r.events else None
        why = event.reason if event else ""
        if action == "next":
            self._audit(r.candidate, f"rollout moved to {r.current.label}: {why}")
        elif action == "promote":
            done = deploy_version(self.reg, self.serving, r.candidate)
            self._finish(r, f"rollout promoted version {r.candidate} ({why}); {done.action}")
        elif action == "roll_back":
            self._restore(r, why)
            self._finish(r, f"rollout rolled back in {r.current.label}: {why}")
        elif action == "hold":
            self._audit(r.candidate, f"rollout held in {r.current.label}: {why}")
            announce(f"DermaOps rollout of version {r.candidate} held: {why}")

    def _restore(self, r: Rollout, why: str) -> None:
        """The champion back to the stable version (skipped when it is already: a second
        pass after a cut-short one), and the stable version served."""
        if alias_version(self.reg, CHAMPION) != r.stable:
            try:
                rollback(self.reg, f"rollout of version {r.candidate} failed: {why}", r.stable)
            except RegistryError as e:
                raise RolloutError(f"could not roll back to version {r.stable}: {e}") from e
        try:
            deploy_version(self.reg, self.serving, r.stable)
        except (DeployError, ConfigError) as e:
            raise RolloutError(f"could not serve version {r.stable} again: {e}") from e

    def _finish(self, r: Rollout, event: str) -> None:
        self._audit(r.candidate, event)
        try:
            self.reg.client.set_model_version_tag(
                self.reg.model_name, r.candidate, ROLLOUT_TAG, f"{r.status}: {r.events[-1].reason}"
            )
        except MlflowException as e:
            log.warning("could not tag version %s with its rollout: %s", r.candidate, e.message)
        announce(f"DermaOps: {event}")

    def _audit(self, version: str, event: str) -> None:
        self.notes.append(event)
        log.info("version %s: %s", version, event)
        try:
            audit(self.reg, version, event)
        except MlflowException as e:
            log.warning("version %s %s; not audited: %s", version, event, e.message)
