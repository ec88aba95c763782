"""A rollout as a persisted state machine: ``shadow -> canary steps -> full``, one at a time.

A rollout starts when the champion moves to a newer version than the one served. Each stage
lasts at least ``min_stage_s`` and until the judge (:mod:`dermaops.rollout.judge`) has enough
data; then ``pass`` moves to the next stage, ``fail`` rolls back, and a stage that still lacks
data after ``max_stage_s`` is *held* (an alert; never promoted, never rolled back on silence).
The state is one JSON file written atomically, so whoever drives it can be killed at any time
and the next driver resumes in the same stage. The functions here are pure: they say what to
do; :mod:`dermaops.registry.rollout` does it.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from dermaops.errors import DermaOpsError
from dermaops.rollout.judge import Judgement, JudgeSettings

StageName = Literal["shadow", "canary", "full"]
Status = Literal["running", "held", "promoted", "rolled_back", "superseded"]
Action = Literal["wait", "next", "promote", "roll_back", "hold"]
ROLLOUT_FILE = "rollout.json"
HISTORY_FILE = "rollouts.jsonl"
LOCK_FILE = ".rollout.lock"


class RolloutError(DermaOpsError):
    """A rollout cannot be read, started or moved as asked."""


class RolloutSettings(BaseModel):
    """How a new champion reaches the clinicians (the chart's ``rollout`` values)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(False, description="roll out new champions (off: serve them at once)")
    steps: list[int] = Field([10, 50], description="the canary's traffic percents, in order")
    min_stage_s: float = Field(600, ge=0, description="least seconds a stage lasts")
    max_stage_s: float = Field(6 * 3600, gt=0, description="seconds without a verdict: hold")
    judge: JudgeSettings = JudgeSettings()

    @field_validator("steps", "judge", mode="before")
    @classmethod
    def _json(cls, value: object) -> object:
        """JSON from the environment: ``DERMAOPS_ROLLOUT_STEPS='[10, 50]'``,
        ``DERMAOPS_ROLLOUT_JUDGE='{"min_pairs": 500}'``."""
        if isinstance(value, str):
            try:
                return json.loads(value)
            except json.JSONDecodeError as e:
                raise ValueError(f"not JSON: {e}") from e
        return value

    @field_validator("steps")
    @classmethod
    def _rising_percents(cls, steps: list[int]) -> list[int]:
        if any(not 0 < s < 100 for s in steps) or steps != sorted(set(steps)):
            raise ValueError("canary steps are rising percents between 1 and 99")
        return steps


class Stage(BaseModel):
    """One stage: the challenger's share of the answers clinicians get."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: StageName
    weight: int = Field(ge=0, le=100, description="percent of traffic the challenger answers")

    @property
    def label(self) -> str:
        return f"canary {self.weight}%" if self.name == "canary" else self.name


class Event(BaseModel):
    """What happened to a rollout, when, and why (its audit trail)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    at: float
    stage: str
    action: str
    reason: str
    by: str = "judge"


class Rollout(BaseModel):
    """One rollout of ``candidate`` in place of ``stable``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    stable: str
    candidate: str
    stages: list[Stage]
    stage: int = Field(0, ge=0)
    status: Status = "running"
    started: float
    stage_started: float
    last: Judgement | None = None
    events: list[Event] = []

    @property
    def current(self) -> Stage:
        return self.stages[self.stage]

    @property
    def finished(self) -> bool:
        return self.status in ("promoted", "rolled_back", "superseded")


def start(
    model: str, stable: str, candidate: str, s: RolloutSettings, now: float, shadow: bool = True
) -> Rollout:
    """A new rollout, in ``shadow`` (without one, where traffic cannot be mirrored, in its
    first canary step).

    Raises:
        RolloutError: neither a shadow nor a canary step: nothing to judge before ``full``.
    """
    if not shadow and not s.steps:
        raise RolloutError("a rollout without a shadow stage needs canary steps to judge")
    stages = [
        *([Stage(name="shadow", weight=0)] if shadow else []),
        *(Stage(name="canary", weight=w) for w in s.steps),
        Stage(name="full", weight=100),
    ]
    why = f"champion moved from version {stable} to {candidate}"
    first = Event(at=now, stage=stages[0].label, action="start", reason=why)
    return Rollout(model=model, stable=stable, candidate=candidate, stages=stages, started=now,
                   stage_started=now, events=[first])  # fmt: skip


def advance(
    r: Rollout, judgement: Judgement, now: float, s: RolloutSettings
) -> tuple[Rollout, Action]:
    """What ``judgement`` of the current stage means at ``now``: the rollout after, and what to
    do. A critical failure rolls back at once; any other verdict waits for the stage's least
    duration; a stage without a verdict past its longest is held."""
    if r.status != "running":
        return r, "wait"
    elapsed = now - r.stage_started
    critical = any(c.critical and c.verdict == "fail" for c in judgement.checks)
    judged = r.model_copy(update={"last": judgement})
    if judgement.verdict == "fail" and (critical or elapsed >= s.min_stage_s):
        return _moved(
            judged, now, "rolled_back", r.stage, "roll_back", judgement.reason
        ), "roll_back"
    if judgement.verdict == "pass" and elapsed >= s.min_stage_s:
        following = r.stage + 1
        if r.stages[following].name == "full":
            return _moved(
                judged, now, "promoted", following, "promote", judgement.reason
            ), "promote"
        return _moved(judged, now, "running", following, "next", judgement.reason), "next"
    if judgement.verdict == "wait" and elapsed >= s.max_stage_s:
        why = f"no verdict after {elapsed:.0f} s: {judgement.reason}"
        return _moved(judged, now, "held", r.stage, "hold", why), "hold"
    return judged, "wait"


def superseded(r: Rollout, champion: str | None, now: float) -> Rollout:
    """The champion moved away from the candidate while it rolled out (a newer promotion, a
    rollback by hand): this rollout ends without acting; the reconciler serves the champion."""
    why = f"the champion is now {'version ' + champion if champion else 'none'}"
    return _moved(r, now, "superseded", r.stage, "supersede", why, "registry")


def by_hand(r: Rollout, action: Literal["promote", "abort"], now: float, who: str) -> Rollout:
    """``rollout promote`` (straight to full) or ``rollout abort`` (roll back), by ``who``."""
    if r.finished:
        raise RolloutError(f"the rollout of version {r.candidate} is {r.status} already")
    if action == "promote":
        return _moved(r, now, "promoted", len(r.stages) - 1, "promote", "by hand", who)
    return _moved(r, now, "rolled_back", r.stage, "roll_back", "aborted by hand", who)


def _moved(
    r: Rollout, now: float, status: Status, stage: int, action: str, reason: str, by: str = "judge"
) -> Rollout:
    event = Event(at=now, stage=r.stages[stage].label, action=action, reason=reason, by=by)
    started = now if stage != r.stage else r.stage_started
    return r.model_copy(update={"status": status, "stage": stage, "stage_started": started,
                                "events": [*r.events, event]})  # fmt: skip


class RolloutStore:
    """The rollout in progress (``rollout.json``) and every finished one (``rollouts.jsonl``),
    in the folder where the monitor keeps its state."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.path = folder / ROLLOUT_FILE

    @contextmanager
    def lock(self) -> Iterator[None]:
        """One driver at a time (the monitor's loop, a person's ``rollout promote``): each
        loads, acts and saves under it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with (self.folder / LOCK_FILE).open("a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def load(self) -> Rollout | None:
        """The rollout in the file (finished or not); None when there has been none."""
        try:
            return Rollout.model_validate_json(self.path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValidationError) as e:
            raise RolloutError(f"{self.path}: not a rollout ({e}); move it aside to go on") from e

    def save(self, r: Rollout) -> None:
        """Replace the file at once (a killed writer leaves the old one whole); a finished
        rollout is also appended to the history."""
        self.folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self.folder, prefix=f".{ROLLOUT_FILE}.", suffix=".partial")
        staged = Path(name)
        with os.fdopen(fd, "w") as f:
            f.write(r.model_dump_json(indent=2) + "\n")
            f.flush()
            os.fsync(f.fileno())
        staged.replace(self.path)
        if r.finished:
            with (self.folder / HISTORY_FILE).open("a") as f:
                f.write(json.dumps(r.model_dump(mode="json")) + "\n")
