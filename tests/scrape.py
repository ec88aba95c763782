"""What a server's /metrics shows now, read with prometheus_client's own parser."""

from __future__ import annotations

import time

import httpx
from prometheus_client.parser import text_string_to_metric_families


def sample(url: str, name: str, **labels: str) -> float:
    """The sum of the samples ``name`` (e.g. ``..._total``) carrying ``labels`` at ``url``."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def wait_recorded(url: str, timeout: float = 30) -> None:
    """Until the predictor at ``url`` has made the records of every image it answered (its
    recorder works after the answer: serving/records.py)."""
    deadline = time.monotonic() + timeout
    while sample(url, "dermaops_records_pending") > 0:
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} still has records pending after {timeout} s")
        time.sleep(0.05)
