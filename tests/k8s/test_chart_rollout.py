"""The chart's rollout values reach the monitor as the settings the rollout driver reads
(the rendered env, read by the real settings loader), and a release without a canary is
refused when the chart renders, not minutes later in the monitor's loop."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dermaops.rollout.judge import JudgeSettings
from dermaops.rollout.plan import RolloutSettings
from dermaops.serving.settings import ENV_PREFIX, ServingSettings
from dermaops.settings import load_settings
from tests.k8s.chart import CHART, ISTIO, URI, by_kind, helm, render

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


def test_the_charts_checks_are_the_judges_settings_name_for_name_and_overridable() -> None:
    """Every check's threshold has one default, the judge's, and the chart lists them all."""
    defaults = load_settings(
        RolloutSettings,
        env_prefix="DERMAOPS_ROLLOUT_",
        environ=_monitor_env(*ON, "--set", "kserve.deploymentMode=Serverless"),
    )
    assert defaults.judge == JudgeSettings()
    rendered = json.loads(_monitor_env(*ON, "--set", "kserve.deploymentMode=Serverless")[
        "DERMAOPS_ROLLOUT_JUDGE"])  # fmt: skip
    assert set(rendered) == set(JudgeSettings.model_fields), "every check in the values"
    schema = json.loads((CHART / "values.schema.json").read_text())
    checks = schema["properties"]["monitor"]["properties"]["rollout"]["properties"]["checks"]
    assert set(checks["properties"]) == set(JudgeSettings.model_fields), "and in the schema"
    tuned = load_settings(RolloutSettings, env_prefix="DERMAOPS_ROLLOUT_", environ=_monitor_env(
        *ON, "--set", "kserve.deploymentMode=Serverless",
        "--set", "monitor.rollout.checks.max_latency_ratio=2",
        "--set", "monitor.rollout.checks.min_pairs=500"))  # fmt: skip
    assert tuned.judge.max_latency_ratio == 2 and tuned.judge.min_pairs == 500


def test_rollouts_render_wherever_a_canary_has_weights_and_are_refused_elsewhere() -> None:
    """Serverless steps patch canaryTrafficPercent, RawDeployment's add spec.canary, the plain
    Deployment's scale its canary Deployment: all render; a plain Deployment without the canary
    Deployment has nowhere to put a candidate and is refused."""
    plain = ["--set", "kserve.enabled=false"]
    for shape in (["--set", "kserve.deploymentMode=Serverless"],
                  ["--set", "kserve.deploymentMode=RawDeployment"],
                  [*plain, "--set", "predictor.canary.enabled=true"]):  # fmt: skip
        env = _monitor_env(*ON, *shape)
        assert env["DERMAOPS_ROLLOUT_ENABLED"] == "true", shape
    done = helm("template", "dermaops", str(CHART), *ON, *plain)
    assert done.returncode != 0
    assert "monitor.rollout.enabled needs a canary" in done.stderr
    assert "predictor.canary.enabled" in done.stderr, "what to set instead"


def test_under_kserve_the_canary_deployment_is_the_shadows_home_and_only_the_predictor_reaches_it(
) -> None:  # fmt: skip
    """KServe has no mirror: the InferenceService's predictor mirrors to the canary Deployment's
    Service while the monitor's rollout says shadow. The rendered env, read by the predictor's
    own settings, names that Service; the canary's pods log what they get as shadow answers; the
    NetworkPolicy and the mesh let the predictor, and no one else new, reach them."""
    docs = render(*ON, *ISTIO, "--set", "predictor.canary.enabled=true")
    (isvc,) = by_kind(docs, "InferenceService")
    stable = isvc["spec"]["predictor"]["containers"][0]
    rendered = {e["name"]: e["value"] for e in stable["env"] if "value" in e}
    s = load_settings(ServingSettings, env_prefix=ENV_PREFIX, environ=rendered)
    services = {d["metadata"]["name"]: d for d in by_kind(docs, "Service")}
    host = s.shadow_url.removeprefix("http://").split(".")
    assert s.shadow_follows_rollout and s.monitor_url and not s.challenger
    assert host[0] in services and host[1] == "dermaops", "the canary's Service, in the release's"
    canary_service = services[host[0]]
    deployments = {d["metadata"]["name"]: d for d in by_kind(docs, "Deployment")}
    canary = deployments["dermaops-predictor-canary"]
    assert canary["spec"]["replicas"] == 0, "no pods between rollouts"
    pod = canary["spec"]["template"]
    assert canary_service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert not canary_service["spec"]["selector"].items() <= isvc["spec"]["predictor"][
        "labels"].items(), "the Service does not reach KServe's own pods"  # fmt: skip
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    challenger = load_settings(ServingSettings, env_prefix=ENV_PREFIX, environ=env)
    assert challenger.challenger and not challenger.shadow_url
    assert "dermaops-predictor" not in deployments, "KServe serves the stable version"

    policies = {d["metadata"]["name"]: d for d in by_kind(docs, "NetworkPolicy")}
    mirror = policies["dermaops-predictor-canary"]["spec"]
    assert mirror["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    (rule,) = mirror["ingress"]
    assert rule["ports"] == [{"port": 8080, "protocol": "TCP"}]
    assert rule["from"][0]["podSelector"]["matchLabels"].items() <= isvc["spec"]["predictor"][
        "labels"].items(), "from the InferenceService's predictor pods"  # fmt: skip
    mesh = {d["metadata"]["name"]: d["spec"] for d in by_kind(docs, "AuthorizationPolicy")}
    predictor = ["cluster.local/ns/dermaops/sa/default"]
    home = mesh["dermaops-predictor-canary"]
    assert home["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert not home["selector"]["matchLabels"].items() <= isvc["spec"]["predictor"][
        "labels"].items(), "KServe's own pods get no new caller"  # fmt: skip
    (mirror_rule,) = home["rules"]
    assert mirror_rule["from"][0]["source"]["principals"] == predictor
    assert mirror_rule["to"] == [{"operation": {"methods": ["POST"], "paths": ["/v1/models/*"]}}]

    def principals(rule: dict[str, Any]) -> Any:
        return rule.get("from", [{}])[0].get("source", {}).get("principals")

    (asks,) = [r for r in mesh["dermaops-monitor"]["rules"] if principals(r) == predictor]
    assert {"operation": {"methods": ["GET"], "paths": ["/rollout"]}} in asks["to"], (
        "the watch may ask the monitor when to mirror"
    )
    assert "STORAGE_URI" not in env, "the canary's model comes from its own storage initializer"

    plain = render(*ON, "--set", "predictor.canary.enabled=false")
    assert not any("SHADOW" in e["name"] for e in by_kind(plain, "InferenceService")[0]["spec"][
        "predictor"]["containers"][0]["env"]), "without the canary nothing mirrors"  # fmt: skip
    names = {d["metadata"]["name"] for d in by_kind(plain, "NetworkPolicy")}
    assert "dermaops-predictor-canary" not in names
    alone = helm("template", "dermaops", str(CHART), *URI, "--set", "predictor.canary.enabled=true",
                 "--set", "monitor.enabled=false")  # fmt: skip
    assert alone.returncode != 0 and "the monitor drives rollouts" in alone.stderr, alone.stderr
