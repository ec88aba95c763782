"""What the judge asks Prometheus, in one place (as an Argo Rollouts AnalysisTemplate keeps its
queries). The metric names are the predictor's (``serving/shadow.py``); the chart's rules and
dashboards use the same ones."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx

from dermaops.rollout.judge import ErrorCounts
from dermaops.rollout.plan import Rollout, RolloutError

# In shadow: requests the stable predictor mirrored to the challenger, and those that failed
# there (a 5xx, or no answer at all: a challenger that is down fails, it is not silent), over
# the stage so far.
SHADOW_REQUESTS = (
    "sum(increase(dermaops_shadow_requests_total"
    '{{outcome=~"answered|refused|error|unreachable"}}[{window}]))'
)
SHADOW_ERRORS = (
    'sum(increase(dermaops_shadow_requests_total{{outcome=~"error|unreachable"}}[{window}]))'
)


# By version: a candidate's own answers, refusals included (serving/telemetry.py's RESPONSES),
# where nothing mirrors to it from the stable predictor (a canary step, or a shadow the
# gateway mirrors).
VERSION_REQUESTS = (
    "sum(increase(dermaops_inference_responses_total{{model_version={version}}}[{window}]))"
)
VERSION_ERRORS = (
    "sum(increase(dermaops_inference_responses_total"
    '{{model_version={version},code="5xx"}}[{window}]))'
)


def label_value(value: str) -> str:
    """A PromQL string literal of ``value``."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


@dataclass(frozen=True)
class PrometheusCounts:
    """The challenger's request and 5xx counts from the Prometheus at ``url`` (its HTTP API)."""

    url: str
    timeout: float = 10.0

    def __call__(self, r: Rollout) -> ErrorCounts | None:
        """The candidate's requests and 5xx over ``r``'s stage so far: in shadow, those the
        stable predictor mirrored (a challenger that is down fails there), else, and in a
        shadow the gateway mirrors, the candidate's own answers by version.

        Raises:
            RolloutError: Prometheus did not answer, or answered an error: the stage waits.
        """
        window = f"{max(1, round(time.time() - r.stage_started))}s"
        if r.current.name == "shadow":
            mirrored = self.scalar(SHADOW_REQUESTS.format(window=window))
            if mirrored:
                return ErrorCounts(self.scalar(SHADOW_ERRORS.format(window=window)), mirrored)
        version = label_value(r.candidate)
        return ErrorCounts(
            errors=self.scalar(VERSION_ERRORS.format(version=version, window=window)),
            requests=self.scalar(VERSION_REQUESTS.format(version=version, window=window)),
        )

    def scalar(self, expr: str) -> float:
        """The value of an instant query that sums to one series (0 when it has none)."""
        try:
            answer: dict[str, Any] = httpx.get(
                f"{self.url.rstrip('/')}/api/v1/query", params={"query": expr},
                timeout=self.timeout,
            ).json()  # fmt: skip
        except (httpx.HTTPError, ValueError) as e:
            raise RolloutError(f"Prometheus at {self.url} did not answer {expr}: {e}") from e
        if answer.get("status") != "success":
            raise RolloutError(f"Prometheus at {self.url} refused {expr}: {answer.get('error')}")
        result = answer["data"]["result"]
        return float(result[0]["value"][1]) if result else 0.0
