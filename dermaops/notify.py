"""Tell people how a pipeline run ended: a Markdown summary and a chat webhook.

The JSON body carries ``text`` (Slack) and ``content`` (Discord); each service ignores the
other's field, so one webhook URL of either kind works.

What the summary lists is :class:`RunFacts`: the stages record their facts with the pipeline's
MLflow run through it, and the registry reads them back as one (``Registry.run_facts``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from dermaops.errors import DermaOpsError

log = logging.getLogger(__name__)

DISCORD_LIMIT = 2000
WEBHOOK_ENV = "DERMAOPS_WEBHOOK_URL"  # a Secret in the chart; the pipelines and the monitor read it


class NotifyError(DermaOpsError):
    """The webhook refused the message or could not be reached."""


class RunFactsError(DermaOpsError):
    """Facts recorded with a run that this version cannot read (an unknown fact, a value of the
    wrong kind), or facts that are read, never recorded."""


# The facts the stages record; the rest of RunFacts is added when the run is read back.
RECORDED = ("deployed", "promoted", "registered_version", "state")


class RunFacts(BaseModel):
    """What a pipeline run recorded for its summary, and where to look for more.

    Recorded as text, one tag per set field (:data:`RECORDED`): booleans as ``true`` or
    ``false``, as every earlier version wrote them, so their runs still load. The summary
    lists the set fields in this order.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    deployed: str | None = Field(None, description="What the deploy stage did.")
    promoted: bool | None = Field(None, description="Whether the version became champion.")
    registered_version: str | None = Field(None, pattern=r"^[0-9]+$")
    state: str | None = Field(None, description="How KFP says the run ended: SUCCEEDED, ...")
    mlflow_run: str | None = Field(None, description="Read back: the run's id and experiment.")
    test_f1_macro: float | None = Field(None, description="Read back: the run's test macro-F1.")

    @field_validator("promoted", mode="before")
    @classmethod
    def _true_or_false(cls, value: object) -> object:
        if isinstance(value, str) and value not in ("true", "false"):
            raise ValueError(f"{value!r} is neither true nor false")
        return value == "true" if isinstance(value, str) else value

    def recorded(self) -> dict[str, str]:
        """The set facts as the text recorded with the run, by field name.

        Raises:
            RunFactsError: a fact that is read back, never recorded, is set.
        """
        read_back = [k for k, v in self if v is not None and k not in RECORDED]
        if read_back:
            raise RunFactsError(f"{', '.join(read_back)} are read from the run, not recorded")
        return dict(self.rows())

    def rows(self) -> list[tuple[str, str]]:
        """(field, text) of each set fact, in the summary's order."""
        return [(k, _text(v)) for k, v in self if v is not None]

    @classmethod
    def parse(cls, recorded: Mapping[str, str], source: str, prefix: str = "") -> RunFacts:
        """The facts recorded with the run ``source`` names, by field name (each stored as
        ``prefix`` + name: the errors name it so).

        Raises:
            RunFactsError: an unknown fact, or a value of the wrong kind.
        """
        unknown = ", ".join(f"{prefix}{k}" for k in sorted(set(recorded) - set(RECORDED)))
        if unknown:
            raise RunFactsError(
                f"{source}: tag {unknown}: not a fact this version of DermaOps records "
                f"({', '.join(RECORDED)}); was the run recorded by a newer one?"
            )
        try:
            return cls.model_validate(recorded)
        except ValidationError as e:
            problems = "; ".join(f"tag {prefix}{'.'.join(map(str, err['loc']))}: {err['msg']}"
                                 for err in e.errors())  # fmt: skip
            raise RunFactsError(f"{source}: {problems}") from e


def _text(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


@dataclass(frozen=True)
class RunOutcome:
    """How a run ended, in the words a summary needs."""

    pipeline: str
    run_id: str
    state: str  # SUCCEEDED, FAILED, ...
    failed_stage: str = ""
    error: str = ""
    facts: RunFacts = field(default_factory=RunFacts)

    @property
    def succeeded(self) -> bool:
        return self.state == "SUCCEEDED"


def summary_markdown(o: RunOutcome) -> str:
    """A short Markdown summary: state, the failed stage and why, then the run's facts."""
    mark = "succeeded" if o.succeeded else f"**{o.state.lower()}**"
    lines = [f"# DermaOps {o.pipeline} {mark}", "", f"Run `{o.run_id}`."]
    if not o.succeeded:
        stage = o.failed_stage or "unknown (see the run's logs)"
        lines += ["", f"Failed stage: **{stage}**"]
        if o.error:
            lines += ["", "```", o.error.strip()[:1500], "```"]
    rows = o.facts.rows()
    if rows:
        lines += ["", "| | |", "|---|---|"]
        lines += [f"| {key} | {value} |" for key, value in rows]
    return "\n".join(lines) + "\n"


def webhook_payload(o: RunOutcome) -> dict[str, str]:
    """One body that Slack and Discord incoming webhooks both accept."""
    return message(summary_markdown(o).replace("# ", "", 1))


def message(text: str) -> dict[str, str]:
    """``text`` as a body that Slack and Discord incoming webhooks both accept."""
    return {"text": text, "content": text[:DISCORD_LIMIT], "username": "DermaOps"}


def announce(text: str, url: str = "") -> bool:
    """Post ``text`` to the webhook (``url``, else ``$DERMAOPS_WEBHOOK_URL``) when there is one;
    whether it was delivered. A failure is logged, never raised: what is announced has happened
    already."""
    url = url or os.environ.get(WEBHOOK_ENV, "")
    if not url:
        return False
    try:
        post(url, message(text))
    except NotifyError as e:
        log.warning("could not announce %r: %s", text[:80], e)
        return False
    return True


def post(url: str, payload: dict[str, str], attempts: int = 3, backoff: float = 1.0) -> None:
    """POST ``payload`` to ``url``, retrying connection errors, 429 and 5xx.

    Raises:
        NotifyError: the hook answered 4xx (other than 429) or every attempt failed.
    """
    last = ""
    for attempt in range(attempts):
        try:
            response = httpx.post(url, json=payload, timeout=10.0)
        except httpx.HTTPError as e:
            last = f"{type(e).__name__}: {e}"
        else:
            if response.is_success:
                return
            last = f"HTTP {response.status_code}: {response.text[:200]}"
            if response.status_code != 429 and response.status_code < 500:
                raise NotifyError(f"webhook refused the message: {last}")
        if attempt + 1 < attempts:
            time.sleep(backoff * 2**attempt)
    raise NotifyError(f"webhook not reached after {attempts} attempts: {last}")
