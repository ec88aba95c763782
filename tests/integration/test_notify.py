"""The exit handler's message: one body for Slack and Discord, posted to a real loopback hook."""

from __future__ import annotations

import json

import pytest

from dermaops.notify import NotifyError, RunOutcome, post, summary_markdown, webhook_payload
from tests.fault_server import FaultyServer

pytestmark = pytest.mark.integration

FAILED = RunOutcome(
    "training", "run-1", "FAILED", "gate", "GateFailedError: macro-F1 0.5 is not >= 0.6",
    {"mlflow_run": "abc"},
)  # fmt: skip


def test_summary_names_the_failed_stage_and_why() -> None:
    text = summary_markdown(FAILED)
    assert "**failed**" in text and "Failed stage: **gate**" in text
    assert "macro-F1 0.5 is not >= 0.6" in text and "| mlflow_run | abc |" in text
    ok = summary_markdown(RunOutcome("training", "run-2", "SUCCEEDED", facts={"promoted": "true"}))
    assert "succeeded" in ok and "Failed stage" not in ok


def test_payload_serves_slack_and_discord(http_server: FaultyServer) -> None:
    http_server.add("/hook", b"ok", "503")  # one busy answer, then accepted
    post(f"{http_server.url}/hook", webhook_payload(FAILED), backoff=0.01)
    assert len(http_server.posts) == 2
    body = json.loads(http_server.posts[-1][1])
    assert body["text"].startswith("DermaOps training") and body["content"] == body["text"]
    assert "gate" in body["content"]


def test_a_refused_hook_is_an_error_not_retried(http_server: FaultyServer) -> None:
    http_server.add("/hook", b"invalid_payload", "400")
    with pytest.raises(NotifyError, match="HTTP 400: invalid_payload"):
        post(f"{http_server.url}/hook", webhook_payload(FAILED), backoff=0.01)
    assert len(http_server.posts) == 1
    with pytest.raises(NotifyError, match="not reached after 2 attempts"):
        post("http://127.0.0.1:9/hook", {"text": "x"}, attempts=2, backoff=0.01)  # nothing listens


def test_discord_limit_is_respected() -> None:
    long = RunOutcome("training", "r", "FAILED", "train", "x" * 5000)
    assert len(webhook_payload(long)["content"]) <= 2000
