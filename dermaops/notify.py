"""Tell people how a pipeline run ended: a Markdown summary and a chat webhook.

The JSON body carries ``text`` (Slack) and ``content`` (Discord); each service ignores the
other's field, so one webhook URL of either kind works.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field

import httpx

from dermaops.errors import DermaOpsError

log = logging.getLogger(__name__)

DISCORD_LIMIT = 2000
WEBHOOK_ENV = "DERMAOPS_WEBHOOK_URL"  # a Secret in the chart; the pipelines and the monitor read it


class NotifyError(DermaOpsError):
    """The webhook refused the message or could not be reached."""


@dataclass(frozen=True)
class RunOutcome:
    """How a run ended, in the words a summary needs."""

    pipeline: str
    run_id: str
    state: str  # SUCCEEDED, FAILED, ...
    failed_stage: str = ""
    error: str = ""
    facts: dict[str, str] = field(default_factory=dict)

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
    if o.facts:
        lines += ["", "| | |", "|---|---|"]
        lines += [f"| {key} | {value} |" for key, value in o.facts.items()]
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
