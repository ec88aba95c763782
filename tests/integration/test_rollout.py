"""Rollouts end to end on the embedded defaults: two real predictor processes (the stable one
mirroring live requests to the challenger), the real MLflow registry (sqlite) and the local
serving pointer. An equal challenger is promoted; one that lost its melanoma flags is rolled
back in shadow on the paired check, the champion restored through the registry's rollback."""

from __future__ import annotations

import json
import shutil
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from dermaops.client import PredictorClient
from dermaops.inference_log import read_records
from dermaops.monitoring.drift import read_window
from dermaops.registry import Registry
from dermaops.registry.promotion import alias_version, promote_challenger, promote_stored
from dermaops.registry.reconcile import reconcile
from dermaops.registry.rollout import ROLLOUT_TAG, RolloutDriver, log_records
from dermaops.registry.serving import LocalServing
from dermaops.rollout.judge import JudgeSettings
from dermaops.rollout.plan import RolloutSettings, RolloutStore
from dermaops.serving.process import PredictorProcess
from dermaops.serving.smoke import lesion_jpeg
from dermaops.settings import Home
from tests.conftest import Trained
from tests.integration.test_registry import LENIENT, _audit, _register
from tests.scrape import sample

pytestmark = [pytest.mark.integration, pytest.mark.slow]

IMAGES = 40
SETTINGS = RolloutSettings(
    enabled=True, steps=[], min_stage_s=0, judge=JudgeSettings(min_pairs=IMAGES)
)


@pytest.fixture(scope="module")
def forgetful(served_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The served model with its melanoma threshold above any probability: it flags none."""
    folder = tmp_path_factory.mktemp("forgetful") / "model"
    shutil.copytree(served_model, folder)
    calibration = json.loads((folder / "calibration.json").read_text())
    (folder / "calibration.json").write_text(json.dumps(calibration | {"melanoma_threshold": 1.01}))
    return folder


def _shadowed(stable: tuple[Path, str], candidate: tuple[Path, str], root: Path) -> Path:
    """Serve ``IMAGES`` requests from the stable predictor, which mirrors each to the
    challenger; both logs in the folder returned."""
    logs = root / "logs"
    root.mkdir()
    with ExitStack() as stack:
        challenger = stack.enter_context(PredictorProcess(
            candidate[0], root / "home", root / "challenger.log",
            env={"DERMAOPS_SERVING_MODEL_VERSION": candidate[1],
                 "DERMAOPS_SERVING_INFERENCE_LOG_DIR": str(logs / "challenger")},
        ))  # fmt: skip
        live = stack.enter_context(PredictorProcess(
            stable[0], root / "home", root / "stable.log",
            env={"DERMAOPS_SERVING_MODEL_VERSION": stable[1],
                 "DERMAOPS_SERVING_INFERENCE_LOG_DIR": str(logs / "stable"),
                 "DERMAOPS_SERVING_SHADOW_URL": challenger.url},
        ))  # fmt: skip
        client = PredictorClient(live.url)
        for seed in range(IMAGES):
            answer = client.predict([lesion_jpeg(seed)])
            assert answer.model_version == stable[1]  # the stable one answers, always
        deadline = time.monotonic() + 60
        while len(read_records(logs / "challenger")) < IMAGES and time.monotonic() < deadline:
            time.sleep(0.2)
        mirrored = sample(live.url, "dermaops_shadow_requests_total", outcome="answered")
        assert mirrored == IMAGES, (root / "stable.log").read_text()[-2000:]
    return logs


def _logs_pair(logs: Path, stable: str, candidate: str) -> list[dict[str, Any]]:
    live, shadow = read_records(logs / "stable"), read_records(logs / "challenger")
    assert {r["model_version"] for r in live} == {stable} and not any(r["shadow"] for r in live)
    assert {r["model_version"] for r in shadow} == {candidate}
    assert all(r["shadow"] is True for r in shadow)
    assert {r["request_id"] for r in live} == {r["request_id"] for r in shadow}
    assert len({r["request_id"] for r in live}) == IMAGES  # each mirrored request has its id
    assert read_window(logs / "challenger", 1000).empty  # shadow answers are not traffic
    return live


def test_an_equal_challenger_is_promoted_and_a_forgetful_one_rolled_back_in_shadow(
    trained: Trained, served_model: Path, forgetful: Path, dermaops_home: Path, tmp_path: Path
) -> None:
    reg, local = Registry(), LocalServing(Home(dermaops_home))
    first, second, third = (_register(reg, trained, f"kfp-{i}") for i in range(3))
    promote_challenger(reg, first, trained.metrics(), trained.prepared, LENIENT, False)
    assert reconcile(reg, local).served == first

    # Version 2 (the same model) becomes champion: the reconciler starts its rollout instead
    # of serving it, and the paired checks on the traffic mirrored since promote it.
    store = RolloutStore(tmp_path / "state")
    logs = tmp_path / "equal" / "logs"
    driver = RolloutDriver(reg, local, store, SETTINGS,
                           log_records(logs / "stable", logs / "challenger"))  # fmt: skip
    assert promote_stored(reg, second, None, False).promoted
    started = reconcile(reg, local, driver)
    assert started.served == first and "rolling out (shadow)" in started.action
    assert [s.name for s in store.load().stages] == ["shadow", "full"]  # type: ignore[union-attr]
    assert reconcile(reg, local, driver).served == first  # a second pass: still rolling out
    assert driver.tick()[1] == "wait"  # no traffic yet: never promoted on silence
    _logs_pair(_shadowed((served_model, first), (served_model, second), logs.parent), first, second)
    r, action = driver.tick()
    assert action == "promote" and r is not None and r.status == "promoted", r
    assert local.version() == second and alias_version(reg, "champion") == second
    assert r.last is not None and {c.name: c.verdict for c in r.last.checks} == {
        "melanoma_flips": "pass", "top1_agreement": "pass", "melanoma_probability_change": "pass",
        "ood_verdict_changes": "pass"}  # fmt: skip
    tag = reg.client.get_model_version(reg.model_name, second).tags[ROLLOUT_TAG]
    assert tag.startswith("promoted")

    # Version 3 flags no melanoma: rolled back in shadow, version 2 champion and served again.
    logs = tmp_path / "forgetful" / "logs"
    driver.records = log_records(logs / "stable", logs / "challenger")
    assert promote_stored(reg, third, None, False).promoted
    assert "rolling out" in reconcile(reg, local, driver).action
    live = _logs_pair(_shadowed((served_model, second), (forgetful, third), logs.parent), second,
                      third)  # fmt: skip
    flagged = sum(r["melanoma"] for r in live)
    assert flagged >= 8, f"the stable model flagged {flagged} of {IMAGES}: too few to judge"
    r, action = driver.tick()
    assert action == "roll_back" and r is not None and r.status == "rolled_back"
    assert r.last is not None and r.last.reason == "critical check failed: melanoma_flips"
    flips = next(c for c in r.last.checks if c.name == "melanoma_flips")
    assert flips.value == flagged and f"{flagged} flags lost, 0 gained" in flips.detail
    assert alias_version(reg, "champion") == second and local.version() == second
    assert any("rollout of version 3 failed" in e for e in _audit(reg, third))
    assert reconcile(reg, local, driver).action == f"version {second} is served"
    assert (tmp_path / "state" / "rollouts.jsonl").read_text().count("\n") == 2
