"""The chart's rollout values reach the monitor as the settings the rollout driver reads
(the rendered env, read by the real settings loader), and a mode without canary weights is
refused when the chart renders, not minutes later in the monitor's loop."""

from __future__ import annotations

import pytest

from dermaops.rollout.plan import RolloutSettings
from dermaops.settings import load_settings
from tests.k8s.chart import CHART, URI, by_kind, helm, render

pytestmark = pytest.mark.k8s

ON = [*URI, "--set", "monitor.registry.trackingUri=http://mlflow:5000",
      "--set", "monitor.rollout.enabled=true"]  # fmt: skip


def _monitor_env(*args: str) -> dict[str, str]:
    monitor = next(d for d in by_kind(render(*args), "Deployment")
                   if d["metadata"]["name"].endswith("-monitor"))  # fmt: skip
    container = monitor["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def test_the_rendered_rollout_values_are_the_settings_the_driver_reads() -> None:
    env = _monitor_env(*ON, "--set", "kserve.deploymentMode=Serverless",
                       "--set", "monitor.rollout.steps={5,25,60}",
                       "--set", "monitor.rollout.minStageSeconds=300")  # fmt: skip
    s = load_settings(RolloutSettings, env_prefix="DERMAOPS_ROLLOUT_", environ=env)
    assert s.enabled and s.steps == [5, 25, 60] and s.min_stage_s == 300
    assert s.max_stage_s == 21600  # the chart's default, the settings' default too
    assert not any(k.startswith("DERMAOPS_ROLLOUT_") for k in _monitor_env(*URI))  # off: none


def test_rollouts_without_serverless_canary_weights_are_refused_at_render() -> None:
    done = helm("template", "dermaops", str(CHART), *ON)
    assert done.returncode != 0
    assert "monitor.rollout.enabled needs KServe's Serverless mode" in done.stderr
