"""How many CPUs this process may use: its container's CPU limit, not the host's cores.

A pod's ``limits.cpu`` becomes a CFS quota on its cgroup (v2 ``cpu.max``, v1
``cpu.cfs_quota_us`` over ``cpu.cfs_period_us``); ``os.cpu_count()`` still reports every core of
the node. A thread pool sized from the cores runs more threads than the quota lets run, and the
kernel throttles them all for the rest of each period: latency with no gain.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class CpuBudget:
    """The CPUs to size thread pools by, and where the number came from."""

    threads: int
    source: str  # "cgroup-v2", "cgroup-v1" (the quota), or "cores" (no quota below them)


def cpu_budget(root: Path = CGROUP) -> CpuBudget:
    """The container's CPU quota rounded up (a 1.5-CPU limit runs two threads), capped by the
    cores this process may run on; the cores where there is no quota."""
    cores = _cores()
    for source, quota in (("cgroup-v2", _v2_quota(root)), ("cgroup-v1", _v1_quota(root))):
        if quota is not None:
            return CpuBudget(max(1, min(cores, math.ceil(quota))), source)
    return CpuBudget(cores, "cores")


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def _v2_quota(root: Path) -> float | None:
    """``cpu.max`` is "QUOTA PERIOD" in microseconds, or "max PERIOD" without a limit."""
    fields = _read(root / "cpu.max").split()
    if len(fields) != 2 or not fields[0].isdigit() or not fields[1].isdigit():
        return None
    return int(fields[0]) / int(fields[1]) if int(fields[1]) else None


def _v1_quota(root: Path) -> float | None:
    """v1: ``cpu.cfs_quota_us`` over ``cpu.cfs_period_us``; the quota is -1 without a limit."""
    for folder in (root / "cpu", root / "cpu,cpuacct"):
        quota, period = _read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us")
        if quota.isdigit() and period.isdigit() and int(period):
            return int(quota) / int(period)
    return None


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""
