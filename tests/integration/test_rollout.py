"""Rollouts end to end on the embedded defaults: two real predictor processes (the stable one
mirroring live requests to the challenger), the real MLflow registry (sqlite) and the local
serving pointer. An equal challenger is promoted; one that lost its melanoma flags is rolled
back in shadow on the paired check, the champion restored through the registry's rollback."""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import start_http_server

from dermaops.client import PredictorClient
from dermaops.evaluation.estimate import EstimateSettings
from dermaops.evaluation.sources import Sources
from dermaops.inference_log import read_records
from dermaops.monitoring.drift import read_window
from dermaops.monitoring.rollouts import export
from dermaops.monitoring.service import Monitor, MonitorSettings
from dermaops.net import free_port, stop, wait_until_ready
from dermaops.registry import Registry
from dermaops.registry.card import fetch_card
from dermaops.registry.promotion import (
    alias_version,
    promote_challenger,
    promote_stored,
    rollback,
)
from dermaops.registry.reconcile import reconcile
from dermaops.registry.rollout import RolloutDriver, judge_stage, log_records
from dermaops.registry.serving import LocalServing
from dermaops.registry.tags import ROLLOUT_TAG
from dermaops.rollout.judge import Check, ErrorCounts, JudgeSettings
from dermaops.rollout.plan import Rollout, RolloutSettings, RolloutStore, advance
from dermaops.rollout.plan import start as begin
from dermaops.rollout.queries import PrometheusCounts
from dermaops.serving.process import PredictorProcess
from dermaops.serving.shadow import RolloutWatch
from dermaops.serving.smoke import lesion_jpeg
from dermaops.settings import Home
from tests.conftest import Trained
from tests.e2e.test_monitoring_loop import _prometheus_config, _query
from tests.fault_server import FaultyServer
from tests.integration.monitor_process import monitor_process
from tests.integration.test_registry import LENIENT, _audit, _register
from tests.k8s.conftest import find_tool
from tests.k8s.test_dashboard import dashboard_expressions, fill_variables
from tests.processes import start
from tests.scrape import sample

pytestmark = [pytest.mark.integration, pytest.mark.slow]

IMAGES = 40
SETTINGS = RolloutSettings(
    enabled=True, steps=[], min_stage_s=0, judge=JudgeSettings(min_pairs=IMAGES)
)


# The smoke test's lesions are not the generated images the model learned, so the estimate's
# input check rightly calls every estimate of them unreliable (the check is then left out);
# here it counts only images wholly unlike the reference (a distance of 1), since this test is
# of the judge using both versions' calibration, not of the estimator.
SMOKE_ESTIMATES = EstimateSettings(min_records=IMAGES, draws=40, input_distance=1.0)


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
                 "DERMAOPS_SERVING_INFERENCE_LOG_DIR": str(logs / "challenger"),
                 "DERMAOPS_SERVING_CHALLENGER": "true"},
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


def _card_says(reg: Registry, version: str, tmp_path: Path, *said: str) -> Rollout:
    """The version's card in MLflow has one rollout section saying each of ``said``, and its
    HTML was rendered again; the rollout kept beside it."""
    card = fetch_card(reg, version, tmp_path / f"card-{version}")
    text = card.read_text()
    assert text.count("## Rollout") == 1 and all(s in text for s in said), text[-3000:]
    kept = Rollout.model_validate_json((card.parent / "rollout.json").read_text())
    html = (card.parent / "model_card.html").read_text()
    assert (
        kept.last is not None
        and "<h2>Rollout</h2>" in html
        and all(c.name in html for c in kept.last.checks)
    )
    return kept


def _named(r: Rollout, check: str) -> Check:
    """The check of that name in ``r``'s last judgement."""
    assert r.last is not None
    return next(c for c in r.last.checks if c.name == check)


