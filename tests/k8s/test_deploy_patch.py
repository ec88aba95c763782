"""`dermaops deploy` against the chart, from both ends: the patches the CLI prints, applied by a
real `kubectl patch --local --type json` to what helm renders, change only what a promotion
changes, keep every object strictly valid, and fail whole when the chart's fields moved."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from dermaops.deploy import SHADOW_URL_ENV, DeployRequest, Observed, Patch, observe, plan
from dermaops.errors import ConfigError
from dermaops.serving.__main__ import settings_from
from dermaops.v1 import SHADOW_HEADER
from tests.k8s.chart import CHART, KUBE_VERSION, URI, kubectl_patch, release_objects, render

pytestmark = pytest.mark.k8s

NEW_URI = "s3://dermaops-mlflow/artifacts/9/models/m-feedface/artifacts"
SHAPES = {  # variant -> (helm values, the deploy mode it needs)
    "defaults": ([*URI], "kserve"),
    "no-kserve": ([*URI, "--set", "kserve.enabled=false"], "deployment"),
    **{p.stem: (["-f", str(p)], "kserve") for p in sorted((CHART / "ci").glob("*-values.yaml"))},
}


def dermaops_deploy(*args: str) -> subprocess.CompletedProcess[str]:
    """The real command line, with no cluster to ask (so --mode decides)."""
    env = os.environ | {"KUBECONFIG": "/nonexistent", "KUBERNETES_SERVICE_HOST": ""}
    return subprocess.run([sys.executable, "-m", "dermaops", "deploy", *args],
                          capture_output=True, text=True, env=env, check=False)  # fmt: skip


def differences(a: Any, b: Any, at: str = "") -> Iterator[str]:
    """JSON pointers of every leaf that differs between two documents."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in a.keys() | b.keys():
            token = key.replace("~", "~0").replace("/", "~1")
            yield from differences(a.get(key), b.get(key), f"{at}/{token}")
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            yield from differences(x, y, f"{at}/{i}")
    elif a != b:
        yield at


def target(docs: list[dict[str, Any]], patch: dict[str, Any]) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == patch["kind"]
                and d["metadata"]["name"] == patch["name"]]  # fmt: skip
    return found


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_printed_patches_change_only_what_a_promotion_changes(
    shape: str, tmp_path: Path, validate_custom_resource: Callable[[dict[str, Any]], None]
) -> None:
    values, mode = SHAPES[shape]
    docs = render(*values)
    canary = ["--canary", "50"] if shape == "gpu-values" else []  # the Serverless shape
    done = dermaops_deploy("9", "--storage-uri", NEW_URI, "--mode", mode, "--dry-run", *canary)
    assert done.returncode == 0, done.stderr
    printed = [json.loads(line) for line in done.stdout.splitlines()]
    assert {(p["kind"], p["name"]) for p in printed} == {
        ("InferenceService" if mode == "kserve" else "Deployment",
         "dermaops" if mode == "kserve" else "dermaops-predictor"),
        ("Deployment", "dermaops-monitor"),
    }  # fmt: skip
    for patch in printed:
        before = target(docs, patch)
        after = kubectl_patch(before, patch["patch"], tmp_path)
        intended = {op["path"] for op in patch["patch"] if op["op"] != "test"}
        assert set(differences(before, after)) == intended, patch["name"]
        assert {str(op["value"]) for op in patch["patch"] if op["op"] != "test"} <= {
            "9",
            NEW_URI,
            "50",
        }, "a version, its URI, a canary: nothing else"
        if after["kind"] == "InferenceService":
            validate_custom_resource(after)
        else:
            kubernetes_validate.validate(after, KUBE_VERSION, strict=True)


