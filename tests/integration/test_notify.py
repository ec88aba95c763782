"""The exit handler's message: one body for Slack and Discord, posted to a real loopback hook."""

from __future__ import annotations

import json

import pytest

from dermaops.notify import (
    NotifyError,
    RunFacts,
    RunFactsError,
    RunOutcome,
    post,
    summary_markdown,
    webhook_payload,
)
from tests.fault_server import FaultyServer

pytestmark = pytest.mark.integration

FAILED = RunOutcome(
    "training", "run-1", "FAILED", "gate", "GateFailedError: macro-F1 0.5 is not >= 0.6",
    RunFacts(mlflow_run="abc"),
)  # fmt: skip


def test_summary_names_the_failed_stage_and_why() -> None:
    text = summary_markdown(FAILED)
    assert "**failed**" in text and "Failed stage: **gate**" in text
    assert "macro-F1 0.5 is not >= 0.6" in text and "| mlflow_run | abc |" in text
    ok = summary_markdown(
        RunOutcome("training", "run-2", "SUCCEEDED", facts=RunFacts(promoted=True))
    )
    assert "succeeded" in ok and "Failed stage" not in ok and "| promoted | true |" in ok


def test_the_facts_read_back_are_listed_as_earlier_versions_listed_them() -> None:
    recorded = {"state": "SUCCEEDED", "promoted": "false", "registered_version": "3",
                "deployed": "version 3: patched InferenceService dermaops/dermaops"}  # fmt: skip
    facts = RunFacts.parse(recorded, "MLflow run r").model_copy(
        update={"mlflow_run": "r (experiment dermaops)", "test_f1_macro": 0.81234}
    )
    assert facts.promoted is False and facts.registered_version == "3"
    text = summary_markdown(RunOutcome("training", "kfp-1", "SUCCEEDED", facts=facts))
    assert text.endswith(
        "| | |\n|---|---|\n"
        "| deployed | version 3: patched InferenceService dermaops/dermaops |\n"
        "| promoted | false |\n| registered_version | 3 |\n| state | SUCCEEDED |\n"
        "| mlflow_run | r (experiment dermaops) |\n| test_f1_macro | 0.8123 |\n"
    )
    assert RunFacts.parse(recorded, "x").recorded() == recorded, "written as it is read"
    assert "| |" not in summary_markdown(RunOutcome("training", "kfp-2", "SUCCEEDED")), "none set"


@pytest.mark.parametrize(
    ("recorded", "refused"),
    [
        ({"colour": "blue"}, r"run r: tag dermaops\.fact\.colour: not a fact"),
        ({"mlflow_run": "x"}, r"run r: tag dermaops\.fact\.mlflow_run: not a fact"),
        ({"promoted": "True"}, r"run r: tag dermaops\.fact\.promoted: .*neither true nor false"),
        ({"registered_version": "three"}, r"run r: tag dermaops\.fact\.registered_version: "),
    ],
)
def test_facts_this_version_cannot_read_are_refused_naming_the_tag(
    recorded: dict[str, str], refused: str
) -> None:
    with pytest.raises(RunFactsError, match=refused):
        RunFacts.parse(recorded, "MLflow run r", "dermaops.fact.")


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