def test_an_equal_challenger_is_promoted_and_a_forgetful_one_rolled_back_in_shadow(
    trained: Trained, served_model: Path, forgetful: Path, dermaops_home: Path, tmp_path: Path
) -> None:
    reg, local = Registry(), LocalServing(Home(dermaops_home))
    first, second, third = (_register(reg, trained, f"kfp-{i}") for i in range(3))
    promote_challenger(reg, first, trained.metrics(), trained.prepared, LENIENT, False)
    assert reconcile(reg, local).served == first

    # Version 2 (the same model) becomes champion: the reconciler starts its rollout instead
    # of serving it, and the paired checks on the traffic mirrored since promote it, with each
    # version's melanoma sensitivity estimated on its calibration from the registry.
    store = RolloutStore(tmp_path / "state")
    logs = tmp_path / "equal" / "logs"
    driver = RolloutDriver(reg, local, store, SETTINGS,
                           log_records(logs / "stable", logs / "challenger"),
                           sources=Sources(reg.model_name).get,
                           estimates=SMOKE_ESTIMATES)  # fmt: skip
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
        "ood_verdict_changes": "pass", "estimated_melanoma_sensitivity": "pass"}  # fmt: skip
    estimated = _named(r, "estimated_melanoma_sensitivity")
    assert (estimated.value, estimated.samples) == (0, IMAGES), estimated  # the same answers
    tag = reg.client.get_model_version(reg.model_name, second).tags[ROLLOUT_TAG]
    assert tag.startswith("promoted")
    _card_says(
        reg, second, tmp_path, "**promoted** in full", "| melanoma_flips | 0 | <= 0 | pass |"
    )

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
    flips, estimated = _named(r, "melanoma_flips"), _named(r, "estimated_melanoma_sensitivity")
    assert flips.value == flagged and f"{flagged} flags lost, 0 gained" in flips.detail
    assert estimated.verdict == "fail" and estimated.detail.startswith("estimated 0% ")
    assert alias_version(reg, "champion") == second and local.version() == second
    assert any(f"rollout of version {third} failed" in e for e in _audit(reg, third))
    kept = _card_says(reg, third, tmp_path, "**rolled back** in shadow", f"{flagged} flags lost")
    assert (kept.candidate, kept.status) == (third, "rolled_back")
    assert reconcile(reg, local, driver).action == f"version {second} is served"

    # Version 4 rolls out, and a person rolls the champion back to 2 meanwhile: the rollout
    # ends as superseded, acting on nothing; version 2 stays served.
    fourth = _register(reg, trained, "kfp-4")
    assert promote_stored(reg, fourth, None, False).promoted
    assert "rolling out" in reconcile(reg, local, driver).action
    rollback(reg, "not now", to=second)
    r, action = driver.tick()
    assert action == "wait" and r is not None and r.status == "superseded"
    assert r.events[-1].reason == f"the champion is now version {second}"
    assert local.version() == second and alias_version(reg, "champion") == second
    assert (tmp_path / "state" / "rollouts.jsonl").read_text().count("\n") == 3


