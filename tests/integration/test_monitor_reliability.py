"""The monitor under load and faults, as a process: nothing waits on a drift run, and its
retraining decisions survive a SIGKILL."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from dermaops.inference_log import LOG_NAME
from tests.integration.monitor_process import AUTH, monitor_process
from tests.integration.traffic import log_traffic

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STORM = {"alerts": [{"status": "firing", "labels": {"alertname": "DermaOpsDataDrift",
                                                    "action": "retrain"}}]}  # fmt: skip


def _big_log(raw: Path, folder: Path, rows: int) -> list[dict[str, object]]:
    """``rows`` records of generated traffic (a window large enough to make drift slow); the
    records the test itself will post, marked."""
    log_traffic(raw, folder, drifted=True)
    path = folder / LOG_NAME
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[i % len(lines)] for i in range(rows)) + "\n")
    return [{**json.loads(lines[i % len(lines)]), "request_id": f"load-{i}"} for i in range(1000)]


def _logged(folder: Path, prefix: str) -> int:
    return sum(line.count(f'"request_id":"{prefix}') for path in folder.glob(f"{LOG_NAME}*")
               for line in path.read_text().splitlines())  # fmt: skip


def test_records_alerts_and_scrapes_never_wait_for_a_drift_run(
    synth_raw: Path, prepared_small: Path, tmp_path: Path, dermaops_home: Path
) -> None:
    traffic = tmp_path / "traffic"
    records = _big_log(synth_raw, traffic, rows=200_000)
    env = {"DERMAOPS_DRIFT_WINDOW": "200000"}
    with monitor_process(dermaops_home, prepared_small / "reference_stats.csv", traffic,
                         "true", env=env, wait_for="/healthz") as monitor:  # fmt: skip
        url = monitor.url
        drift: dict[str, float] = {}
        timings: list[tuple[float, float]] = []  # (answered at, seconds waited)

        def run_drift() -> None:
            drift["start"] = time.monotonic()
            answer = httpx.post(f"{url}/drift", headers=AUTH, timeout=600)
            drift["end"] = time.monotonic()
            assert answer.status_code == 200, answer.text

        def timed(method: str, path: str, **kwargs: object) -> None:
            sent = time.monotonic()
            answer = httpx.request(method, f"{url}{path}", timeout=60, **kwargs)
            assert answer.status_code == 200, answer.text
            timings.append((time.monotonic(), time.monotonic() - sent))

        with ThreadPoolExecutor(9) as pool:
            futures = [pool.submit(run_drift)]
            time.sleep(0.5)  # the run has begun: reading the window, then Evidently
            for batch in range(100):
                body = {"records": records[batch * 10 : (batch + 1) * 10]}
                futures.append(pool.submit(timed, "POST", "/records", json=body, headers=AUTH))
                if batch % 10 == 0:
                    futures.append(pool.submit(timed, "GET", "/metrics"))
                    futures.append(pool.submit(timed, "POST", "/alerts", json={"alerts": []},
                                               headers=AUTH))  # fmt: skip
            for future in futures:
                future.result()  # a request's own failure, raised here

    assert len(timings) == 120
    took = drift["end"] - drift["start"]
    late = sum(at >= drift["end"] for at, _ in timings)
    assert not late, (f"{late} requests answered after the {took:.1f} s drift run ended: they "
                      "waited for it (or the run was too short to tell)")  # fmt: skip
    slowest = max(waited for _, waited in timings)
    assert slowest < took / 4, f"a request waited {slowest:.2f} s of a {took:.1f} s drift run"
    assert _logged(traffic, "load-") == 1000, "every record is in the log"


def test_a_restarted_monitor_keeps_the_cooldown_and_skips_torn_lines(
    synth_raw: Path, prepared_small: Path, tmp_path: Path, dermaops_home: Path
) -> None:
    traffic = log_traffic(synth_raw, tmp_path / "traffic", drifted=True)
    reference = prepared_small / "reference_stats.csv"
    marker = tmp_path / "runs"
    retrain = f"{sys.executable} -c \"open('{marker}', 'a').write('run\\n')\""
    out = dermaops_home / "monitoring"

    _start_a_run_then_sigkill(dermaops_home, reference, traffic, retrain, cooldown=3600)
    # Killed mid-write: a torn last line in the decision log and in the inference log.
    with (out / "triggers.jsonl").open("a") as f:
        f.write('{"time": "2026-11-29T00:00:00+00:00", "outc')
    with (traffic / LOG_NAME).open("a") as f:
        f.write('{"brightness": 0.4, "contr')

    with monitor_process(dermaops_home, reference, traffic, retrain) as second:
        again = httpx.post(f"{second.url}/alerts", json=STORM, headers=AUTH).json()
        assert again["outcome"] == "suppressed"
        assert again["reason"].startswith("within the cooldown")
        decisions = httpx.get(f"{second.url}/decisions").json()
        assert [d["outcome"] for d in decisions] == ["started", "suppressed"]
        assert "within the cooldown" in decisions[-1]["reason"]
        ok = {"records": [json.loads((traffic / LOG_NAME).read_text().splitlines()[0])]}
        assert httpx.post(f"{second.url}/records", json=ok, headers=AUTH).json()["accepted"] == 1
        assert httpx.post(f"{second.url}/drift", headers=AUTH, timeout=120).status_code == 200
    assert marker.read_text() == "run\n", "one run across the restart"
    logged = (second.log).read_text()
    assert "damaged line" in logged and "Traceback" not in logged


def test_a_run_still_in_flight_after_a_restart_blocks_a_second_one(
    synth_raw: Path, prepared_small: Path, tmp_path: Path, dermaops_home: Path
) -> None:
    """No cooldown: only the run itself, a process the killed monitor left running, holds."""
    traffic = log_traffic(synth_raw, tmp_path / "traffic", drifted=True)
    reference = prepared_small / "reference_stats.csv"
    pid_file = tmp_path / "pid"
    retrain = (f"{sys.executable} -c \"import os, time; open('{pid_file}', 'a')"
               f".write(str(os.getpid()) + '\\n'); time.sleep(60)\"")  # fmt: skip
    _start_a_run_then_sigkill(dermaops_home, reference, traffic, retrain, cooldown=0)
    (orphan,) = _pids(pid_file, 1)
    try:
        with monitor_process(dermaops_home, reference, traffic, retrain, cooldown=0) as second:
            held = httpx.post(f"{second.url}/alerts", json=STORM, headers=AUTH).json()
            assert held["outcome"] == "suppressed"
            assert held["reason"] == "a retraining run is in progress"
            os.kill(orphan, signal.SIGKILL)
            time.sleep(0.5)  # gone, or a zombie until init reaps it: not running either way
            after = httpx.post(f"{second.url}/alerts", json=STORM, headers=AUTH).json()
            assert after["outcome"] == "started"
    finally:
        for pid in _pids(pid_file, 2):  # the second run, and the orphan once more
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _start_a_run_then_sigkill(
    home: Path, reference: Path, traffic: Path, retrain: str, cooldown: float
) -> None:
    """A monitor whose alert starts a retraining run, then SIGKILLed (an OOM kill, a node lost)."""
    with monitor_process(home, reference, traffic, retrain, cooldown) as first:
        started = httpx.post(f"{first.url}/alerts", json=STORM, headers=AUTH).json()
        assert started["outcome"] == "started"
        os.kill(first.process.pid, signal.SIGKILL)
        first.process.wait()


def _pids(path: Path, count: int, timeout: float = 30) -> list[int]:
    """The pids the retraining runs wrote, once there are ``count`` (or what there is by then)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = [int(line) for line in path.read_text().split()] if path.is_file() else []
        if len(pids) >= count:
            return pids
        time.sleep(0.1)
    return pids
