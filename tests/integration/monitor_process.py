"""`dermaops monitor serve` as a process on loopback, as the chart runs it, for the tests."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from dermaops.net import free_port, stop, wait_until_ready
from tests.e2e.conftest import DERMAOPS

TOKEN = "test-token-9f2c"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass(frozen=True)
class Monitor:
    url: str
    process: subprocess.Popen[bytes]
    log: Path


@contextmanager
def monitor_process(
    home: Path,
    reference: Path,
    log_dir: Path,
    retrain: str,
    cooldown: float = 3600,
    env: dict[str, str] | None = None,
    wait_for: str = "/summary",
    args: Sequence[str] = (),
) -> Iterator[Monitor]:
    """A monitor with the first scheduled drift run done (``wait_for``), stopped afterwards.
    Its decisions and reports go to ``home``/monitoring; ``args`` are more flags."""
    port = free_port()
    command = [str(DERMAOPS), "monitor", "serve", "--port", str(port),
               "--reference", str(reference), "--log-dir", str(log_dir), "--interval", "3600",
               "--cooldown", str(cooldown), "--retrain-command", retrain, *args]  # fmt: skip
    token = home / "test-token"
    token.parent.mkdir(parents=True, exist_ok=True)
    token.write_text(TOKEN + "\n")
    full_env = os.environ | {"DERMAOPS_HOME": str(home), "DERMAOPS_DRIFT_MIN_ROWS": "20",
                             "DERMAOPS_DRIFT_REFERENCE_SPLIT": "all",
                             "DERMAOPS_MONITOR_TOKEN_FILE": str(token), **(env or {})}  # fmt: skip
    log = home / f"monitor-{port}.log"
    with log.open("w") as out:
        process = subprocess.Popen(command, env=full_env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(f"{url}{wait_for}", 120, process, log)
        yield Monitor(url, process, log)
    finally:
        if process.poll() is None:
            stop(process)