def test_a_challenger_that_fails_is_judged_at_once_on_the_counts_the_real_prometheus_scraped(
    served_model: Path, tmp_path: Path
) -> None:
    """The stable predictor mirrors to a challenger that answers 500; Prometheus scrapes the
    stable's counters, the judge asks it (the queries of dermaops/rollout/queries.py) and fails
    the shadow stage on a handful of requests, long before enough pairs for the paired checks.
    A canary step reads the stable version's own answers by version from the same Prometheus.
    The monitor's rollout gauges, scraped by the same Prometheus, then give every query of the
    dashboard's rollout row a series."""

    requests = 6
    with ExitStack() as stack:
        failing = stack.enter_context(FaultyServer())
        failing.add("/v1/models/dermaops:predict", b'{"error": "boom"}', *["500"] * requests)
        live = stack.enter_context(PredictorProcess(
            served_model, tmp_path / "home", tmp_path / "stable.log",
            env={"DERMAOPS_SERVING_MODEL_VERSION": "1", "DERMAOPS_SERVING_SHADOW_URL": failing.url,
                 "DERMAOPS_SERVING_INFERENCE_LOG_DIR": str(tmp_path / "log")},
        ))  # fmt: skip
        monitor = Monitor(MonitorSettings(reference="r.csv", inference_log=str(tmp_path / "log"),
                                          out=str(tmp_path / "out"), token="t"))  # fmt: skip
        gauges, _ = start_http_server(free_port(), "127.0.0.1", monitor.registry)
        stack.callback(gauges.shutdown)
        port = free_port()
        prometheus_url = f"http://127.0.0.1:{port}"
        _prometheus_config(
            tmp_path / "prometheus.yml",
            tmp_path / "rules.yaml",
            {"predictor": live.url.removeprefix("http://"),
             "monitor": f"127.0.0.1:{gauges.server_port}"},
            "127.0.0.1:9",
        )  # fmt: skip
        (tmp_path / "rules.yaml").write_text("groups: []\n")
        prometheus = start(stack, [find_tool("prometheus"),
                                   f"--config.file={tmp_path / 'prometheus.yml'}",
                                   f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                   f"--web.listen-address=127.0.0.1:{port}"],
                           tmp_path / "prometheus.log")  # fmt: skip
        wait_until_ready(f"{prometheus_url}/-/ready", 30, prometheus, tmp_path / "prometheus.log")
        r = begin("dermaops", "1", "2", SETTINGS, now=time.time() - 1)
        deadline = time.monotonic() + 30  # a first scrape: the counters' start, at 0
        while not _query(prometheus_url, "dermaops_shadow_requests_total") and (
            time.monotonic() < deadline
        ):
            time.sleep(0.5)
        client = PredictorClient(live.url)
        for seed in range(requests):
            client.predict([lesion_jpeg(seed)])
        counts, records = PrometheusCounts(prometheus_url), log_records(tmp_path / "log")
        deadline = time.monotonic() + 30
        while (verdict := judge_stage(r, records(), counts(r), SETTINGS.judge)).verdict != "fail":
            assert time.monotonic() < deadline, f"no 500 counted: {verdict}"
            time.sleep(1)  # until Prometheus has scraped them
        errors = next(c for c in verdict.checks if c.name == "error_share")
        assert verdict.reason == "critical check failed: error_share", verdict
        assert errors.value is not None and errors.value > 0.5 and errors.samples == IMAGES, errors
        ended, action = advance(r, verdict, time.time(), SETTINGS)
        assert action == "roll_back"
        paired = next(c for c in verdict.checks if c.name == "melanoma_flips")
        assert paired.verdict == "no_data"  # nothing the challenger answered was logged

        _a_canary_reads_its_own_answers(counts, live.url, requests, r.stage_started)

        export(ended, monitor.metrics)  # what the monitor's pass exports after the verdict
        row = [e for e in dashboard_expressions() if "rollout" in e or "shadow" in e]
        assert len(row) == 5

        def empty() -> list[str]:
            return [e for e in row if not _query(prometheus_url, fill_variables(e))]

        deadline = time.monotonic() + 30
        while empty() and time.monotonic() < deadline:
            time.sleep(1)
        assert not empty(), f"the rollout row's queries without data: {empty()}"
        (stage,) = _query(prometheus_url, row[0])
        assert stage["metric"] == {"phase": "shadow", "status": "rolled_back"}


def _a_canary_reads_its_own_answers(
    counts: PrometheusCounts, url: str, requests: int, started: float
) -> None:
    """A canary step of version 1 reads its own answers by version from the same Prometheus:
    every request answered (the mirror's failures were the challenger's), one bad body a 4xx,
    none a 5xx; a version nobody serves has no requests, which is no data, not a pass."""
    bad = httpx.post(f"{url}/v1/models/dermaops:predict", json={"instances": "no"})
    assert bad.status_code == 400
    canary = RolloutSettings(enabled=True, steps=[10])
    stepped = begin("dermaops", "0", "1", canary, now=started, shadow=False)
    deadline = time.monotonic() + 30
    while (own := counts(stepped)).requests < requests + 1:  # increase() extrapolates
        assert time.monotonic() < deadline, f"not the predictor's own answers: {own}"
        time.sleep(1)
    assert own.errors == 0 and own.requests < 2 * (requests + 1), own
    elsewhere = begin("dermaops", "1", "7", canary, now=started, shadow=False)
    assert counts(elsewhere) == ErrorCounts(errors=0, requests=0)