def test_the_version_lands_wherever_the_chart_put_it(tmp_path: Path) -> None:
    docs = render(*URI, "--set", "kserve.enabled=false")
    promotion = DeployRequest("9", NEW_URI)
    for patch in plan(promotion, "dermaops", "dermaops", Observed("deployment")):
        after = kubectl_patch(target(docs, patch.as_dict()), patch.operations(), tmp_path)
        spec = after["spec"]["template"]["spec"]
        init_env = {e["name"]: e["value"] for e in spec["initContainers"][0]["env"]}
        env = {e["name"]: e["value"] for e in spec["containers"][0]["env"]}
        assert init_env["STORAGE_URI"] == NEW_URI, "what the storage initializer fetches"
        if patch.name.endswith("-predictor"):
            assert env["DERMAOPS_SERVING_MODEL_VERSION"] == "9"
            assert after["metadata"]["labels"]["dermaops.io/model-version"] == "9"
        else:
            assert env["DERMAOPS_MONITOR_REFERENCE_VERSION"] == "9"


def test_a_chart_whose_fields_moved_makes_the_patch_fail_whole(tmp_path: Path) -> None:
    docs = render(*URI)
    (patch, _) = plan(DeployRequest("9", NEW_URI), "dermaops", "dermaops", Observed("kserve"))
    isvc = target(docs, patch.as_dict())
    moved = copy.deepcopy(isvc)
    env = moved["spec"]["predictor"]["containers"][0]["env"]
    env.insert(0, {"name": "DERMAOPS_SERVING_TOP_K", "value": "3"})  # a new variable first
    with pytest.raises(AssertionError, match=r"testing value .* failed"):
        kubectl_patch(moved, patch.operations(), tmp_path)
    reasons = patch.broken_preconditions(moved)
    assert "DERMAOPS_SERVING_MODEL_VERSION is not env[0]" in reasons[0], reasons
    assert "STORAGE_URI is not env[1]" in reasons[1], reasons
    assert not patch.broken_preconditions(isvc), "the chart as it renders today"


def test_a_canary_is_refused_where_the_mode_has_none(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"needs the chart's canary Deployment"):
        plan(DeployRequest("9", NEW_URI, 20), "dermaops", "dermaops", Observed("deployment"))
    # RawDeployment's canary copies the served predictor: not without the cluster's copy.
    with pytest.raises(ConfigError, match="copies the served predictor"):
        plan(DeployRequest("9", NEW_URI, 20), "dermaops", "dermaops", Observed("kserve", False))
    # Without a cluster to ask, the Serverless patch's guard refuses a RawDeployment object.
    raw = render(*URI)
    unknown: Patch = plan(DeployRequest("9", NEW_URI, 20), "dermaops", "dermaops",
                          Observed("kserve"))[0]  # fmt: skip
    isvc = target(raw, unknown.as_dict())
    with pytest.raises(AssertionError, match=r"testing value .* failed"):
        kubectl_patch(isvc, unknown.operations(), tmp_path)
    assert any("Serverless" in r for r in unknown.broken_preconditions(isvc))
    done = dermaops_deploy("9", "--storage-uri", NEW_URI, "--mode", "deployment", "--canary",
                           "20", "--dry-run")  # fmt: skip
    assert done.returncode == 1 and "set predictor.canary.enabled=true" in done.stderr


