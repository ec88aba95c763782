"""What one predictor replica takes on: bodies over the limit, more requests than it handles at
once and its queue holds, and requests past their deadline are refused before they cost memory;
requests beyond what it handles at once wait their turn."""

from __future__ import annotations

import base64
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from dermaops.serving.process import PredictorProcess
from tests.load import V1, at_once, post_big, raw_head, whole_answer
from tests.scrape import sample

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LIMIT = 2_000_000
BUDGET = 3_000_000  # body bytes at once
QUEUE_WAIT = 3.0  # seconds a request waits for a place


@pytest.fixture(scope="module")
def predictor(
    served_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PredictorProcess]:
    root = tmp_path_factory.mktemp("admission")
    env = {"DERMAOPS_SERVING_MAX_BODY_BYTES": str(LIMIT), "DERMAOPS_SERVING_MAX_IN_FLIGHT": "2",
           "DERMAOPS_SERVING_MAX_BYTES_IN_FLIGHT": str(BUDGET), "DERMAOPS_SERVING_MAX_QUEUE": "6",
           "DERMAOPS_SERVING_QUEUE_TIMEOUT_S": str(QUEUE_WAIT)}  # fmt: skip
    with PredictorProcess(served_model, root / "home", root / "server.log", env=env) as p:
        yield p


def _body(jpeg: bytes, n: int = 1) -> bytes:
    return json.dumps({"instances": [{"b64": base64.b64encode(jpeg).decode()}] * n}).encode()


def _rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


def refused_total(url: str, reason: str) -> float:
    return sample(url, "dermaops_requests_refused_total", reason=reason)


def test_a_300_mb_body_is_refused_before_it_is_read(predictor: PredictorProcess) -> None:
    """By its Content-Length: the answer comes before a byte of the body is sent."""
    started = time.monotonic()
    with raw_head(predictor.port, "Content-Length: 300000000") as s:
        head = whole_answer(s)
        waited = time.monotonic() - started
    assert head.startswith("HTTP/1.1 413") and "over the limit of 2,000,000 bytes" in head
    assert waited < 5


def test_a_chunked_300_mb_body_is_cut_at_the_limit_with_little_memory(
    predictor: PredictorProcess,
) -> None:
    """Without a Content-Length the body is counted as it arrives and cut at the limit: the
    answer read off the socket is a 413 (whatever the server does with the connection after),
    and the replica's resident memory grows by far less than the body."""
    before = _rss_mb(predictor.pid)
    status = post_big(predictor.port, 300 * 2**20, chunked=True)
    assert status.startswith("HTTP/1.1 413"), status
    assert _rss_mb(predictor.pid) - before < 50
    assert httpx.get(f"{predictor.url}/v2/health/ready", timeout=10).status_code == 200


def test_more_than_the_replica_handles_at_once_wait_and_beyond_the_queue_get_503(
    predictor: PredictorProcess, jpeg_bytes: Callable[..., bytes]
) -> None:
    """24 at once to a replica that takes 2 and queues 6: those in line are answered in turn, the
    rest are refused at once with Retry-After, counted; the queue empties."""
    body = _body(jpeg_bytes(600, 450), 4)
    shed_before = refused_total(predictor.url, "overloaded")
    waits_before = sample(predictor.url, "dermaops_queue_wait_seconds_count")

    answers = at_once(predictor.url, body, 24)
    statuses = Counter(a.status_code for a in answers)
    assert set(statuses) == {200, 503} and statuses[200] >= 2 + 6, statuses
    shed = [a for a in answers if a.status_code == 503]
    assert all(a.headers["retry-after"] == "1" and "6 waiting" in a.json()["error"] for a in shed)
    assert refused_total(predictor.url, "overloaded") - shed_before == statuses[503]
    assert sample(predictor.url, "dermaops_queue_wait_seconds_count") - waits_before == 24
    assert sample(predictor.url, "dermaops_requests_queued") == 0
    health = [httpx.get(f"{predictor.url}/v2/health/ready", timeout=10) for _ in range(3)]
    assert all(h.status_code == 200 for h in health)  # probes are never shed or queued