def test_the_stage_judgement_reads_clinicians_labels_where_both_versions_have_them() -> None:
    """The driver's judgement takes the monitor's live figures: a candidate whose labelled
    melanomas were surely fewer caught fails its shadow at once, whatever the paired checks."""
    from dermaops.evaluation.intervals import clopper_pearson

    def live(caught: int, melanomas: int) -> dict[str, Any]:
        return {"melanomas": melanomas, "melanoma_sensitivity": caught / melanomas,
                "ci95": {"melanoma_sensitivity": clopper_pearson(caught, melanomas)}}  # fmt: skip

    r = begin("dermaops", "1", "2", SETTINGS, now=0)
    records = [{"time": "2026-01-01T00:00:00", "request_id": f"r{i}", "model_version": version,
                "prediction": "nv", "p_mel": 0.1, "melanoma": False, "shadow": version == "2"}
               for i in range(IMAGES) for version in ("1", "2")]  # fmt: skip
    assert judge_stage(r, records, None, SETTINGS.judge).verdict == "pass"
    worse = judge_stage(r, records, None, SETTINGS.judge, {"1": live(45, 50), "2": live(3, 12)})
    assert worse.verdict == "fail" and "live_melanoma_sensitivity" in worse.reason


WRITER = """
import sys, time
from pathlib import Path
from dermaops.rollout.plan import RolloutSettings, RolloutStore, start
store, s = RolloutStore(Path(sys.argv[1])), RolloutSettings(steps=[10, 50])
r = start("dermaops", "1", "2", s, now=0)
print("ready", flush=True)
for i in range(1_000_000):  # the same rollout, its stage moving on and round
    store.save(r.model_copy(update={"stage": i % 3, "stage_started": float(i)}))
"""