def test_a_rawdeployment_canary_is_a_copy_of_the_served_predictor_and_full_drops_it(
    tmp_path: Path, validate_custom_resource: Callable[[dict[str, Any]], None]
) -> None:
    """KServe's RawDeployment from both ends: planned on the rendered InferenceService, applied
    by a real `kubectl patch --local`, valid against KServe's CRD at every step. A 20 % step adds
    `spec.canary` (the served predictor with the new version and URI) and leaves the stable
    predictor as it was; full serves the new version alone; a rollback (the stable version at
    100 %) drops the canary and changes nothing else."""
    docs = render(*URI)  # the chart's default mode
    isvc = release_objects(docs)["InferenceService"]
    assert isvc is not None
    stable = isvc["spec"]["predictor"]

    def step(obj: dict[str, Any], request: DeployRequest) -> dict[str, Any]:
        observed = observe({**release_objects(docs), "InferenceService": obj})
        (patch, _) = plan(request, "dermaops", "dermaops", observed)
        after = kubectl_patch(obj, patch.operations(), tmp_path)
        validate_custom_resource(after)
        return after

    canary = step(isvc, DeployRequest("9", NEW_URI, 20))
    assert set(differences(isvc, canary)) == {
        "/spec/canary",
        "/metadata/labels/dermaops.io~1model-version",
    }, "the stable as it was"
    (added,) = canary["spec"]["canary"]
    assert added["trafficPercent"] == 20
    env = {e["name"]: e["value"] for e in added["predictor"]["containers"][0]["env"][:2]}
    assert env == {"DERMAOPS_SERVING_MODEL_VERSION": "9", "STORAGE_URI": NEW_URI}
    assert set(differences(stable, added["predictor"])) == {
        "/containers/0/env/0/value",
        "/containers/0/env/1/value",
    }, "a copy, but for the version"

    served = {e["name"]: e["value"] for e in stable["containers"][0]["env"][:2]}
    rolled_back = step(canary, DeployRequest(served["DERMAOPS_SERVING_MODEL_VERSION"],
                                             served["STORAGE_URI"], 100))  # fmt: skip
    assert set(differences(isvc, rolled_back)) == set(), "the stable version alone, as before"
    full = step(canary, DeployRequest("9", NEW_URI))
    assert "canary" not in full["spec"]
    env = {e["name"]: e["value"] for e in full["spec"]["predictor"]["containers"][0]["env"][:2]}
    assert env == {"DERMAOPS_SERVING_MODEL_VERSION": "9", "STORAGE_URI": NEW_URI}

    # A predictor changed between reading and patching: the copy's guard refuses it, whole.
    (patch, _) = plan(DeployRequest("9", NEW_URI, 20), "dermaops", "dermaops",
                      observe(release_objects(docs)))  # fmt: skip
    changed = copy.deepcopy(isvc)
    changed["spec"]["predictor"]["minReplicas"] = 3
    broken = patch.broken_preconditions(changed)
    assert len(broken) == 1 and "since it was read" in broken[0], broken
    with pytest.raises(AssertionError, match=r"testing value .* failed"):
        kubectl_patch(changed, patch.operations(), tmp_path)


PLAIN_CANARY = [*URI, "--set", "kserve.enabled=false", "--set", "predictor.canary.enabled=true",
                "--set", "predictor.minReplicas=3"]  # fmt: skip
GATEWAY = ["--set", "predictor.canary.parentRefs[0].name=clinic-gateway",
           "--set", "predictor.canary.parentRefs[0].namespace=istio-system"]  # fmt: skip