def test_a_request_without_a_place_within_the_queues_wait_gets_503(
    predictor: PredictorProcess, jpeg_bytes: Callable[..., bytes]
) -> None:
    """Two bodies still arriving hold both places; a third request waits its 3 s in line, then
    gets 503 with Retry-After; once the two are done, it is taken."""
    body = _body(jpeg_bytes(600, 450))
    timed_out_before = refused_total(predictor.url, "queue_timeout")
    with (
        raw_head(predictor.port, "Content-Length: 1000") as one,
        raw_head(predictor.port, "Content-Length: 1000") as two,
    ):
        deadline = time.monotonic() + 10
        while sample(predictor.url, "dermaops_requests_in_flight") < 2:
            assert time.monotonic() < deadline, "the two slow bodies hold no place"
            time.sleep(0.05)
        started = time.monotonic()
        late = httpx.post(predictor.url + V1, content=body, timeout=30)
        waited = time.monotonic() - started
        assert late.status_code == 503 and late.headers["retry-after"] == "1", late.text
        assert "no place within 3 s" in late.json()["error"] and QUEUE_WAIT <= waited < 10
        for slow in (one, two):
            slow.sendall(b" " * 1000)
            assert whole_answer(slow).startswith("HTTP/1.1 400")  # spaces are no JSON
    assert refused_total(predictor.url, "queue_timeout") - timed_out_before == 1
    assert httpx.post(predictor.url + V1, content=body, timeout=30).status_code == 200


def test_bodies_past_the_memory_budget_get_503_until_it_frees(
    predictor: PredictorProcess, jpeg_bytes: Callable[..., bytes]
) -> None:
    """A 1.5 MB body still arriving holds its bytes: a 1.9 MB one beside it would pass the 3 MB
    the replica's memory takes, and is refused at once; once the first is answered it is taken."""
    body = _body(jpeg_bytes(600, 450))
    second = body + b" " * (1_900_000 - len(body))
    refused_before = refused_total(predictor.url, "memory")
    with raw_head(predictor.port, "Content-Length: 1500000") as slow:
        slow.sendall(b" " * 1000)  # and the rest later
        deadline = time.monotonic() + 10
        while sample(predictor.url, "dermaops_request_bytes_in_flight") < 1_500_000:
            assert time.monotonic() < deadline, "the first body is not counted"
            time.sleep(0.05)
        with raw_head(predictor.port, f"Content-Length: {len(second)}") as other:
            head = whole_answer(other)
        assert head.startswith("HTTP/1.1 503") and "retry-after: 1" in head.lower()
        assert "bytes of requests being handled" in head
        slow.sendall(b" " * (1_500_000 - 1000))
        assert whole_answer(slow).startswith("HTTP/1.1 400")  # spaces are no JSON
    assert refused_total(predictor.url, "memory") - refused_before == 1
    assert sample(predictor.url, "dermaops_request_bytes_in_flight") == 0
    taken = httpx.post(predictor.url + V1, content=second, timeout=60)
    assert taken.status_code == 200, taken.text


def test_a_request_past_its_deadline_gets_504(
    served_model: Path, tmp_path: Path, jpeg_bytes: Callable[..., bytes]
) -> None:
    env = {"DERMAOPS_SERVING_REQUEST_TIMEOUT_S": "0.001"}
    with PredictorProcess(served_model, tmp_path / "home", tmp_path / "log", env=env) as p:
        late = httpx.post(p.url + V1, content=_body(jpeg_bytes(600, 450), 8), timeout=60)
        assert late.status_code == 504 and "no answer within 0.001 s" in late.json()["error"]
        assert refused_total(p.url, "deadline") == 1
        assert httpx.get(f"{p.url}/v2/health/ready", timeout=10).status_code == 200
