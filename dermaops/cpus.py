"""How many CPUs this process may use: its container's CPU limit, not the host's cores.

A pod's ``limits.cpu`` becomes a CFS quota on its cgroup (v2 ``cpu.max``, v1
``cpu.cfs_quota_us`` over ``cpu.cfs_period_us``); ``os.cpu_count()`` still reports every core of
the node. A thread pool sized from the cores runs more threads than the quota lets run, and the
kernel throttles them all for the rest of each period: latency with no gain.

A benchmark may also split the usable cores between its client and what it measures
(:func:`split_cores`, :func:`pinned`), so that the client does not take the measured side's CPUs.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from dermaops.errors import ConfigError

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


#: What a benchmark without a split says of where its sides ran (and its result files before
#: ``--client-cores`` existed meant).
SHARED = "client, predictor and in-process reference share every core"


@dataclass(frozen=True)
class CoreSplit:
    """A benchmark's cores: the client's, and the rest for what it measures (the predictor and
    the in-process reference alike), as a client on another machine would leave them."""

    client: frozenset[int]
    measured: frozenset[int]

    def describe(self) -> str:
        return (f"client on cores {_span(self.client)}; predictor and in-process reference on "
                f"cores {_span(self.measured)}")  # fmt: skip


def split_cores(client: int) -> CoreSplit | None:
    """The first ``client`` usable cores for a benchmark's client, the rest for what it
    measures; None for 0 (everything shares every core).

    Raises:
        ConfigError: not Linux (no affinity), or no core would be left to measure.
    """
    if client == 0:
        return None
    if not hasattr(os, "sched_setaffinity"):
        raise ConfigError("a core of its own for the client needs Linux's CPU affinity")
    usable = sorted(os.sched_getaffinity(0))
    if not 0 < client < len(usable):
        raise ConfigError(f"{client} cores for the client: choose 0 (shared) to "
                          f"{len(usable) - 1}; {len(usable)} are usable here")  # fmt: skip
    return CoreSplit(frozenset(usable[:client]), frozenset(usable[client:]))


@contextmanager
def pinned(cores: frozenset[int] | None) -> Iterator[None]:
    """Run the calling thread on ``cores`` (None: unchanged), and so the threads and processes
    it starts meanwhile, which inherit it; its own affinity comes back after."""
    if cores is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cores)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def _span(cores: frozenset[int]) -> str:
    ordered = sorted(cores)
    if len(ordered) > 1 and ordered[-1] - ordered[0] == len(ordered) - 1:
        return f"{ordered[0]}-{ordered[-1]}"
    return ",".join(map(str, ordered))


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