def _until(check: Any, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_a_predictor_that_follows_the_rollout_mirrors_only_in_its_shadow(
    served_model: Path, prepared_small: Path, dermaops_home: Path, tmp_path: Path
) -> None:
    """As the chart serves under KServe, its canary Deployment always at hand: the stable
    predictor asks the real monitor's /rollout and mirrors only while a rollout is in shadow
    with its version as the stable one; before, for another stable version and in a canary
    step, the challenger sees nothing."""
    logs = tmp_path / "logs"
    (tmp_path / "traffic").mkdir()
    with ExitStack() as stack:
        monitor = stack.enter_context(monitor_process(
            dermaops_home, prepared_small / "reference_stats.csv", tmp_path / "traffic",
            "true", wait_for="/healthz",
        ))  # fmt: skip
        challenger = stack.enter_context(PredictorProcess(
            served_model, tmp_path / "home", tmp_path / "challenger.log",
            env={"DERMAOPS_SERVING_MODEL_VERSION": "2",
                 "DERMAOPS_SERVING_INFERENCE_LOG_DIR": str(logs / "challenger"),
                 "DERMAOPS_SERVING_CHALLENGER": "true"},
        ))  # fmt: skip
        live = stack.enter_context(PredictorProcess(
            served_model, tmp_path / "home", tmp_path / "stable.log",
            env={"DERMAOPS_SERVING_MODEL_VERSION": "1",
                 "DERMAOPS_SERVING_INFERENCE_LOG_DIR": str(logs / "stable"),
                 "DERMAOPS_SERVING_SHADOW_URL": challenger.url,
                 "DERMAOPS_SERVING_SHADOW_FOLLOWS_ROLLOUT": "true",
                 "DERMAOPS_SERVING_SHADOW_POLL_S": "0.2",
                 "DERMAOPS_SERVING_MONITOR_URL": monitor.url,
                 "DERMAOPS_MONITOR_TOKEN_FILE": str(dermaops_home / "test-token")},
        ))  # fmt: skip
        client, store = PredictorClient(live.url), RolloutStore(dermaops_home / "monitoring")

        def mirroring() -> float:
            return sample(live.url, "dermaops_shadow_mirroring")

        def send(first: int) -> None:
            for seed in range(first, first + 5):
                assert client.predict([lesion_jpeg(seed)]).model_version == "1"

        def shadowed() -> int:
            return len(read_records(logs / "challenger"))

        send(0)  # no rollout yet: the monitor's /rollout says 404
        assert mirroring() == 0 and shadowed() == 0

        shadow = begin("dermaops", "1", "2", SETTINGS, time.time())
        store.save(shadow)
        _until(lambda: mirroring() == 1, "the watch never saw the shadow stage")
        send(5)
        _until(lambda: shadowed() == 5, "the shadow stage's requests never reached the challenger")
        assert all(r["shadow"] is True for r in read_records(logs / "challenger"))

        store.save(shadow.model_copy(update={"stable": "7"}))  # a shadow of another version
        _until(lambda: mirroring() == 0, "mirrored a shadow of another stable version")
        send(10)
        store.save(shadow.model_copy(update={"stage": 1}))  # past the shadow: full
        time.sleep(1)
        send(15)
        assert mirroring() == 0
        assert sample(live.url, "dermaops_shadow_requests_total", outcome="answered") == 5
        assert shadowed() == 5

        store.save(shadow)  # in shadow again, then the monitor goes away: shut, not guessed
        _until(lambda: mirroring() == 1, "the watch never saw the shadow stage again")
        stop(monitor.process)
        _until(lambda: mirroring() == 0, "mirrored on without the monitor")
    said = (tmp_path / "stable.log").read_text()
    assert "shadow mirror open: the rollout of version 2 is running in shadow" in said
    assert "in shadow of version 7, not of 1" in said
    assert f"shadow mirror shut: the monitor at {monitor.url}/rollout did not answer" in said


def test_the_watch_reads_a_newer_monitors_rollout_and_shuts_on_a_wrong_one() -> None:
    """A monitor newer than the predictor (a field more at each level) still opens the mirror
    in its shadow; an answer that is no rollout shuts it. Real HTTP on loopback."""
    shadow = json.loads(begin("dermaops", "1", "2", SETTINGS, time.time()).model_dump_json())
    newer = {**shadow, "region": "eu", "stages": [{**st, "gate": "x"} for st in shadow["stages"]],
             "events": [{**e, "actor_ip": "10.0.0.1"} for e in shadow["events"]]}  # fmt: skip
    answer = {"body": b""}

    class Monitor(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(answer["body"])

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Monitor)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with httpx.Client() as client:
            watch = RolloutWatch(url, stable="1", every=3600)
            try:
                answer["body"] = json.dumps(newer).encode()
                assert watch.ask(client) == (True, "the rollout of version 2 is running in shadow")
                answer["body"] = json.dumps({**newer, "stable": None}).encode()
                opened, why = watch.ask(client)
                assert not opened and why.startswith(f"{url}/rollout gave no rollout (")
            finally:
                watch.close()
    finally:
        server.shutdown()
        server.server_close()


def test_a_driver_killed_while_saving_leaves_a_whole_rollout_behind(tmp_path: Path) -> None:
    """SIGKILL a process that saves the rollout in a loop, ten times at random moments: each
    time the file holds one whole state that was saved, and the next driver reads it."""
    rng = random.Random(0)
    seen = set()
    for _ in range(10):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)],
                                  stdout=subprocess.PIPE, text=True)  # fmt: skip
        assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.05, 0.5))
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        r = RolloutStore(tmp_path).load()
        assert r is not None and r.stage == int(r.stage_started) % 3 and r.status == "running"
        seen.add(r.stage_started)
    assert len(seen) > 1  # killed at different moments, not before the first save
