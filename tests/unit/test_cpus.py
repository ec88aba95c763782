"""Threads by the container's CPU limit: cgroup v2 ``cpu.max``, v1's CFS quota, else the cores."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from dermaops import cpus
from dermaops.cpus import CoreSplit, CpuBudget, cpu_budget, pinned, split_cores
from dermaops.errors import ConfigError


@pytest.fixture
def eight_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpus, "_cores", lambda: 8)


@pytest.mark.usefixtures("eight_cores")
@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [
        ("100000 100000", CpuBudget(1, "cgroup-v2")),  # limits.cpu: 1
        ("150000 100000", CpuBudget(2, "cgroup-v2")),  # 1.5 CPUs: two threads, rounded up
        ("50000 100000", CpuBudget(1, "cgroup-v2")),  # 500m: never fewer than one
        ("6400000 100000", CpuBudget(8, "cgroup-v2")),  # a quota above the cores: the cores
        ("max 100000", CpuBudget(8, "cores")),  # no limit
        ("garbage", CpuBudget(8, "cores")),
    ],
)
def test_cgroup_v2_quota(tmp_path: Path, cpu_max: str, expected: CpuBudget) -> None:
    (tmp_path / "cpu.max").write_text(cpu_max + "\n")
    assert cpu_budget(tmp_path) == expected


@pytest.mark.usefixtures("eight_cores")
@pytest.mark.parametrize("folder", ["cpu", "cpu,cpuacct"])
def test_cgroup_v1_quota(tmp_path: Path, folder: str) -> None:
    (tmp_path / folder).mkdir()
    (tmp_path / folder / "cpu.cfs_period_us").write_text("100000\n")
    (tmp_path / folder / "cpu.cfs_quota_us").write_text("300000\n")
    assert cpu_budget(tmp_path) == CpuBudget(3, "cgroup-v1")
    (tmp_path / folder / "cpu.cfs_quota_us").write_text("-1\n")  # v1's "no limit"
    assert cpu_budget(tmp_path) == CpuBudget(8, "cores")


def test_no_cgroup_files_means_the_cores_this_process_may_use(tmp_path: Path) -> None:
    budget = cpu_budget(tmp_path)
    assert budget.source == "cores" and budget.threads >= 1


def test_a_benchmarks_client_takes_the_first_cores_and_leaves_the_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {4, 5, 6, 7})
    assert split_cores(0) is None  # shared: nothing pinned
    split = split_cores(1)
    assert split == CoreSplit(frozenset({4}), frozenset({5, 6, 7}))
    assert split.describe() == "client on cores 4; predictor and in-process reference on cores 5-7"
    assert split_cores(3) == CoreSplit(frozenset({4, 5, 6}), frozenset({7}))
    for every in (4, 5):
        with pytest.raises(ConfigError, match="choose 0 \\(shared\\) to 3; 4 are usable here"):
            split_cores(every)


def test_pinned_moves_the_calling_thread_and_what_it_starts_then_restores_it() -> None:
    before = os.sched_getaffinity(0)
    if len(before) < 2:
        pytest.skip("one usable core: pinning to it moves nothing")
    one = frozenset({min(before)})
    seen: list[set[int]] = []
    with pinned(one):
        assert os.sched_getaffinity(0) == one
        started = threading.Thread(target=lambda: seen.append(os.sched_getaffinity(0)))
        started.start()
        started.join()
    assert seen == [one], "a thread started while pinned inherits the cores"
    assert os.sched_getaffinity(0) == before
    with pinned(None):
        assert os.sched_getaffinity(0) == before
