"""A finished rollout in words: the section the version's model card gets when it ends.

The card is written at registration, before any clinician saw the version; the rollout adds
what the version answered live, against the version it was to replace: the outcome, each stage,
the last judgement's checks with their values, thresholds and verdicts, and the events.
"""

from __future__ import annotations

from datetime import UTC, datetime

from dermaops.rollout.plan import Rollout

SECTION = "## Rollout"


def _when(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


def _cell(value: object) -> str:
    return str(value).replace("|", "/").replace("\n", " ")


def rollout_markdown(r: Rollout) -> str:
    """The card's rollout section of ``r``."""
    stages = " -> ".join(s.label for s in r.stages)
    lines = [
        SECTION,
        "",
        f"Version {r.candidate} in place of version {r.stable}: **{r.status.replace('_', ' ')}** "
        f"in {r.current.label} ({stages}), started {_when(r.started)}.",
    ]
    if r.last is not None:
        score = "" if r.last.score is None else f", score {r.last.score:.2f}"
        lines += [
            "",
            f"Last judgement: **{r.last.verdict}**{score}: {_cell(r.last.reason)}.",
            "",
            "| check | value | threshold | verdict | critical | samples | detail |",
            "|---|---|---|---|---|---|---|",
        ]
        for c in r.last.checks:
            value = "-" if c.value is None else f"{c.value:g}"
            bound = f"{'>=' if c.direction == 'at_least' else '<='} {c.threshold:g}"
            lines.append(
                f"| {c.name} | {value} | {bound} | {c.verdict} | {'yes' if c.critical else 'no'} "
                f"| {c.samples} | {_cell(c.detail)} |"
            )
    if r.events:
        lines += ["", "| when | stage | action | by | why |", "|---|---|---|---|---|"]
        lines += [
            f"| {_when(e.at)} | {e.stage} | {e.action} | {_cell(e.by)} | {_cell(e.reason)} |"
            for e in r.events
        ]
    return "\n".join(lines) + "\n"


def with_rollout(card: str, r: Rollout) -> str:
    """``card`` (Markdown) with its rollout section replaced by ``r``'s, or added at the end."""
    kept = card.split(f"\n{SECTION}\n", 1)[0].rstrip("\n")
    return f"{kept}\n\n{rollout_markdown(r)}"
