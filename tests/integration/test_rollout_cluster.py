"""Whole rollouts on a release of the chart, driven by the rollout driver against the loopback
Kubernetes API of `test_deploy_cluster.py` (the chart's rendered objects, JSON patches applied by
a real `kubectl patch --local`, Deployments rolled out by its controller) and the real MLflow
registry on sqlite: KServe's canary in both modes, the plain Deployment's HTTPRoute from its
mirrored shadow, and the shadow on the canary Deployment under KServe. The inference log is
written as the predictors write it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from dermaops.rollout.plan import Rollout
from tests.conftest import Trained
from tests.integration.test_deploy_cluster import PATHS, FakeApi, _api, _on_cluster
from tests.k8s.chart import URI, render

pytestmark = pytest.mark.integration


def _answers(folder: Path, version: str, n: int, flag_every: int) -> None:
    """``n`` answers of ``version`` as its predictor logs them (after the rollout's stage
    began), one in ``flag_every`` flagged melanoma."""
    from dermaops.inference_log import LOG_NAME

    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    with (folder / LOG_NAME).open("a") as log:
        for i in range(n):
            flagged = i % flag_every == 0
            log.write(json.dumps({"time": now, "request_id": f"{version}-{i}",
                                  "model_version": version, "melanoma": flagged,
                                  "prediction": "mel" if flagged else "nv"}) + "\n")  # fmt: skip


def _paired(folder: Path, stable: str, candidate: str, n: int, lost: bool) -> None:
    """``n`` requests answered by ``stable`` and mirrored to ``candidate`` (one request id, the
    candidate's marked shadow), one in four flagged melanoma by the stable version; ``lost``:
    the candidate flags none of them."""
    from dermaops.inference_log import LOG_NAME

    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    with (folder / LOG_NAME).open("a") as log:
        for i in range(n):
            flagged = i % 4 == 0
            kept = flagged and not lost
            common = {"time": now, "request_id": f"{stable}-{candidate}-{i}",
                      "in_distribution": True}  # fmt: skip
            for version, flag, shadow in (
                (stable, flagged, {}),
                (candidate, kept, {"shadow": True}),
            ):
                record = {
                    **common,
                    "model_version": version,
                    "melanoma": flag,
                    "prediction": "mel" if flag else "nv",
                    "p_mel": 0.9 if flag else 0.1,
                }
                log.write(json.dumps(record | shadow) + "\n")


@dataclass
class OnRelease:
    """A rollout driven on a release the loopback API holds: three registered versions, the
    first champion and served."""

    api: FakeApi
    reg: Any  # dermaops.registry.Registry (imported inside: MLflow loads only where needed)
    release: Any  # dermaops.registry.serving.ClusterServing
    driver: Any  # dermaops.registry.rollout.RolloutDriver
    logs: Path
    versions: tuple[str, str, str]


@contextmanager
def _rollout_on_release(
    objects: list[dict[str, Any]], tmp_path: Path, trained: Trained,
    monkeypatch: pytest.MonkeyPatch, prefix: str,
) -> Iterator[OnRelease]:  # fmt: skip
    from dermaops.registry import Registry
    from dermaops.registry.promotion import promote_stored
    from dermaops.registry.reconcile import reconcile
    from dermaops.registry.rollout import RolloutDriver, log_records
    from dermaops.registry.serving import ClusterServing
    from dermaops.rollout.judge import JudgeSettings
    from dermaops.rollout.plan import RolloutSettings, RolloutStore
    from tests.integration.test_registry import _register

    for api, kubeconfig in _api(objects, tmp_path):
        _on_cluster(kubeconfig, monkeypatch)
        reg, release, logs = Registry(), ClusterServing("dermaops", "dermaops"), tmp_path / "log"
        first, second, third = (_register(reg, trained, f"{prefix}-{i}") for i in range(3))
        assert promote_stored(reg, first, None, False).promoted
        assert reconcile(reg, release).served == first
        settings = RolloutSettings(enabled=True, steps=[10, 50], min_stage_s=0,
                                   judge=JudgeSettings(min_requests=50, min_pairs=50))  # fmt: skip
        driver = RolloutDriver(reg, release, RolloutStore(tmp_path / "state"), settings,
                               log_records(logs))  # fmt: skip
        yield OnRelease(api, reg, release, driver, logs, (first, second, third))


def _a_collapsed_canary_rolled_back(on: OnRelease) -> Rollout:
    """The third version promoted over the second and rolled out; in its first canary step it
    flags one in forty where the second flags a quarter: rolled back at once. The rollout."""
    from dermaops.registry.promotion import promote_stored
    from dermaops.registry.reconcile import reconcile

    _, second, third = on.versions
    assert promote_stored(on.reg, third, None, False).promoted
    assert "rolling out (canary 10%)" in reconcile(on.reg, on.release, on.driver).action
    _answers(on.logs, second, 80, 4)  # a quarter flagged
    _answers(on.logs, third, 80, 40)  # one in forty
    r, done = on.driver.tick()
    assert done == "roll_back" and r is not None and r.status == "rolled_back", r
    return r


def test_a_rollout_on_the_release_moves_kserve_canary_weights_and_rolls_back_a_worse_one(
    tmp_path: Path, trained: Trained, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Serverless mode: each canary step patches canaryTrafficPercent onto the candidate
    (10, 50, then 100 at full); a candidate whose melanoma-flag rate collapsed in its canary is
    rolled back: the champion alias restored and the stable version patched back at 100 %."""
    from dermaops.registry.promotion import alias_version, promote_stored, rollback
    from dermaops.registry.reconcile import reconcile

    objects = render(*URI, "--set", "kserve.deploymentMode=Serverless")
    with _rollout_on_release(objects, tmp_path, trained, monkeypatch, "kfp-roll") as on:
        api, reg, release, driver, logs = on.api, on.reg, on.release, on.driver, on.logs
        first, second, third = on.versions

        def weights(api: FakeApi = api) -> list[Any]:
            sent = [body for method, path, _, body in api.requests
                    if method == "PATCH" and "inferenceservices" in path]  # fmt: skip
            return [c["value"] for body in sent for c in body
                    if c["path"] == "/spec/predictor/canaryTrafficPercent"]  # fmt: skip

        assert promote_stored(reg, second, None, False).promoted
        assert "rolling out (canary 10%)" in reconcile(reg, release, driver).action
        assert weights() == [10] and release.version() == second
        for expected, action in (([10, 50], "next"), ([10, 50, 100], "promote")):
            _answers(logs, first, 60, 4)
            _answers(logs, second, 60, 4)
            r, done = driver.tick()
            assert done == action and weights() == expected, r
        assert r is not None and r.status == "promoted"

        r = _a_collapsed_canary_rolled_back(on)
        assert r.last is not None and "melanoma_flag_rate_drop" in r.last.reason
        assert weights()[-2:] == [10, 100] and release.version() == second
        assert alias_version(reg, "champion") == second
        isvc = api.objects[f"{PATHS['InferenceService']}/dermaops"]
        assert isvc["spec"]["predictor"]["canaryTrafficPercent"] == 100

        # Version 3 again, rolled back by hand mid-canary: the rollout ends as superseded and
        # the champion is served at 100 % (not at the canary's 10 %).
        assert promote_stored(reg, third, None, False).promoted
        assert "rolling out (canary 10%)" in reconcile(reg, release, driver).action
        rollback(reg, "not today", to=second)
        r, done = driver.tick()
        assert done == "wait" and r is not None and r.status == "superseded"
        assert weights()[-2:] == [10, 100] and release.version() == second


def test_a_rollout_in_rawdeployment_mode_adds_and_drops_the_inferenceservices_canary(
    tmp_path: Path, trained: Trained, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RawDeployment mode (the chart's default): each canary step sets `spec.canary` to the
    served predictor copied with the candidate's version at the step's percent, the stable
    predictor untouched; full serves the candidate alone; a worse candidate is rolled back and
    its canary dropped, the stable predictor as it was."""
    from dermaops.registry.promotion import alias_version, promote_stored
    from dermaops.registry.reconcile import reconcile

    with _rollout_on_release(render(*URI), tmp_path, trained, monkeypatch, "kfp-raw") as on:
        api, reg, release, driver, logs = on.api, on.reg, on.release, on.driver, on.logs
        first, second, _ = on.versions

        def spec(api: FakeApi = api) -> dict[str, Any]:
            isvc: dict[str, Any] = api.objects[f"{PATHS['InferenceService']}/dermaops"]
            return isvc["spec"]

        def versions(predictor: dict[str, Any]) -> str:
            return str(predictor["containers"][0]["env"][0]["value"])

        assert promote_stored(reg, second, None, False).promoted
        assert "rolling out (canary 10%)" in reconcile(reg, release, driver).action
        (canary,) = spec()["canary"]
        assert canary["trafficPercent"] == 10 and versions(canary["predictor"]) == second
        assert versions(spec()["predictor"]) == first, "the stable predictor serves the rest"
        for percent, action in ((50, "next"), (None, "promote")):
            _answers(logs, first, 60, 4)
            _answers(logs, second, 60, 4)
            r, done = driver.tick()
            assert done == action, r
            if percent is not None:
                assert [c["trafficPercent"] for c in spec()["canary"]] == [percent]
        assert "canary" not in spec() and versions(spec()["predictor"]) == second
        assert r is not None and r.status == "promoted" and release.version() == second

        _a_collapsed_canary_rolled_back(on)
        assert "canary" not in spec() and versions(spec()["predictor"]) == second
        assert release.version() == second and alias_version(reg, "champion") == second


def test_a_rollout_without_kserve_starts_in_a_mirrored_shadow_and_moves_the_routes_weights(
    tmp_path: Path, trained: Trained, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plain Deployment behind the chart's HTTPRoute: the rollout starts in shadow (the route
    mirrors every request to the canary Deployment, marked a shadow of the stable version, its
    weights 100/0), moves on the paired checks to 10 and 50 % and is promoted (the stable
    Deployment serves the candidate, the canary at 0 pods, the route 100/0 and stripping the
    header again); a candidate that lost its melanoma flags is rolled back in its shadow."""
    from dermaops.registry.promotion import alias_version, promote_stored
    from dermaops.registry.reconcile import reconcile

    objects = render(*URI, "--set", "kserve.enabled=false",
                     "--set", "predictor.canary.enabled=true",
                     "--set", "predictor.canary.parentRefs[0].name=clinic-gateway")  # fmt: skip
    with _rollout_on_release(objects, tmp_path, trained, monkeypatch, "kfp-plain") as on:
        api, reg, release, driver, logs = on.api, on.reg, on.release, on.driver, on.logs
        first, second, third = on.versions
        route, canary = (f"{PATHS['HTTPRoute']}/dermaops-predictor",
                         f"{PATHS['Deployment']}/dermaops-predictor-canary")  # fmt: skip

        def weights(api: FakeApi = api) -> list[int]:
            return [ref["weight"] for ref in api.objects[route]["spec"]["rules"][0]["backendRefs"]]

        def mirrored(api: FakeApi = api) -> bool:
            filters = api.objects[route]["spec"]["rules"][0]["filters"]
            return any(f["type"] == "RequestMirror" for f in filters)

        assert promote_stored(reg, second, None, False).promoted
        assert "rolling out (shadow)" in reconcile(reg, release, driver).action
        assert mirrored() and weights() == [100, 0] and api.objects[canary]["spec"]["replicas"] == 1
        _paired(logs, first, second, 60, lost=False)
        r, done = driver.tick()
        assert done == "next" and weights() == [90, 10] and not mirrored(), r
        for expected, action in (([50, 50], "next"), ([100, 0], "promote")):
            _answers(logs, first, 60, 4)
            _answers(logs, second, 60, 4)
            r, done = driver.tick()
            assert done == action and weights() == expected, r
        assert r is not None and r.status == "promoted" and release.version() == second
        assert api.objects[canary]["spec"]["replicas"] == 0 and not mirrored()

        assert promote_stored(reg, third, None, False).promoted
        assert "rolling out (shadow)" in reconcile(reg, release, driver).action
        _paired(logs, second, third, 60, lost=True)
        r, done = driver.tick()
        assert done == "roll_back" and r is not None and r.status == "rolled_back", r
        assert r.last is not None and "melanoma_flips" in r.last.reason
        assert weights() == [100, 0] and not mirrored()
        assert release.version() == second and alias_version(reg, "champion") == second


def test_under_kserve_a_rollout_starts_in_a_shadow_on_the_canary_deployment(
    tmp_path: Path, trained: Trained, monkeypatch: pytest.MonkeyPatch
) -> None:
    """KServe (RawDeployment) with the chart's canary Deployment: the rollout starts in shadow,
    the candidate on the canary Deployment, its pods ready before the reconciler's pass ends,
    the InferenceService untouched (the stable predictor mirrors, asking the monitor when); on
    the paired checks it moves to KServe's own canary at 10 %, the canary Deployment back to 0
    pods; a candidate that lost its melanoma flags is rolled back in its shadow."""
    from dermaops.registry.promotion import alias_version, promote_stored
    from dermaops.registry.reconcile import reconcile

    objects = render(*URI, "--set", "predictor.canary.enabled=true")
    with _rollout_on_release(objects, tmp_path, trained, monkeypatch, "kfp-shadow") as on:
        api, reg, release, driver, logs = on.api, on.reg, on.release, on.driver, on.logs
        first, second, third = on.versions
        home = f"{PATHS['Deployment']}/dermaops-predictor-canary"
        isvc = f"{PATHS['InferenceService']}/dermaops"

        def shadow_pods(api: FakeApi = api) -> tuple[int, str]:
            canary = api.objects[home]
            env = canary["spec"]["template"]["spec"]["containers"][0]["env"]
            return canary["spec"]["replicas"], env[0]["value"]

        assert promote_stored(reg, second, None, False).promoted
        before = json.dumps(api.objects[isvc])
        assert "rolling out (shadow)" in reconcile(reg, release, driver).action
        assert shadow_pods() == (1, second) and json.dumps(api.objects[isvc]) == before
        assert api.objects[home]["status"]["updatedReplicas"] == 1, "ready before the pass ended"
        assert ("rolled out", home) in api.events
        assert release.version() == first, "the InferenceService still serves the stable one"
        assert "rolling out (shadow)" in reconcile(reg, release, driver).action, "a pass resumes"
        _paired(logs, first, second, 60, lost=False)
        r, done = driver.tick()
        assert done == "next" and r is not None and r.current.label == "canary 10%", r
        assert api.objects[isvc]["spec"]["canary"][0]["trafficPercent"] == 10
        assert shadow_pods()[0] == 0, "KServe's canary takes the step: the shadow's pods go"
        for action in ("next", "promote"):
            _answers(logs, first, 60, 4)
            _answers(logs, second, 60, 4)
            r, done = driver.tick()
            assert done == action, r
        assert release.version() == second and shadow_pods()[0] == 0

        assert promote_stored(reg, third, None, False).promoted
        assert "rolling out (shadow)" in reconcile(reg, release, driver).action
        assert shadow_pods() == (1, third)
        _paired(logs, second, third, 60, lost=True)
        r, done = driver.tick()
        assert done == "roll_back" and r is not None and r.status == "rolled_back", r
        assert r.last is not None and "melanoma_flips" in r.last.reason
        assert shadow_pods()[0] == 0 and "canary" not in api.objects[isvc]["spec"]
        assert release.version() == second and alias_version(reg, "champion") == second
