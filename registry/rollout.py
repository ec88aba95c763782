"""The rollout driver: judges the stage in progress and does what the verdict says.

The state machine and the judge are pure (:mod:`dermaops.rollout`); this module reads the
inference log, moves the champion alias back on a failure (the registry's own rollback: the
previous champion restored, the challenger's audit saying why), serves the candidate when the
rollout ends in ``full``, records the verdict on the version, and saves the rollout after the
action succeeded, one driver at a time (the store's lock). A driver killed between an action
and the save resumes in the same stage and acts again: a rollback already done is not done
twice (the champion is checked first), a deploy is sent again (it is idempotent), and the
audit entry and the announcement may be repeated.

A champion that moved away from the candidate while it rolled out (a newer promotion, a
rollback by hand) ends the rollout as ``superseded``, without acting: the reconciler serves the
champion.

Where traffic goes: locally the stable predictor mirrors to the challenger
(``DERMAOPS_SERVING_SHADOW_URL``) and the local predictor serves one version, so a local rollout
is ``shadow -> full``. On a cluster each canary step deploys the candidate at the step's
percent (:mod:`dermaops.deploy`: ``canaryTrafficPercent`` in KServe's Serverless mode,
``spec.canary`` in RawDeployment, the canary Deployment and its HTTPRoute weights without
KServe), ``full`` at 100 %, and a rollback the stable version at 100 %. Where the release
mirrors (it has the chart's canary Deployment) a cluster rollout starts in ``shadow`` too:
without KServe the HTTPRoute mirrors every request to the canary, marked as a shadow of the
stable version; under KServe the candidate waits on the canary Deployment and the
InferenceService's predictor mirrors to it while this rollout says shadow
(:class:`~dermaops.serving.shadow.RolloutWatch`). Elsewhere it starts in its first canary step.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dermaops.errors import ConfigError, DermaOpsError
from dermaops.evaluation.estimate import EstimateSettings
from dermaops.evaluation.sources import Source
from dermaops.inference_log import read_records
from dermaops.notify import announce
from dermaops.registry.card import record_rollout
from dermaops.registry.client import Registry, RegistryError, alias_version
from dermaops.registry.locks import actor
from dermaops.registry.model import CHAMPION
from dermaops.registry.promotion import audit, rollback
from dermaops.registry.serving import (
    ClusterServing,
    DeployError,
    LocalServing,
    Serving,
    deploy_version,
    serve_locked,
)
from dermaops.registry.tags import ROLLOUT_TAG
from dermaops.rollout.judge import (
    ErrorCounts,
    Judgement,
    JudgeSettings,
    error_check,
    estimate_check,
    judge,
    label_check,
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
    superseded,
)

log = logging.getLogger(__name__)

Records = Callable[[], Iterable[Mapping[str, Any]]]
Errors = Callable[[Rollout], ErrorCounts | None]
Labels = Callable[[], Mapping[str, Mapping[str, Any]]]  # the monitor's live figures per version
SourceOf = Callable[[str], Source | None]  # a version's calibration source, for its estimates


def log_records(*folders: Path) -> Records:
    """The inference logs in ``folders`` (the monitor's, or each local predictor's)."""

    def read() -> list[dict[str, Any]]:
        return [record for folder in folders for record in read_records(folder)]

    return read


def no_error_counts(_: Rollout) -> ErrorCounts | None:
    return None


def no_labels() -> Mapping[str, Mapping[str, Any]]:
    return {}


def no_sources(_: str) -> Source | None:
    return None


def _seconds(stamp: object) -> float:
    """A record's ISO 8601 time as seconds since the epoch (no zone: UTC; unreadable: never)."""
    try:
        when = datetime.fromisoformat(str(stamp))
    except ValueError:
        return float("-inf")
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def judge_stage(
    r: Rollout, records: Iterable[Mapping[str, Any]], counts: ErrorCounts | None, s: JudgeSettings,
    live: Mapping[str, Mapping[str, Any]] | None = None, sources: SourceOf = no_sources,
    es: EstimateSettings | None = None,
) -> Judgement:  # fmt: skip
    """The checks of ``r``'s stage on the ``records`` since it began: paired in shadow, split in
    a canary step, the challenger's 5xx share where ``counts`` are given (None: no Prometheus
    to ask, the check is left out), clinicians' labels where ``live`` (the monitor's live
    figures per version) has labelled melanomas of both versions, and the melanoma sensitivity
    estimated without labels where ``sources`` has both versions' calibration."""
    # Records carry milliseconds: one logged in the millisecond the stage began is in it.
    began = math.floor(r.stage_started * 1000) / 1000
    window = [rec for rec in records if _seconds(rec.get("time")) >= began]
    if r.current.name == "shadow":
        found = pairs(window, r.stable, r.candidate)
        checks, needed = paired_checks(found, s), s.min_pairs
        answers = [p.stable for p in found], [p.candidate for p in found]  # the same images
    else:
        checks, needed = split_checks(window, r.stable, r.candidate, s), s.min_requests
        answers = _own_answers(window, r.stable), _own_answers(window, r.candidate)
    if counts is not None:
        checks.append(error_check(counts, s, needed))
    for extra in (
        label_check(live or {}, r.stable, r.candidate),
        estimate_check(*answers, (sources(r.stable), sources(r.candidate)), s,
                       es or EstimateSettings()),
    ):  # fmt: skip
        if extra is not None:
            checks.append(extra)
    return judge(checks, s)


