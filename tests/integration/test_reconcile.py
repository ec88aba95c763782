"""One truth for which model serves, on the real MLflow (sqlite): whatever moves the champion
(promotion by the pipeline or by hand, rollback to any earlier champion, a transition cut
short, a deploy that failed or never ran), reconciling ends with the champion served."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from dermaops.evaluation.gate import GateThresholds
from dermaops.registry import Registry
from dermaops.registry.client import RegistryError
from dermaops.registry.locks import promotion_lock
from dermaops.registry.model import recorded_thresholds
from dermaops.registry.promotion import (
    alias_version,
    former_champions,
    promote_challenger,
    promote_stored,
    rollback,
)
from dermaops.registry.reconcile import ReconcileError, reconcile
from dermaops.registry.serving import LocalServing
from dermaops.registry.tags import TRANSITION_TAG
from dermaops.settings import Home
from tests.conftest import Trained
from tests.integration.monitor_process import monitor_process
from tests.integration.test_registry import LENIENT, _audit, _register
from tests.scrape import sample

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _served(home: Path) -> str:
    return str(json.loads((home / "serving" / "current.json").read_text())["version"])


def test_promotion_rollback_and_a_failed_deploy_each_end_with_the_champion_served(
    trained: Trained, dermaops_home: Path
) -> None:
    reg, local = Registry(), LocalServing(Home(dermaops_home))
    empty = reconcile(reg, local)  # a registry that holds no model yet
    assert empty.converged and empty.action == "dermaops has no champion yet"
    first, second = _register(reg, trained, "kfp-1"), _register(reg, trained, "kfp-2")
    nothing = reconcile(reg, local)
    assert nothing.converged and nothing.champion is None and local.version() is None

    promote_challenger(reg, first, trained.metrics(), trained.prepared, LENIENT, False)
    done = reconcile(reg, local)  # the pipeline's deploy stage, after its promote
    assert (done.was, done.served) == (None, first) and _served(dermaops_home) == first
    assert reconcile(reg, local).action == f"version {first} is served"  # nothing to do

    # A promotion by hand, then the deploy never ran (a killed stage): the next pass serves it.
    assert promote_stored(reg, second, None, False).promoted  # the gate recorded with it
    assert local.version() == first
    assert reconcile(reg, local).served == second and _served(dermaops_home) == second
    assert "served on the local predictor (was version 1)" in _audit(reg, second)[-1]

    rollback(reg, "worse in clinic")
    assert reconcile(reg, local).served == first

    # A deploy that fails: the pointer's folder is not a folder. The champion is named, nothing
    # served changes, and once the folder is mended the next pass converges.
    promote_stored(reg, second, None, False)
    serving = dermaops_home / "serving"
    (serving / "current.json").unlink()
    serving.rmdir()
    serving.write_text("not a folder")
    with pytest.raises(ReconcileError, match=f"champion version {second} is not served"):
        reconcile(reg, local)
    serving.unlink()
    assert reconcile(reg, local).converged and _served(dermaops_home) == second


def test_dermaops_deploy_takes_the_promotion_lock_and_reads_back_what_it_served(
    trained: Trained, dermaops_home: Path
) -> None:
    """The command and the reconciler share one deploy path: while another promotion holds the
    lock, `dermaops deploy` waits, serving nothing; when it is free the version is served, read
    back and audited, and a version that is not the champion is said to be undone by the
    reconciler."""
    reg = Registry()
    first, second = _register(reg, trained, "kfp-d1"), _register(reg, trained, "kfp-d2")
    promote_stored(reg, first, None, False)
    command = [sys.executable, "-m", "dermaops", "deploy", second, "--serve-on", "local"]
    with promotion_lock(reg):
        waiting = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)  # fmt: skip
        time.sleep(6)  # the interpreter starts and reaches the lock in about 3 s here
        assert waiting.poll() is None, waiting.communicate()
        assert not (dermaops_home / "serving" / "current.json").exists(), "served under a lock"
    out, err = waiting.communicate(timeout=120)
    assert waiting.returncode == 0, err
    assert "waiting for the promotion lock" in err, err
    assert _served(dermaops_home) == second
    assert f"version {second} (was nothing)" in out
    assert f"the champion is version {first}; the reconciler serves it again" in out
    assert "served on the local predictor (was nothing)" in _audit(reg, second)[-1]
    assert reconcile(reg, LocalServing(Home(dermaops_home))).served == first


def test_rollback_walks_back_to_any_earlier_champion_through_its_own_gate(
    trained: Trained,
) -> None:
    reg = Registry()
    versions = [_register(reg, trained, f"kfp-{i}") for i in range(3)]
    assert recorded_thresholds(reg, versions[0]) == LENIENT
    for v in versions:
        assert promote_stored(reg, v, None, False).promoted
    assert former_champions(reg) == list(reversed(versions))

    assert rollback(reg, "bad batch", to=versions[0]) == (versions[2], versions[0])
    assert alias_version(reg, "champion") == versions[0]
    assert rollback(reg, to=versions[2]) == (versions[0], versions[2])  # and forward again
    with pytest.raises(RegistryError, match=r"nothing to roll back to.*earlier champions"):
        rollback(reg)  # previous is cleared by a rollback; --to names where to go
    strict = GateThresholds(min_f1_macro=1.0)
    with pytest.raises(RegistryError, match="fails the gate on its own metrics: macro-F1"):
        rollback(reg, to=versions[1], thresholds=strict)
    never = _register(reg, trained, "kfp-never")
    with pytest.raises(RegistryError, match=f"version {never} was never champion"):
        rollback(reg, to=never)
    assert alias_version(reg, "champion") == versions[2], "refusals move nothing"


def test_an_interrupted_transition_is_finished_before_anything_reads_the_aliases(
    trained: Trained, dermaops_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process dies between alias writes (after champion, before previous and challenger):
    the next reconcile, in a new process's registry client, finishes the recorded transition."""
    reg = Registry()
    first, second = _register(reg, trained, "kfp-a"), _register(reg, trained, "kfp-b")
    promote_stored(reg, first, None, False)
    real = reg.client.set_registered_model_alias
    calls: list[str] = []

    def dies_after_one(name: str, alias: str, version: str) -> None:
        calls.append(alias)
        if len(calls) > 1:
            raise KeyboardInterrupt("killed")
        real(name, alias, version)

    monkeypatch.setattr(reg.client, "set_registered_model_alias", dies_after_one)
    with pytest.raises(KeyboardInterrupt):
        promote_stored(reg, second, None, False)
    assert alias_version(reg, "champion") == second
    assert alias_version(reg, "previous") is None  # not yet written
    assert json.loads(_model_tags(reg)[TRANSITION_TAG])["state"] == "started"

    again = Registry()
    assert reconcile(again, LocalServing(Home(dermaops_home))).served == second
    assert alias_version(again, "previous") == first
    assert json.loads(_model_tags(again)[TRANSITION_TAG])["state"] == "done"
    assert any("finished after an interruption" in e for e in _audit(again, second))


