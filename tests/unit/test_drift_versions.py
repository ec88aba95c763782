"""Which traffic a model version's drift reference is compared with (dermaops.monitoring)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from dermaops.monitoring.drift import match_version


def _traffic(*versions: str) -> pd.DataFrame:
    return pd.DataFrame({"brightness": 0.5, "model_version": list(versions)})


def test_the_reference_version_alone_is_compared_on_the_model_outputs() -> None:
    same = match_version(_traffic(*"3" * 40), "3", min_rows=30)
    assert same.model_outputs and len(same.rows) == 40 and not same.note

    canary = match_version(_traffic(*"3" * 35, *"4" * 5), "3", min_rows=30)
    assert canary.model_outputs and set(canary.rows["model_version"]) == {"3"}
    assert canary.note == "5 rows from version 4 left out: the reference is version 3"


def test_traffic_of_another_version_is_compared_on_image_statistics_only() -> None:
    rolled = match_version(_traffic(*"3" * 10, *"4" * 30), "3", min_rows=30)
    assert not rolled.model_outputs and len(rolled.rows) == 40
    assert "image statistics only" in rolled.note and "version 4" in rolled.note


def test_an_unknown_version_or_unlabelled_traffic_compares_everything() -> None:
    assert match_version(_traffic(*"34"), "", min_rows=1).model_outputs
    unlabelled = pd.DataFrame({"brightness": [0.1, 0.2]})
    assert match_version(unlabelled, "3", min_rows=1).rows is unlabelled


def test_a_slow_registry_fetch_holds_up_neither_records_nor_a_second_fetch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dermaops.data.features import STAT_NAMES
    from dermaops.monitoring import drift_watch, service

    release, fetches = threading.Event(), []

    def slow_resolve(uri: str, home: object) -> tuple[Path, str]:
        fetches.append(uri)
        release.wait(10)
        return tmp_path / "model", "4"

    monkeypatch.setattr(drift_watch, "resolve_model", slow_resolve)
    settings = service.MonitorSettings(
        reference="r.csv", reference_version="3", registry_model="dermaops",
        inference_log=str(tmp_path / "log"), out=str(tmp_path / "out"), token="t",
    )  # fmt: skip
    monitor = service.Monitor(settings)
    watch = monitor.drift
    traffic = _traffic(*"4" * 5)
    fetchers = [threading.Thread(target=watch.follow, args=(traffic,))
                for _ in range(2)]  # fmt: skip
    for t in fetchers:
        t.start()
    deadline = time.monotonic() + 10
    while not fetches and time.monotonic() < deadline:
        time.sleep(0.01)
    record = dict.fromkeys(STAT_NAMES, 0.5) | {"model_version": "4"}
    answer = monitor.records.receive({"records": [record]})
    assert (answer.accepted, answer.rejected) == (1, 0)
    assert fetches == ["models:/dermaops/4"] and watch.reference_version == "3", "still fetching"
    release.set()
    for t in fetchers:
        t.join(10)
    assert fetches == ["models:/dermaops/4"], "the second run found the reference fetched"
    assert (watch.reference, watch.reference_version) == (str(tmp_path / "model"), "4")