def _own_answers(window: Iterable[Mapping[str, Any]], version: str) -> list[Mapping[str, Any]]:
    """What ``version`` answered to the people it served (its shadow answers left out)."""
    return [rec for rec in window
            if str(rec.get("model_version")) == version and not rec.get("shadow")]  # fmt: skip


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
    labels: Labels = no_labels
    sources: SourceOf = no_sources
    estimates: EstimateSettings = dataclasses.field(default_factory=EstimateSettings)

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
        local = isinstance(self.serving, LocalServing)
        settings = self.settings.model_copy(update={"steps": []}) if local else self.settings
        try:
            shadow = local or (isinstance(self.serving, ClusterServing) and self.serving.mirrors())
        except DeployError as e:
            raise RolloutError(f"could not read the release for version {candidate}: {e}") from e
        r = start(self.reg.model_name, stable, candidate, settings, self.clock(), shadow=shadow)
        if local:
            note = f"version {stable} still served"
        else:  # the caller (the reconciler) holds the promotion lock
            try:
                done = serve_locked(self.reg, self._weighted(r.current.weight, stable), candidate,
                                    stable)  # fmt: skip
            except (DeployError, ConfigError) as e:
                raise RolloutError(
                    f"could not start the rollout of version {candidate}: {e}"
                ) from e
            note = done.action
            # The stage's time counts from when the candidate's pods answer (a deploy may wait
            # minutes for them), not from when the pass began.
            r = r.model_copy(update={"stage_started": self.clock()})
        self.store.save(r)
        self._audit(candidate, f"rollout started in {r.current.label}: {note}")
        return r

    def _weighted(self, weight: int, stable: str = "") -> Serving:
        """The serving target sending ``weight`` percent of traffic to what it deploys (0: a
        shadow of ``stable``, mirrored)."""
        if isinstance(self.serving, ClusterServing):
            shadow_of = stable if weight == 0 else ""
            return dataclasses.replace(self.serving, canary_percent=weight, shadow_of=shadow_of)
        return self.serving

    def tick(self) -> tuple[Rollout | None, Action]:
        """Judge the stage in progress and act on the verdict; the rollout after, and the
        action taken (``wait`` when nothing moved)."""
        with self.store.lock():
            r = self.store.load()
            if r is None or r.status != "running":
                return r, "wait"
            if self._superseded(r):
                return self.store.load(), "wait"
            verdict = self.judgement(r)
            after, action = advance(r, verdict, self.clock(), self.settings)
            self._act(after, action)
            if action == "next":  # the step counts from when its pods answer, as in begin()
                after = after.model_copy(update={"stage_started": self.clock()})
            self.store.save(after)
            return after, action

    def judgement(self, r: Rollout) -> Judgement:
        """The checks of ``r``'s stage on the records since it began; a Prometheus that does
        not answer leaves the error check without data (the stage waits, then is held)."""
        live = self.labels()
        try:
            counts = self.errors(r)
        except RolloutError as e:
            log.warning("rollout of version %s: %s", r.candidate, e)
            unanswered = error_check(ErrorCounts(0, 0), self.settings.judge, 1)
            verdict = judge_stage(r, self.records(), None, self.settings.judge, live,
                                  self.sources, self.estimates)  # fmt: skip
            checks = [*verdict.checks, unanswered.model_copy(update={"detail": str(e)})]
            return judge(checks, self.settings.judge)
        return judge_stage(r, self.records(), counts, self.settings.judge, live, self.sources,
                           self.estimates)  # fmt: skip

    def _superseded(self, r: Rollout) -> bool:
        """End ``r`` when the champion is no longer its candidate. Nothing is judged; on a
        cluster the champion is served at 100 % (a plain deploy would leave the canary's
        percent on the new revision)."""
        champion = alias_version(self.reg, CHAMPION)
        if champion == r.candidate:
            return False
        after = superseded(r, champion, self.clock())
        note = ""
        if isinstance(self.serving, ClusterServing) and champion is not None:
            try:
                note = "; " + deploy_version(self.reg, self._weighted(100), champion).action
            except (DeployError, ConfigError) as e:
                raise RolloutError(f"could not serve champion version {champion}: {e}") from e
        self._audit(r.candidate, f"rollout ended: {after.events[-1].reason}{note}")
        self.store.save(after)
        return True

    def by_hand(self, action: str) -> Rollout:
        """``rollout promote`` or ``rollout abort``, audited with who did it."""
        if action not in ("promote", "abort"):
            raise RolloutError(f"{action!r}: promote or abort")
        with self.store.lock():
            r = self.store.load()
            if r is None:
                raise RolloutError(f"no rollout of {self.reg.model_name} to {action}")
            if not r.finished and self._superseded(r):
                raise RolloutError(f"the rollout of version {r.candidate} ended: the champion "
                                   "moved away from it")  # fmt: skip
            after = by_hand(r, "promote" if action == "promote" else "abort", self.clock(),
                            actor())  # fmt: skip
            self._act(after, "promote" if action == "promote" else "roll_back")
            self.store.save(after)
            return after

    def _act(self, r: Rollout, action: Action) -> None:
        event = r.events[-1] if r.events else None
        why = event.reason if event else ""
        if action == "next":
            moved = ""
            if isinstance(self.serving, ClusterServing):
                done = deploy_version(self.reg, self._weighted(r.current.weight), r.candidate)
                moved = f"; {done.action}"
            self._audit(r.candidate, f"rollout moved to {r.current.label}: {why}{moved}")
        elif action == "promote":
            done = deploy_version(self.reg, self._weighted(100), r.candidate)
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
            deploy_version(self.reg, self._weighted(100), r.stable)
        except (DeployError, ConfigError) as e:
            raise RolloutError(f"could not serve version {r.stable} again: {e}") from e

    def _finish(self, r: Rollout, event: str) -> None:
        self._audit(r.candidate, event)
        try:
            self.reg.client.set_model_version_tag(
                self.reg.model_name, r.candidate, ROLLOUT_TAG, f"{r.status}: {r.events[-1].reason}"
            )
        except RegistryError as e:
            log.warning("could not tag version %s with its rollout: %s", r.candidate, e)
        try:
            record_rollout(self.reg, r)
        except (DermaOpsError, OSError) as e:  # the rollout is done; its record is kept locally
            log.warning("could not add the rollout to version %s's card: %s", r.candidate, e)
        announce(f"DermaOps: {event}")

    def _audit(self, version: str, event: str) -> None:
        log.info("version %s: %s", version, event)
        try:
            audit(self.reg, version, event)
        except RegistryError as e:
            log.warning("version %s %s; not audited: %s", version, event, e)
