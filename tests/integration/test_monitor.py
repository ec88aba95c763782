"""`dermaops monitor serve` as a process: scheduled drift, metrics, report, alert webhook."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.docs_files import assert_published_as_documented
from tests.integration.monitor_process import AUTH, TOKEN, monitor_process
from tests.integration.traffic import log_traffic

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _alert(status: str = "firing", action: str = "retrain") -> dict[str, object]:
    labels = {"alertname": "DermaOpsDataDrift", "severity": "warning", "action": action}
    return {
        "status": status,
        "labels": labels,
        "annotations": {},
        "startsAt": "2026-11-28T00:00:00Z",
    }


@pytest.fixture
def monitor(
    synth_raw: Path, prepared_small: Path, tmp_path: Path, dermaops_home: Path
) -> Iterator[tuple[str, Path]]:
    log_traffic(synth_raw, tmp_path / "traffic", drifted=True)
    marker = tmp_path / "retraining-runs"
    retrain = f"{sys.executable} -c \"open('{marker}', 'a').write('run\\n')\""
    # The first scheduled drift run happens at start-up: it waits for its summary.
    with monitor_process(dermaops_home, prepared_small / "reference_stats.csv",
                         tmp_path / "traffic", retrain) as m:  # fmt: skip
        yield m.url, marker


def test_scheduled_drift_metrics_and_report(monitor: tuple[str, Path]) -> None:
    url, _ = monitor
    summary = httpx.get(f"{url}/summary").json()
    assert summary["drifted"] is True and "brightness" in summary["drifted_columns"]
    metrics = httpx.get(f"{url}/metrics").text
    assert "dermaops_drift_detected 1.0" in metrics
    assert 'dermaops_drift_column{column="brightness"} 1.0' in metrics
    assert "dermaops_drift_window_rows 80.0" in metrics
    assert "dermaops_drift_last_run_timestamp_seconds" in metrics
    report = httpx.get(f"{url}/report")
    assert report.status_code == 200 and "<html" in report.text[:500].lower()
    assert httpx.post(f"{url}/drift", timeout=60, headers=AUTH).json()["drifted"] is True


def test_an_alert_storm_starts_exactly_one_retraining_run(
    monitor: tuple[str, Path], dermaops_home: Path
) -> None:
    url, marker = monitor
    storm = {"receiver": "dermaops-monitor", "status": "firing", "alerts": [_alert()]}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        refused = httpx.post(f"{url}/alerts", json=storm, headers=headers)
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
    assert not (dermaops_home / "monitoring" / "triggers.jsonl").exists(), "nothing recorded"
    outcomes = [httpx.post(f"{url}/alerts", json=storm, headers=AUTH).json()["outcome"]
                for _ in range(5)]  # fmt: skip
    assert outcomes[0] == "started" and set(outcomes[1:]) == {"suppressed"}
    resolved = {"alerts": [_alert(status="resolved"), _alert(action="notify")]}
    assert httpx.post(f"{url}/alerts", json=resolved, headers=AUTH).json()["outcome"] == "ignored"
    assert httpx.post(f"{url}/alerts", content=b"not json", headers=AUTH).status_code == 400
    assert httpx.post(f"{url}/alerts", json={"alerts": "x"}, headers=AUTH).status_code == 400
    deadline = time.monotonic() + 30
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert marker.read_text() == "run\n", "one run, not five"
    record = (dermaops_home / "monitoring" / "triggers.jsonl").read_text().splitlines()
    assert [json.loads(line)["outcome"] for line in record] == ["started", *["suppressed"] * 4]
    metrics = httpx.get(f"{url}/metrics").text
    assert 'dermaops_retraining_triggers_total{outcome="suppressed"} 4.0' in metrics
    assert 'dermaops_monitor_unauthorized_total{path="/alerts"} 3.0' in metrics


def test_records_from_predictors_join_the_log_and_bad_ones_are_refused(
    monitor: tuple[str, Path], dermaops_home: Path, tmp_path: Path
) -> None:
    url, _ = monitor
    stats = dict.fromkeys(("brightness", "contrast", "saturation", "hue_mean", "hue_spread",
                           "sharpness", "width", "height", "aspect"), 0.5)  # fmt: skip
    good = {**stats, "prediction": "nv", "confidence": 0.8, "time": "2026-11-28T00:00:00Z"}
    pixels = {**stats, "image": "A" * 5000}  # something that looks like image data
    missing = {"prediction": "nv"}
    assert httpx.post(f"{url}/records", json={"records": [good]}).status_code == 401
    answer = httpx.post(f"{url}/records", json={"records": [good, good, pixels, missing, "x"]},
                        headers=AUTH)  # fmt: skip
    assert answer.json() == {"accepted": 2, "rejected": 3}
    assert httpx.post(f"{url}/records", json=[good], headers=AUTH).status_code == 400
    assert httpx.post(f"{url}/records", content=b"{", headers=AUTH).status_code == 400
    # The fixture's monitor reads tmp_path/traffic; records land in that same log.
    lines = (tmp_path / "traffic" / "predictions.jsonl").read_text().splitlines()
    received = [json.loads(line) for line in lines[-2:]]
    assert received == [good, good], "appended as sent, original time kept"
    metrics = httpx.get(f"{url}/metrics").text
    assert 'dermaops_monitor_received_records_total{outcome="rejected"} 3.0' in metrics


def test_the_openapi_document_declares_the_webhook_bodies(monitor: tuple[str, Path]) -> None:
    """The bodies the monitor parses itself are published from the types it parses them with:
    a record and an alert as sent validate against the document, a record with pixels does not;
    the document the docs render is the one published."""
    import jsonschema

    url, _ = monitor
    document = httpx.get(f"{url}/openapi.json", timeout=30).json()
    assert_published_as_documented(document, "monitor")
    components = document["components"]

    def body(path: str) -> dict[str, object]:
        ref = document["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        name = ref["schema"]["$ref"].rsplit("/", 1)[-1]
        return {**components["schemas"][name], "components": components}

    stats = dict.fromkeys(("brightness", "contrast", "saturation", "hue_mean", "hue_spread",
                           "sharpness", "width", "height", "aspect"), 0.5)  # fmt: skip
    jsonschema.validate({"records": [{**stats, "prediction": "nv"}]}, body("/records"))
    with pytest.raises(jsonschema.ValidationError, match="image"):
        jsonschema.validate({"records": [{**stats, "image": "A" * 5000}]}, body("/records"))
    jsonschema.validate({"receiver": "dermaops-monitor", "alerts": [_alert()]}, body("/alerts"))
    answer = document["paths"]["/records"]["post"]["responses"]["200"]["content"]
    assert answer["application/json"]["schema"] == {"$ref": "#/components/schemas/RecordsAnswer"}


def test_the_rollout_is_published_as_kept(monitor: tuple[str, Path], dermaops_home: Path) -> None:
    from dermaops.rollout.plan import Rollout, RolloutSettings, RolloutStore, start

    url, _ = monitor
    missing = httpx.get(f"{url}/rollout", timeout=30)
    assert missing.status_code == 404 and missing.json()["detail"] == "no rollout yet"
    kept = start("dermaops", "1", "2", RolloutSettings(), now=time.time())
    RolloutStore(dermaops_home / "monitoring").save(kept)
    assert Rollout.model_validate(httpx.get(f"{url}/rollout", timeout=30).json()) == kept
