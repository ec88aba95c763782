"""Threads by the container's CPU limit: cgroup v2 ``cpu.max``, v1's CFS quota, else the cores."""

from __future__ import annotations

from pathlib import Path

import pytest

from dermaops import cpus
from dermaops.cpus import CpuBudget, cpu_budget


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
