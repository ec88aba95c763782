"""Alert rules and Alertmanager routing, checked by Prometheus's and Alertmanager's own tools."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.k8s.conftest import ROOT, find_tool

pytestmark = pytest.mark.k8s

RULES = ROOT / "charts" / "dermaops" / "files" / "alerts" / "dermaops.rules.yaml"
RULE_TESTS = Path(__file__).parent / "rules" / "dermaops_rules_test.yaml"
ALERTMANAGER = ROOT / "charts" / "dermaops" / "files" / "alertmanager" / "alertmanager.yaml"


def _run(*command: str, cwd: Path = ROOT) -> str:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{' '.join(command)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_rules_are_valid_and_their_unit_tests_pass() -> None:
    promtool = find_tool("promtool")
    assert "SUCCESS: 16 rules found" in _run(promtool, "check", "rules", str(RULES))
    assert "SUCCESS" in _run(promtool, "test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)


def test_every_alert_has_a_firing_test() -> None:
    rules = yaml.safe_load(RULES.read_text())
    alerts = {r["alert"] for group in rules["groups"] for r in group["rules"]}
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fired = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if case["exp_alerts"]
    }
    assert alerts == fired, f"alerts without a firing test: {sorted(alerts - fired)}"


def test_alertmanager_config_and_routes() -> None:
    amtool = find_tool("amtool")
    _run(amtool, "check-config", str(ALERTMANAGER))
    route = [amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER}"]
    drift = _run(*route, "alertname=DermaOpsDataDrift", "action=retrain", "severity=warning")
    assert drift.strip() == "dermaops-monitor,team-chat", "drift retrains and tells the team"
    missed = _run(*route, "alertname=DermaOpsMelanomaSensitivityLow", "action=retrain",
                  "severity=critical")  # fmt: skip
    assert missed.strip() == "dermaops-monitor,team-chat", "missed melanomas retrain and tell"
    strange = _run(*route, "alertname=DermaOpsManyImagesOutOfDistribution", "severity=warning")
    assert strange.strip() == "team-chat", "images the guard refuses are the team's to look at"
    errors = _run(*route, "alertname=DermaOpsHighErrorRate", "severity=critical")
    assert errors.strip() == "team-chat", "only retrain-labelled alerts reach the monitor"
