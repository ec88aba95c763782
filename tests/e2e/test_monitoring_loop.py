"""The whole monitoring loop with real binaries on loopback.

The predictor serves a trained model and forwards its inference-log records to the monitor
(separate homes, as separate pods); Prometheus (Debian's) scrapes both with the project's
rules; shifted traffic (darker, blurred, bluer) makes the monitor's drift job report drift;
DermaOpsDataDrift fires; Alertmanager (Debian's), with the project's routing, posts it to the
monitor's /alerts and to the team chat; the monitor starts exactly one retraining run however
often Alertmanager repeats itself. Every wait polls an API.

Only timings are changed from the shipped configuration: scrape and evaluation every second,
the drift alert's hold time 1 s instead of 5 min, Alertmanager's waits 1-2 s; and the addresses,
which are loopback ports. The retraining command is a one-line script that records each start
(a real retraining run is the pipeline tests' business).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from dermaops.net import free_port, wait_until_ready
from dermaops.serving.process import predictor_process
from tests.conftest import Trained
from tests.e2e.conftest import DERMAOPS
from tests.fault_server import FaultyServer
from tests.k8s.conftest import find_tool
from tests.k8s.test_alerting import ALERTMANAGER, RULES
from tests.k8s.test_dashboard import dashboard_expressions, fill_variables
from tests.processes import start

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LOOP_TIMEOUT = 150  # seconds for traffic -> drift -> alert -> webhook -> run


@dataclass(frozen=True)
class Loop:
    predictor: str
    monitor: str
    prometheus: str
    alertmanager: str
    chat: FaultyServer
    runs: Path  # one line per retraining run started
    triggers: Path  # the monitor's record of every decision


def _rules_for_test(dest: Path, fast: tuple[str, ...]) -> None:
    """The project's rules; only the hold times of the alerts in ``fast`` shortened to 1 s."""
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") in fast:
                rule["for"] = "1s"
    dest.write_text(yaml.safe_dump(rules))


def _alertmanager_for_test(dest: Path, monitor: str, chat: str) -> None:
    """The project's routing with loopback receivers and second-scale waits."""
    config = yaml.safe_load(ALERTMANAGER.read_text())
    route = config["route"]
    route.update(group_wait="1s", group_interval="1s", repeat_interval="2s")
    for child in route["routes"]:
        child["group_wait"] = "1s"
    receivers = {r["name"]: r for r in config["receivers"]}
    webhook = receivers["dermaops-monitor"]["webhook_configs"][0]
    webhook["url"] = f"{monitor}/alerts"
    webhook["http_config"]["authorization"]["credentials_file"] = str(dest.parent / "token")
    (dest.parent / "chat-url").write_text(f"{chat}/slack")
    receivers["team-chat"]["slack_configs"][0]["api_url_file"] = str(dest.parent / "chat-url")
    dest.write_text(yaml.safe_dump(config))


def _prometheus_config(dest: Path, rules: Path, targets: dict[str, str], alertmanager: str) -> None:
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [target]}]}
            for job, target in targets.items()
        ],
    }
    dest.write_text(yaml.safe_dump(config))


