"""What one replica admits, from its settings, its memory limit and what it holds already."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from dermaops.serving import admission
from dermaops.serving.settings import BODY_PEAK, ServingSettings

GIB = 2**30


@pytest.fixture
def cgroup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    v2, v1 = tmp_path / "memory.max", tmp_path / "memory.limit_in_bytes"
    monkeypatch.setattr(admission, "CGROUP_MEMORY_LIMITS", (v2, v1))
    # a replica's resident memory after loading the model, not whatever the test process holds
    monkeypatch.setattr(admission, "resident_bytes", lambda: 400 * 2**20)
    return v2, v1


def test_the_memory_limit_is_the_cgroups_v2_then_v1_else_the_machines(
    cgroup: tuple[Path, Path],
) -> None:
    v2, v1 = cgroup
    machine = admission.memory_limit()  # neither file
    assert machine > 0
    v2.write_text("max\n")  # v2 without a limit
    v1.write_text(f"{3 * GIB}\n")
    assert admission.memory_limit() == 3 * GIB
    v2.write_text(f"{GIB}\n")
    assert admission.memory_limit() == GIB
    v2.unlink()
    v1.write_text("9223372036854771712\n")  # v1's "no limit"
    assert admission.memory_limit() == machine


def test_bytes_in_flight_follow_the_memory_limit_unless_set() -> None:
    derived = ServingSettings().bytes_in_flight_limit(3 * GIB, 400 * 2**20)
    assert derived == int((0.9 * 3 * GIB - 400 * 2**20) / BODY_PEAK)
    assert ServingSettings(max_bytes_in_flight=5).bytes_in_flight_limit(3 * GIB, 0) == 5
    assert ServingSettings().bytes_in_flight_limit(100, 400) == 0


def test_a_body_limit_the_memory_cannot_hold_is_lowered_with_a_warning(
    cgroup: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    cgroup[0].write_text(f"{3 * GIB}\n")
    settings = ServingSettings(max_instances=8, max_in_flight=8)
    roomy = admission.admission_limits(settings, threads=2)
    assert roomy.max_body_bytes == settings.body_limit()  # 8 images of 25 MB: about 280 MB
    assert roomy.max_bytes_in_flight > roomy.max_body_bytes
    assert roomy.max_in_flight == 8

    cgroup[0].write_text(f"{GIB}\n")
    with caplog.at_level(logging.WARNING, "dermaops.serving"):
        tight = admission.admission_limits(ServingSettings(max_instances=32), threads=2)
    assert (
        tight.max_body_bytes
        == tight.max_bytes_in_flight
        < ServingSettings(max_instances=32).body_limit()
    )
    assert "larger ones get 413" in caplog.text


def test_the_queue_is_ten_times_the_places_unless_set_and_waits_within_the_deadline() -> None:
    assert ServingSettings().queue_limit(8) == 80  # Knative's queue-proxy: 10 x concurrency
    assert ServingSettings(max_queue=0).queue_limit(8) == 0  # refuse at once, as before
    assert ServingSettings(max_queue=5).queue_limit(8) == 5
    assert ServingSettings(request_timeout_s=60).queue_wait_s() == 60
    assert ServingSettings(request_timeout_s=60, queue_timeout_s=5).queue_wait_s() == 5
    assert ServingSettings(request_timeout_s=2, queue_timeout_s=5).queue_wait_s() == 2


async def _take_in_turn(places: admission.Places, name: str, order: list[str]) -> None:
    await places.take(timeout=5)
    order.append(name)


def test_places_go_to_waiters_first_come_first_served() -> None:
    async def run() -> list[str]:
        places, order = admission.Places(size=1, max_waiting=3), []
        await places.take(timeout=1)  # the one place, held
        waiting = [asyncio.create_task(_take_in_turn(places, n, order)) for n in "abc"]
        await asyncio.sleep(0.01)
        assert places.waiting == 3
        with pytest.raises(admission.QueueFullError):
            await places.take(timeout=1)
        for _ in "abc":
            places.give_back()  # each freed place goes to the oldest waiter
            await asyncio.sleep(0.01)
        await asyncio.gather(*waiting)
        places.give_back()
        assert places.free == 1 and places.waiting == 0
        return order

    assert asyncio.run(run()) == ["a", "b", "c"]


def test_a_wait_that_runs_out_leaves_the_line_and_loses_no_place() -> None:
    async def run() -> None:
        places = admission.Places(size=1, max_waiting=2)
        await places.take(timeout=1)
        with pytest.raises(TimeoutError):
            await places.take(timeout=0.02)
        assert places.waiting == 0  # gone from the line
        places.give_back()
        assert places.free == 1  # not handed to the one that left
        await places.take(timeout=0.02)  # and a newcomer takes it at once

    asyncio.run(run())


def test_inference_answers_are_counted_by_version_and_status_class() -> None:
    """What a canary's 5xx share is read from: every inference answer counted once under the
    served version (2xx, 4xx, 5xx; an app that raised is a 5xx), other paths not at all."""
    from prometheus_client import REGISTRY

    answers = {"/v1/models/m:predict": 200, "/v1/models/m:explain": 400,
               "/v2/models/m/infer": 503, "/v2/models/m/ready": 200, "/metrics": 200}  # fmt: skip

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/v2/models/m/versions/2/infer":
            raise RuntimeError("the model failed")
        await send({"type": "http.response.start", "status": answers[scope["path"]]})
        await send({"type": "http.response.body", "body": b""})

    async def sent(message: Any) -> None:
        pass

    def counts() -> dict[str, float | None]:
        return {code: REGISTRY.get_sample_value("dermaops_inference_responses_total",
                                                {"model_version": "counted-9", "code": code})
                for code in ("2xx", "4xx", "5xx")}  # fmt: skip

    assert set(counts().values()) == {None}
    counted = admission.CountedResponses(app, version="counted-9")
    assert counts() == {"2xx": 0, "4xx": 0, "5xx": 0}, "every series from the start"
    for path in answers:
        asyncio.run(counted({"type": "http", "path": path}, sent, sent))
    with pytest.raises(RuntimeError):
        asyncio.run(counted({"type": "http", "path": "/v2/models/m/versions/2/infer"}, sent, sent))
    assert counts() == {"2xx": 1, "4xx": 1, "5xx": 2}

    async def gone(scope: Any, receive: Any, send: Any) -> None:
        raise asyncio.CancelledError  # the caller went away before any answer

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(admission.CountedResponses(gone, version="counted-9")(
            {"type": "http", "path": "/v1/models/m:predict"}, sent, sent))  # fmt: skip
    assert counts() == {"2xx": 1, "4xx": 1, "5xx": 2}, "not an error of the model's"
