"""``dermaops bench serve --profile``: where a served request's time goes, sampled by py-spy.

py-spy samples every Python thread of the running predictor (no restart, no instrumentation)
while the bench sends requests one at a time; each sample is put under the innermost of the
request path's steps it is inside (the decode, the forward pass, the scoring, the answer, the
statistics and records after it), or under the event loop's own work (HTTP, routing, KServe's
and our middleware) when it is a callback of the loop and none of those. Samples of a waiting
thread (the loop in ``select``, an idle worker, the records thread between batches) are left
out, so the figures are milliseconds of a thread's work per request: on 2 cores, the parts run
partly at once, and their sum can exceed the round trip.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from dermaops.errors import ConfigError, DermaOpsError

PY_SPY = "py-spy"
RATE_HZ = 250  # py-spy shares the cores it samples: a low rate disturbs the server least
MIN_REQUESTS = 1000  # at 250 Hz, some 2,000 samples of a thread at the demo model's speed
#: The request path's steps, each named by the functions that are it (innermost match wins).
STEPS: dict[str, tuple[str, ...]] = {
    # _pixels: the decode's name until 71ec5d2, for the "before" of docs/benchmarks.md
    "decode": ("DermaOpsModel._seen", "DermaOpsModel._pixels"),
    "forward": ("OnnxBackend.__call__", "TorchBackend.__call__"),
    "scoring": ("DermaOpsModel._score",),
    "counting": ("DermaOpsModel.predict",),
    "thread hand-offs": (
        "ThreadPoolExecutor.submit",
        "BaseSelectorEventLoop._write_to_self",
        "Recorder.submit",
    ),
    "answer": ("DermaOpsModel.postprocess",),
    "statistics": ("image_stats",),
    "records": ("Recorder._record",),
}
LOOP = "event loop"  # a loop callback inside none of the steps: HTTP, routing, middleware
#: Where a thread waits: a sample whose innermost frame is one of these is not work.
WAITING = frozenset({
    "EpollSelector.select", "Condition.wait", "_worker", "Thread._wait_for_tstate_lock",
    "Event.wait", "Queue.get", "RecordForwarder._take",
})  # fmt: skip


class ProfileError(DermaOpsError):
    """py-spy could not sample the predictor."""


def py_spy() -> str:
    """py-spy's path.

    Raises:
        ConfigError: not installed (it is in the dev extra: ``make venv``).
    """
    found = shutil.which(PY_SPY) or shutil.which(PY_SPY, path=str(Path(sys.executable).parent))
    if not found:
        raise ConfigError(
            "--profile samples the predictor with py-spy, which is not installed: "
            "pip install py-spy (the dev extra has it)"
        )
    return found


def profiled(pid: int, requests: int, send: Callable[[int], Mapping[str, Any]]) -> dict[str, Any]:
    """Sample process ``pid`` while ``send(requests)`` sends its requests one at a time (and
    returns their summary, ``p50_ms`` in it); the milliseconds of work per request in each step
    (:func:`summary`) and the p50 while sampled (py-spy's own cost shows in it).

    Raises:
        ProfileError: py-spy failed (no permission to read the process's memory, usually).
    """
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.txt"
        command = [py_spy(), "record", "--pid", str(pid), "--rate", str(RATE_HZ), "--format",
                   "raw", "--output", str(raw), "--threads", "--idle", "--nonblocking"]  # fmt: skip
        spy = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            first = spy.stdout.readline().decode(errors="replace") if spy.stdout else ""
            if not first.startswith("py-spy> Sampling"):  # else an error, and py-spy exits
                raise ProfileError(
                    f"py-spy could not sample pid {pid}: {first.strip()} (it reads another "
                    "process's memory: run as root, with CAP_SYS_PTRACE in a container, or "
                    "with kernel.yama.ptrace_scope 0)"
                )
            sent = send(requests)
        finally:
            if spy.poll() is None:
                spy.send_signal(signal.SIGINT)  # py-spy writes its samples on an interrupt
            out, _ = spy.communicate(timeout=60)
        if not raw.is_file():
            raise ProfileError(f"py-spy wrote no samples of pid {pid}: {out.decode()[-500:]}")
        return {**summary(raw.read_text(), requests), "p50_ms_sampled": sent["p50_ms"]}


def summary(raw: str, requests: int, rate_hz: int = RATE_HZ) -> dict[str, Any]:
    """Milliseconds of work per request in each step, and each step's share of all the work,
    from py-spy's raw output (one line per stack: ``thread (id): name;frame;frame... count``)
    of ``requests`` requests."""
    work: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [_function(f) for f in stack.split(";")[1:]]
        if not frames or frames[-1] in WAITING:
            continue
        step = _step(frames)
        if step:
            work[step] += int(count)
    per_request = 1000 / rate_hz / requests
    order = [*STEPS, LOOP]
    total = sum(work.values()) or 1
    return {
        "requests": requests,
        "rate_hz": rate_hz,
        "ms_per_request": {s: round(work[s] * per_request, 3) for s in order if work[s]},
        "share": {s: round(work[s] / total, 3) for s in order if work[s]},
    }


def _function(frame: str) -> str:
    """``Class.method`` of a raw frame ``Class.method (path:line)``."""
    return frame.partition(" (")[0]


def _step(frames: list[str]) -> str | None:
    """The innermost step a stack is in; the loop's own work; None: neither (startup, the
    threads of other libraries)."""
    for name in reversed(frames):
        for step, functions in STEPS.items():
            if name in functions:
                return step
    return LOOP if "Handle._run" in frames else None
