"""The Grafana dashboard: its layout, and every PromQL expression parsed by promtool and
naming only metrics the predictor and the monitor really export."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

from tests.k8s.conftest import ROOT, find_tool
from tests.k8s.test_alerting import RULES, _run

pytestmark = pytest.mark.k8s

DASHBOARD = ROOT / "charts" / "dermaops" / "files" / "dashboards" / "dermaops.json"
# Grafana's variables, as Grafana would fill them in, so promtool can parse the rest.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "30s", "$__range": "6h"}
SUFFIXES = re.compile(r"_(bucket|sum|count|total)$")


def dashboard_expressions() -> list[str]:
    """Every query of the dashboard: panel targets and annotations."""
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [a["expr"] for a in dashboard["annotations"]["list"]]
    return exprs


def fill_variables(expr: str) -> str:
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    return expr


def _exported_metrics() -> set[str]:
    """Family names the predictor (default registry) and the monitor (its own) register."""
    import dermaops.serving.shadow  # registers the predictor's mirror counter
    import dermaops.serving.telemetry  # noqa: F401  registers the predictor's metrics
    from dermaops.monitoring.service import Monitor, MonitorSettings

    settings = MonitorSettings(reference="r.csv", inference_log="log", out="out", token="t")
    monitor = Monitor(settings)
    return {m.name for r in (REGISTRY, monitor.registry) for m in r.collect()}


def _named_metrics(expr: str) -> set[str]:
    return {SUFFIXES.sub("", name) for name in re.findall(r"\bdermaops_[a-z_]+\b", expr)}


def test_dashboard_layout() -> None:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "dermaops-overview"
    assert [v["name"] for v in dashboard["templating"]["list"]] == ["datasource"]
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    cells: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        g = panel["gridPos"]
        area = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert g["x"] + g["w"] <= 24 and not area & cells, f"{panel['title']} overlaps"
        cells |= area
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}" and panel["targets"], panel["title"]
        assert panel["description"], f"{panel['title']} says nothing about what it shows"
    titles = " ".join(p["title"].lower() for p in panels)
    for topic in ("latency", "requests", "errors", "class mix", "confidence", "drift", "model"):
        assert topic in titles, topic


def test_every_expression_parses_with_promtool(tmp_path: Path) -> None:
    promtool = find_tool("promtool")
    exprs = dashboard_expressions()
    recorded = [{"record": f"dermaops:dashboard:{i}", "expr": fill_variables(e)}
                for i, e in enumerate(exprs)]  # fmt: skip
    rules = {"groups": [{"name": "dashboard", "rules": recorded}]}
    (tmp_path / "dashboard.rules.yaml").write_text(yaml.safe_dump(rules))
    out = _run(promtool, "check", "rules", str(tmp_path / "dashboard.rules.yaml"))
    assert f"SUCCESS: {len(exprs)} rules found" in out


def test_dashboard_and_alerts_name_only_exported_metrics() -> None:
    exported = _exported_metrics()
    alerts = yaml.safe_load(RULES.read_text())
    queries = dashboard_expressions()
    queries += [r["expr"] for g in alerts["groups"] for r in g["rules"]]
    named = set().union(*(_named_metrics(q) for q in queries))
    assert named, "no dermaops metric found in the queries"
    assert named <= exported, f"not exported by anything: {sorted(named - exported)}"
    shown = set().union(*(_named_metrics(q) for q in dashboard_expressions()))
    assert {"dermaops_request_duration_seconds", "dermaops_drift_share", "dermaops_model_info",
            "dermaops_predictions", "dermaops_confidence"} <= shown  # fmt: skip
