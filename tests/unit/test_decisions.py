"""The monitor's decisions on disk (monitoring/decisions.py) and torn JSON lines."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dermaops.inference_log import LOG_NAME, InferenceLog, end_torn_line, parse_json_lines
from dermaops.monitoring.decisions import (
    LastRun,
    append_decision,
    load_last_run,
    process_start,
    read_decisions,
    save_last_run,
)


def test_the_state_round_trips_and_replaces_atomically(tmp_path: Path) -> None:
    assert load_last_run(tmp_path) is None
    save_last_run(tmp_path, LastRun(100.0))
    save_last_run(tmp_path, LastRun(200.0, 42, "777"))
    assert load_last_run(tmp_path) == LastRun(200.0, 42, "777")
    assert [p.name for p in tmp_path.iterdir()] == ["retraining.json"], "no temporary left"


@pytest.mark.parametrize("text", ["", "{", "[]", '{"pid": 3}', '{"started": "soon"}'])
def test_an_unreadable_state_is_reported_and_ignored(
    tmp_path: Path, text: str, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "retraining.json").write_text(text)
    with caplog.at_level(logging.WARNING):
        assert load_last_run(tmp_path) is None
    assert "ignoring the retraining state" in caplog.text


def test_a_run_is_alive_only_while_that_very_process_runs() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        run = LastRun(0.0, child.pid, process_start(child.pid))
        assert run.pid_start and run.alive()
        assert not LastRun(0.0, child.pid, "1").alive(), "the pid reused by another process"
    finally:
        child.kill()
        child.wait()
    assert not run.alive() and process_start(child.pid) == ""
    assert not LastRun(0.0).alive(), "decided, not started"
    assert process_start(os.getpid())


def test_torn_lines_are_ended_then_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    append_decision(tmp_path, {"outcome": "started"})
    with (tmp_path / "triggers.jsonl").open("a") as f:
        f.write('{"outcome": "sta')  # killed mid-write
    append_decision(tmp_path, {"outcome": "suppressed"})
    with caplog.at_level(logging.WARNING):
        assert [d["outcome"] for d in read_decisions(tmp_path, 10)] == ["started", "suppressed"]
    assert "skipped 1 damaged line" in caplog.text
    assert read_decisions(tmp_path, 1) == [{"outcome": "suppressed"}]
    assert read_decisions(tmp_path / "none", 5) == []


def test_the_inference_log_ends_a_torn_line_before_appending(tmp_path: Path) -> None:
    (tmp_path / LOG_NAME).write_text('{"a": 1}\n{"a": 2, "b')
    log = InferenceLog(tmp_path)
    log.write({"a": 3})
    log.close()
    records = parse_json_lines((tmp_path / LOG_NAME).read_bytes(), tmp_path)
    assert [r["a"] for r in records] == [1, 3]
    assert not end_torn_line(tmp_path / LOG_NAME), "already ended"
    assert parse_json_lines(b'[1]\n\n{"x": 1}\n\xff\n', tmp_path) == [json.loads('{"x": 1}')]