def _poll(what: str, check: Callable[[], Any], seconds: float, logs: list[Path]) -> Any:
    """``check()`` until it returns something truthy; on timeout, fail with the logs' tails."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.5)
    tails = "\n".join(f"--- {p.name}\n{p.read_text()[-1500:]}" for p in logs if p.is_file())
    pytest.fail(f"{what}: not within {seconds:.0f} s\n{tails}")


def _query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert answer["status"] == "success", f"{expr}: {answer}"
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


@pytest.fixture
def loop(served_model: Path, tmp_path: Path, dermaops_home: Path) -> Iterator[Loop]:
    with running_loop(served_model, tmp_path, dermaops_home) as started:
        yield started


@contextmanager
def running_loop(
    served_model: Path,
    tmp_path: Path,
    dermaops_home: Path,
    monitor_args: tuple[str, ...] = (),
    predictor_env: dict[str, str] | None = None,
    fast: tuple[str, ...] = ("DermaOpsDataDrift",),
) -> Iterator[Loop]:
    """Predictor, monitor (``monitor_args`` more), Alertmanager and Prometheus on loopback,
    with the alerts in ``fast`` held 1 s instead of their shipped hold times."""
    prometheus_bin, alertmanager_bin = find_tool("prometheus"), find_tool("prometheus-alertmanager")
    ports = {name: free_port() for name in ("monitor", "prometheus", "alertmanager")}
    url = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    (tmp_path / "token").write_text("loop-test-token\n")  # the Secret all three read
    token = {"DERMAOPS_MONITOR_TOKEN_FILE": str(tmp_path / "token")}
    env = (
        os.environ
        | token
        | {
            "DERMAOPS_HOME": str(dermaops_home),
            "DERMAOPS_DRIFT_MIN_ROWS": "20",
            "DERMAOPS_ESTIMATE_MIN_RECORDS": "20",
        }
    )
    forwarding = token | {"DERMAOPS_SERVING_MONITOR_URL": url["monitor"]} | (predictor_env or {})
    runs = tmp_path / "retraining-runs"
    retrain = f"{sys.executable} -c \"open('{runs}', 'a').write('run\\n')\""
    logs = {name: tmp_path / f"{name}.log" for name in (*ports, "predictor")}
    with ExitStack() as stack:
        chat = stack.enter_context(FaultyServer())
        chat.add("/slack", b"ok")
        monitor = start(stack, [str(DERMAOPS), "monitor", "serve", "--port", str(ports["monitor"]),
                                 "--reference", str(served_model),
                                 "--interval", "2", "--cooldown", "3600",
                                 "--retrain-command", retrain, *monitor_args],
                        logs["monitor"], env)  # fmt: skip
        _rules_for_test(tmp_path / "rules.yaml", fast)
        _alertmanager_for_test(tmp_path / "alertmanager.yaml", url["monitor"], chat.url)
        alertmanager = start(stack, [alertmanager_bin,
                                      f"--config.file={tmp_path / 'alertmanager.yaml'}",
                                      f"--storage.path={tmp_path / 'am-data'}",
                                      f"--web.listen-address=127.0.0.1:{ports['alertmanager']}",
                                      "--cluster.listen-address="],
                              logs["alertmanager"])  # fmt: skip
        url["predictor"] = stack.enter_context(predictor_process(
            served_model, tmp_path / "predictor-home", logs["predictor"], env=forwarding
        ))  # fmt: skip
        targets = {"dermaops-predictor": url["predictor"].removeprefix("http://"),
                   "dermaops-monitor": f"127.0.0.1:{ports['monitor']}"}  # fmt: skip
        _prometheus_config(tmp_path / "prometheus.yml", tmp_path / "rules.yaml", targets,
                           f"127.0.0.1:{ports['alertmanager']}")  # fmt: skip
        prometheus = start(stack, [prometheus_bin, f"--config.file={tmp_path / 'prometheus.yml'}",
                                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                    f"--web.listen-address=127.0.0.1:{ports['prometheus']}"],
                            logs["prometheus"])  # fmt: skip
        wait_until_ready(f"{url['monitor']}/healthz", 60, monitor, logs["monitor"])
        wait_until_ready(f"{url['alertmanager']}/-/ready", 30, alertmanager, logs["alertmanager"])
        wait_until_ready(f"{url['prometheus']}/-/ready", 30, prometheus, logs["prometheus"])
        yield Loop(url["predictor"], url["monitor"], url["prometheus"], url["alertmanager"], chat,
                   runs, dermaops_home / "monitoring" / "triggers.jsonl")  # fmt: skip
        for name, path in logs.items():  # kept for a failing run's report
            (tmp_path / f"{name}.log.kept").write_bytes(path.read_bytes())


def test_drifted_traffic_fires_the_alert_and_starts_one_retraining_run(
    loop: Loop, synth_raw: Path, tmp_path: Path, cli: Callable[..., Any]
) -> None:
    logs = sorted(tmp_path.glob("*.log"))
    _poll("Prometheus scrapes both targets",
          lambda: len(_query(loop.prometheus, "up == 1")) == 2, 30, logs)  # fmt: skip
    out = cli("traffic", str(synth_raw), "--url", loop.predictor, "--n", "60", "--shifted").stdout
    assert "sent 60 shifted images" in out and "60 answered" in out
    httpx.post(f"{loop.predictor}/v1/models/dermaops:predict", json={"instances": [{"b64": "%"}]})

    summary = _poll("the monitor reports drift",
                    lambda: (s := httpx.get(f"{loop.monitor}/summary").json()).get("drifted") and s,
                    60, logs)  # fmt: skip
    assert {"brightness", "sharpness"} <= set(summary["drifted_columns"])
    assert {"embedding_pc1", "prediction", "confidence"} <= set(summary["columns"]), (
        "the model's own view is compared too"
    )
    forwarded = httpx.get(f"{loop.predictor}/metrics").text
    assert 'dermaops_monitor_records_total{outcome="sent"} 60.0' in forwarded
    firing = 'ALERTS{alertname="DermaOpsDataDrift", alertstate="firing"}'
    _poll("DermaOpsDataDrift fires in Prometheus",
          lambda: _query(loop.prometheus, firing), 30, logs)  # fmt: skip

    def decisions() -> list[dict[str, Any]]:
        if not loop.triggers.is_file():
            return []
        return [json.loads(line) for line in loop.triggers.read_text().splitlines()]

    # Alertmanager repeats the firing group every 2 s: wait for the run and two repeats.
    _poll("one run started and Alertmanager's repeats suppressed",
          lambda: len(decisions()) >= 3, LOOP_TIMEOUT, logs)  # fmt: skip
    outcomes = [d["outcome"] for d in decisions()]
    assert outcomes[0] == "started" and set(outcomes[1:]) == {"suppressed"}, outcomes
    assert decisions()[0]["alerts"] == ["DermaOpsDataDrift"]
    _poll("the retraining command ran", loop.runs.is_file, 30, logs)
    assert loop.runs.read_text() == "run\n", "exactly one retraining run"
    chat = [json.loads(body) for path, body in loop.chat.posts if path == "/slack"]
    assert any("DermaOpsDataDrift" in post.get("text", "") + json.dumps(post) for post in chat)

    from tests.log_scan import assert_no_image_data

    assert_no_image_data([*tmp_path.glob("*.log"), *tmp_path.rglob("predictions.jsonl*")])

    # Every dashboard query runs against real data; each has a series now (but the row of
    # clinicians' labels, which has data once there are labels: the melanoma test checks it;
    # and the rollout row, which has data in a rollout: tests/integration/test_rollout.py).
    drift_loop = [e for e in dashboard_expressions()
                  if not (_on_labels(e) or _on_rollout(e) or _against_labels(e))]  # fmt: skip
    empty = [e for e in drift_loop if not _query(loop.prometheus, fill_variables(e))]
    assert not empty, f"dashboard queries without data: {empty}"
    # Before any label: the served version's performance, estimated from its own answers.
    estimates = httpx.get(f"{loop.monitor}/estimates").json()
    assert any(isinstance(e, dict) and e["images"] >= 20 for e in estimates.values()), estimates


LABELS_METRICS = ("dermaops_live_", "dermaops_feedback_", "dermaops_registered_")


def _on_rollout(expr: str) -> bool:
    """A query of the dashboard's rollout row."""
    return "dermaops_rollout_" in expr or "dermaops_shadow_" in expr