def _render_route_filters(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    (route,) = [d for d in docs if d["kind"] == "HTTPRoute"]
    filters: list[dict[str, Any]] = route["spec"]["rules"][0]["filters"]
    return filters


def test_the_chart_and_the_deploy_name_the_same_shadow_header_and_only_the_canary_reads_it(
) -> None:  # fmt: skip
    """The header the route strips (as rendered) and sets in a shadow (as planned) is the one the
    predictor reads, and only the canary's container is told to read it (the real settings
    loader on the rendered env)."""
    docs = render(*PLAIN_CANARY, *GATEWAY)
    assert _render_route_filters(docs) == [
        {"type": "RequestHeaderModifier", "requestHeaderModifier": {"remove": [SHADOW_HEADER]}}
    ]
    for name, challenger in (("dermaops-predictor", False), ("dermaops-predictor-canary", True)):
        (deployment,) = [d for d in docs if d["kind"] == "Deployment"
                         and d["metadata"]["name"] == name]  # fmt: skip
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
        assert settings_from(container["args"], env)[1].challenger is challenger, name
    with pytest.raises(ConfigError, match=r"needs the chart's HTTPRoute.*parentRefs"):
        plan(DeployRequest("9", NEW_URI, 0, shadow_of="3"), "dermaops", "dermaops",
             observe(release_objects(render(*PLAIN_CANARY))))  # fmt: skip
    with pytest.raises(ConfigError, match=r"needs the chart's canary Deployment \(predictor"):
        plan(DeployRequest("9", NEW_URI, 0, shadow_of="3"), "dermaops", "dermaops",
             Observed("kserve", False))  # fmt: skip
    with pytest.raises(ConfigError, match="give both or neither"):
        DeployRequest("9", NEW_URI, 0)


def _applied(
    objects: dict[str, dict[str, Any]], patches: list[Patch], keys: dict[tuple[str, str], str],
    tmp: Path, validate_custom_resource: Callable[[dict[str, Any]], None],
) -> dict[str, Any]:  # fmt: skip
    """``patches`` applied by a real `kubectl patch --local` to ``objects`` (each found by its
    kind and name in ``keys``), their preconditions holding and every result strictly valid."""
    after = dict(objects)
    for patch in patches:
        key = keys[(patch.kind, patch.name)]
        assert not patch.broken_preconditions(objects[key])
        after[key] = kubectl_patch(objects[key], patch.operations(), tmp)
        if patch.kind in ("HTTPRoute", "InferenceService"):
            validate_custom_resource(after[key])
        else:
            kubernetes_validate.validate(after[key], KUBE_VERSION, strict=True)
    return after


def _weights(route: dict[str, Any]) -> list[int]:
    return [ref["weight"] for ref in route["spec"]["rules"][0]["backendRefs"]]


@pytest.mark.parametrize("route", [True, False], ids=["httproute", "replicas"])
def test_a_plain_canary_is_reached_only_where_its_route_or_the_replica_share_says(
    route: bool,
) -> None:
    """The canary Service reaches the canary alone; the predictor Service (the UI's) spans both
    Deployments for a replica share, but behind the route only the stable: there the route
    alone sends to the canary, its weight or a shadow's mirror."""
    docs = render(*PLAIN_CANARY, *(GATEWAY if route else []))
    services = {d["metadata"]["name"]: d["spec"]["selector"].items()
                for d in docs if d["kind"] == "Service"}  # fmt: skip
    pods = {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"].items()
            for d in docs if d["kind"] == "Deployment"}  # fmt: skip
    stable, canary = pods["dermaops-predictor"], pods["dermaops-predictor-canary"]
    assert services["dermaops-predictor-canary"] <= canary
    assert not services["dermaops-predictor-canary"] <= stable
    assert services["dermaops-predictor"] <= stable
    assert (services["dermaops-predictor"] <= canary) is not route


@pytest.mark.parametrize("route", [True, False], ids=["httproute", "replicas"])
def test_a_plain_deployment_canary_scales_its_own_deployment_and_full_scales_it_away(
    route: bool, tmp_path: Path, validate_custom_resource: Callable[[dict[str, Any]], None]
) -> None:
    """Without KServe, from both ends: planned on what helm renders, applied by a real
    `kubectl patch --local`, strictly valid at every step (the HTTPRoute against Gateway API
    v1.6.1's CRD). A 10 % step puts the version on the canary Deployment and gives it pods (the
    HTTPRoute's weights 90/10; without one, a replica share said in the note), the stable pods
    untouched; full serves the version on the stable Deployment and scales the canary to 0."""
    docs = render(*PLAIN_CANARY, *(GATEWAY if route else []))
    release = {key: obj for key, obj in release_objects(docs).items() if obj is not None}
    assert ("route" in release) is route
    keys = {("Deployment", "dermaops-predictor"): "predictor", ("HTTPRoute",
            "dermaops-predictor"): "route", ("Deployment", "dermaops-predictor-canary"): "canary",
            ("Deployment", "dermaops-monitor"): "monitor"}  # fmt: skip

    def planned(objects: dict[str, dict[str, Any]], request: DeployRequest) -> list[Patch]:
        return plan(request, "dermaops", "dermaops", observe(dict(objects)))

    def step(objects: dict[str, dict[str, Any]], request: DeployRequest) -> dict[str, Any]:
        return _applied(objects, planned(objects, request), keys, tmp_path,
                        validate_custom_resource)  # fmt: skip

    if route:  # a rollout's shadow first: every request mirrored to the canary, marked
        shadow = step(release, DeployRequest("9", NEW_URI, 0, shadow_of="3"))
        assert _weights(shadow["route"]) == [100, 0] and shadow["canary"]["spec"]["replicas"] == 3
        assert shadow["route"]["spec"]["rules"][0]["filters"] == [
            {"type": "RequestHeaderModifier",
             "requestHeaderModifier": {"set": [{"name": SHADOW_HEADER, "value": "3"}]}},
            {"type": "RequestMirror", "requestMirror": {
                "backendRef": {"name": "dermaops-predictor-canary", "port": 80}}},
        ]  # fmt: skip
    canary = step(shadow if route else release, DeployRequest("9", NEW_URI, 10))
    if route:  # callers cannot mark their own requests as shadows
        assert canary["route"]["spec"]["rules"][0]["filters"] == _render_route_filters(docs)
    assert set(differences(release["predictor"], canary["predictor"])) == {
        "/metadata/labels/dermaops.io~1model-version"}, "the stable pods as they were"  # fmt: skip
    pod = canary["canary"]["spec"]["template"]["spec"]
    assert pod["initContainers"][0]["env"][0] == {"name": "STORAGE_URI", "value": NEW_URI}
    assert pod["containers"][0]["env"][0]["value"] == "9"
    assert canary["canary"]["spec"]["replicas"] == 1
    if route:
        assert _weights(canary["route"]) == [90, 10], "ceil(3 x 10 %) = 1 pod behind 10 %"
    else:  # one pod beside the stable three: the least share there is, and said so
        (note,) = [p.note for p in planned(release, DeployRequest("9", NEW_URI, 10)) if p.note]
        assert "1 of 4 pods: about 25 %" in note and "asked 10 %" in note
        (most,) = [p for p in planned(release, DeployRequest("9", NEW_URI, 90)) if p.note]
        assert "canary 3 of 6 pods: about 50 %" in most.note, "never more pods than the stable"

    full = step(canary, DeployRequest("9", NEW_URI))
    assert full["canary"]["spec"]["replicas"] == 0
    env = full["predictor"]["spec"]["template"]["spec"]["containers"][0]["env"][0]
    assert env == {"name": "DERMAOPS_SERVING_MODEL_VERSION", "value": "9"}
    if not route:
        return
    assert _weights(full["route"]) == [100, 0]
    # A route whose backends were swapped: the weights' guard refuses it, whole.
    swapped = copy.deepcopy(release["route"])
    swapped["spec"]["rules"][0]["backendRefs"].reverse()
    (weights,) = [p for p in planned(release, DeployRequest("9", NEW_URI, 10))
                  if p.kind == "HTTPRoute"]  # fmt: skip
    assert len(weights.broken_preconditions(swapped)) == 2
    with pytest.raises(AssertionError, match=r"testing value .* failed"):
        kubectl_patch(swapped, weights.operations(), tmp_path)


@pytest.mark.parametrize("mode", ["RawDeployment", "Serverless"])
def test_under_kserve_a_shadow_patches_only_the_canary_deployment_and_a_step_empties_it(
    mode: str, tmp_path: Path, validate_custom_resource: Callable[[dict[str, Any]], None]
) -> None:
    """From both ends, planned on what helm renders and applied by a real `kubectl patch
    --local`: a shadow puts the candidate on the canary Deployment at the predictor's least
    replicas and waits for them, the InferenceService (what answers) not patched at all; the
    canary step after it is KServe's own and scales the canary Deployment back to 0."""
    docs = render(*URI, "--set", "predictor.canary.enabled=true", "--set",
                  f"kserve.deploymentMode={mode}", "--set", "predictor.minReplicas=2")  # fmt: skip
    release = {key: obj for key, obj in release_objects(docs).items() if obj is not None}
    observed = observe(dict(release))
    assert observed.mirrors and observed.replicas == 2
    rendered = release["InferenceService"]["spec"]["predictor"]["containers"][0]
    env = {e["name"]: e["value"] for e in rendered["env"] if "value" in e}
    shadow_url = settings_from(rendered["args"], env)[1].shadow_url
    assert shadow_url == env[SHADOW_URL_ENV], "the name the deploy looks for is the one read"
    unwired = copy.deepcopy(release)  # a predictor rendered before it could mirror
    container = unwired["InferenceService"]["spec"]["predictor"]["containers"][0]
    container["env"] = [e for e in container["env"] if e["name"] != SHADOW_URL_ENV]
    assert not observe(dict(unwired)).mirrors

    keys = {("Deployment", "dermaops-predictor-canary"): "canary",
            ("Deployment", "dermaops-monitor"): "monitor",
            ("InferenceService", "dermaops"): "InferenceService"}  # fmt: skip

    def applied(objects: dict[str, Any], patches: list[Patch]) -> dict[str, Any]:
        return _applied(objects, patches, keys, tmp_path, validate_custom_resource)

    patches = plan(DeployRequest("9", NEW_URI, 0, shadow_of="3"), "dermaops", "dermaops", observed)
    (home,) = patches
    assert (
        home.name == "dermaops-predictor-canary" and home.ready and "2 canary pod(s)" in home.note
    )
    shadow = applied(release, patches)
    assert shadow["InferenceService"] == release["InferenceService"]
    pod = shadow["canary"]["spec"]["template"]["spec"]
    assert pod["initContainers"][0]["env"][0] == {"name": "STORAGE_URI", "value": NEW_URI}
    assert (
        pod["containers"][0]["env"][0]["value"] == "9" and shadow["canary"]["spec"]["replicas"] == 2
    )
    assert shadow["canary"]["metadata"]["labels"]["dermaops.io/model-version"] == "9"

    step = applied(shadow, plan(DeployRequest("9", NEW_URI, 10), "dermaops", "dermaops",
                                observe(dict(shadow))))  # fmt: skip
    assert step["canary"]["spec"]["replicas"] == 0
    predictor = step["InferenceService"]["spec"]
    assert (predictor.get("canary") or [{}])[0].get("trafficPercent", predictor["predictor"].get(
        "canaryTrafficPercent")) == 10, "KServe's own canary takes the step"  # fmt: skip
    with pytest.raises(ConfigError, match="needs the chart's canary Deployment"):
        plan(DeployRequest("9", NEW_URI, 0, shadow_of="3"), "dermaops", "dermaops",
             observe(release_objects(render(*URI))))  # fmt: skip


def test_the_release_is_read_from_its_objects() -> None:
    serverless = render("-f", str(CHART / "ci" / "gpu-values.yaml"))
    plain = render(*URI, "--set", "kserve.enabled=false", "--set", "monitor.reference=/ref.csv")

    objects = release_objects
    assert observe(objects(serverless)) == Observed("kserve", True, True, True)
    assert observe(objects(plain)) == Observed("deployment", None, True, False)
    patches = plan(DeployRequest("9", NEW_URI), "dermaops", "dermaops", observe(objects(plain)))
    monitor = patches[-1].operations()
    assert not any("initContainers" in op["path"] for op in monitor), "its reference is yours"
    with pytest.raises(ConfigError, match="install the chart first"):
        observe({"InferenceService": None, "predictor": None, "monitor": None})


def test_uris_kserve_cannot_fetch_are_refused() -> None:
    for uri in ("models:/dermaops/3", "mlflow-artifacts:/1/abc/artifacts/model"):
        with pytest.raises(ConfigError, match="cannot fetch"):
            DeployRequest("3", uri)
    done = dermaops_deploy("3", "--storage-uri", "models:/dermaops@champion", "--dry-run")
    assert done.returncode == 1 and "cannot fetch" in done.stderr
