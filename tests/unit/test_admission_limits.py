"""What one replica admits, from its settings, its memory limit and what it holds already."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from dermaops.serving import guards
from dermaops.serving.settings import BODY_PEAK, ServingSettings

GIB = 2**30


@pytest.fixture
def cgroup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    v2, v1 = tmp_path / "memory.max", tmp_path / "memory.limit_in_bytes"
    monkeypatch.setattr(guards, "CGROUP_MEMORY_LIMITS", (v2, v1))
    # a replica's resident memory after loading the model, not whatever the test process holds
    monkeypatch.setattr(guards, "resident_bytes", lambda: 400 * 2**20)
    return v2, v1


def test_the_memory_limit_is_the_cgroups_v2_then_v1_else_the_machines(
    cgroup: tuple[Path, Path],
) -> None:
    v2, v1 = cgroup
    machine = guards.memory_limit()  # neither file
    assert machine > 0
    v2.write_text("max\n")  # v2 without a limit
    v1.write_text(f"{3 * GIB}\n")
    assert guards.memory_limit() == 3 * GIB
    v2.write_text(f"{GIB}\n")
    assert guards.memory_limit() == GIB
    v2.unlink()
    v1.write_text("9223372036854771712\n")  # v1's "no limit"
    assert guards.memory_limit() == machine


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
    roomy = guards.admission_limits(settings, threads=2)
    assert roomy.max_body_bytes == settings.body_limit()  # 8 images of 25 MB: about 280 MB
    assert roomy.max_bytes_in_flight > roomy.max_body_bytes
    assert roomy.max_in_flight == 8

    cgroup[0].write_text(f"{GIB}\n")
    with caplog.at_level(logging.WARNING, "dermaops.serving"):
        tight = guards.admission_limits(ServingSettings(max_instances=32), threads=2)
    assert (
        tight.max_body_bytes
        == tight.max_bytes_in_flight
        < ServingSettings(max_instances=32).body_limit()
    )
    assert "larger ones get 413" in caplog.text