def _model_tags(reg: Registry) -> dict[str, str]:
    return dict(reg.client.get_registered_model(reg.model_name).tags)


def _until(check: Callable[[], bool], what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_the_monitors_reconciler_serves_the_champion_and_says_when_it_cannot(
    trained: Trained, served_model: Path, dermaops_home: Path
) -> None:
    """`monitor serve --reconcile-every`, as the chart runs it: the champion is served within a
    pass; a deploy that cannot be done shows in /reconcile and in the metrics the alert reads
    (champion and served apart, failures counted) until it can."""
    reg = Registry()
    first, second = _register(reg, trained, "kfp-m1"), _register(reg, trained, "kfp-m2")
    promote_stored(reg, first, None, False)
    flags = ["--registry-model", reg.model_name, "--reconcile-every", "0.3"]
    with monitor_process(dermaops_home, served_model, dermaops_home / "inference", "true",
                         wait_for="/healthz", args=flags) as monitor:  # fmt: skip

        def last() -> dict[str, Any]:
            found: dict[str, Any] = httpx.get(f"{monitor.url}/reconcile", timeout=10).json()
            return found

        _until(lambda: last().get("served") == first, "the champion is served")
        assert _served(dermaops_home) == first
        assert sample(monitor.url, "dermaops_champion_version") == float(first)
        assert sample(monitor.url, "dermaops_served_version") == float(first)

        serving = dermaops_home / "serving"
        (serving / "current.json").unlink()
        serving.rmdir()
        serving.write_text("a volume mounted wrong")
        promote_stored(reg, second, None, False)
        _until(lambda: last().get("champion") == second and last().get("converged") is False,
               "the failed pass is reported")  # fmt: skip
        assert f"champion version {second} is not served" in last()["error"]
        assert sample(monitor.url, "dermaops_reconcile_failures_total") >= 1
        assert sample(monitor.url, "dermaops_champion_version") == float(second)
        assert sample(monitor.url, "dermaops_served_version") == 0  # the alert's condition

        serving.unlink()
        _until(lambda: last().get("converged") is True, "converged once the folder is mended")
        assert _served(dermaops_home) == second
        assert sample(monitor.url, "dermaops_served_version") == float(second)