def _against_labels(expr: str) -> bool:
    """A query of estimates set against labels: data once a version has both (the unit test of
    the monitor's export shows the gauges; this loop labels too few answers to estimate)."""
    return "dermaops_estimate_error" in expr or "dermaops_estimate_disagrees" in expr


def _on_labels(expr: str) -> bool:
    """A query of the dashboard's row of clinicians' labels."""
    return any(name in expr for name in LABELS_METRICS)


def test_missed_melanomas_on_clinicians_labels_fire_the_alert_and_start_one_run(
    served_model: Path, trained: Trained, tmp_path: Path, dermaops_home: Path
) -> None:
    """A model that misses melanoma on purpose (its operating point set where no image is
    flagged), registered with a melanoma sensitivity of 0.85; clinicians label 12 of its
    answers melanoma through the UI's own code; the monitor's live sensitivity drops,
    DermaOpsMelanomaSensitivityLow fires in Prometheus, Alertmanager posts it to the monitor,
    and one retraining run starts."""
    from dermaops.data.feedback import record_feedback
    from dermaops.registry import Registry
    from dermaops.registry.tags import MELANOMA_SENSITIVITY_TAG
    from dermaops.serving.smoke import lesion_jpeg
    from dermaops.ui.client import classify
    from tests.integration.test_registry import _register

    blind = tmp_path / "blind-model"
    shutil.copytree(served_model, blind)
    calibration = json.loads((blind / "calibration.json").read_text())
    (blind / "calibration.json").write_text(json.dumps(calibration | {"melanoma_threshold": 1.01}))
    reg = Registry()
    version = _register(reg, trained, "kfp-blind")
    reg.client.set_model_version_tag(
        reg.model_name, version, MELANOMA_SENSITIVITY_TAG, "0.8500"
    )  # as its card would say; the tiny model's own varies
    store = tmp_path / "feedback"
    flags = ("--feedback-dir", str(store), "--registry-model", reg.model_name)
    env = {"DERMAOPS_SERVING_MODEL_VERSION": version, "DERMAOPS_LIVE_BOOTSTRAP": "200"}
    fast = ("DermaOpsMelanomaSensitivityLow",)
    with running_loop(blind, tmp_path, dermaops_home, flags, env, fast) as loop:
        logs = sorted(tmp_path.glob("*.log"))
        for seed in range(12):  # what the clinician page does: ask, show, record the diagnosis
            image = lesion_jpeg(seed=100 + seed)
            answer = classify(loop.predictor, image)
            assert answer.model_version == version and not answer.melanoma_flag
            record_feedback(store, image, "mel", "Dr Loop", answer.model_version,
                            answer.top[0][0], melanoma_flag=answer.melanoma_flag)  # fmt: skip
        for seed in range(2):  # and two the clinician calls other than the model does
            image = lesion_jpeg(seed=200 + seed)
            answer = classify(loop.predictor, image)
            other = "bkl" if answer.top[0][0] != "bkl" else "df"
            record_feedback(store, image, other, "Dr Loop", answer.model_version,
                            answer.top[0][0], melanoma_flag=answer.melanoma_flag)  # fmt: skip
        live = f'dermaops_live_melanoma_sensitivity_lower{{version="{version}"}}'
        _poll("the monitor scores the labels", lambda: _query(loop.prometheus, live), 60, logs)
        firing = 'ALERTS{alertname="DermaOpsMelanomaSensitivityLow", alertstate="firing"}'
        (alert,) = _poll("DermaOpsMelanomaSensitivityLow fires in Prometheus",
                         lambda: _query(loop.prometheus, firing), 60, logs)  # fmt: skip
        assert alert["metric"]["version"] == version and alert["metric"]["action"] == "retrain"
        _poll("the retraining command ran", loop.runs.is_file, LOOP_TIMEOUT, logs)
        decisions = [json.loads(line) for line in loop.triggers.read_text().splitlines()]
        assert decisions[0]["alerts"] == ["DermaOpsMelanomaSensitivityLow"]
        assert loop.runs.read_text() == "run\n", "exactly one retraining run"
        labels_row = [e for e in dashboard_expressions() if _on_labels(e)]
        assert len(labels_row) == 7
        empty = [e for e in labels_row if not _query(loop.prometheus, fill_variables(e))]
        assert not empty, f"the labels row's queries without data: {empty}"
