"""A predictor as its own process on a free loopback port: for `bench serve` and the tests."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from dermaops.net import free_port, stop, wait_until_ready


@contextmanager
def predictor_process(
    model: Path,
    home: Path,
    log: Path,
    args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    wait: float = 180,
) -> Iterator[str]:
    """``python -m dermaops.serving`` for ``model`` (gRPC off), its URL once ready; stopped after.

    Raises:
        DermaOpsError: it exited or was not ready within ``wait`` seconds (with its log's tail).
    """
    port = free_port()
    command = [sys.executable, "-m", "dermaops.serving", "--model_dir", str(model),
               "--http_port", str(port), "--enable_grpc", "false", *args]  # fmt: skip
    environment = os.environ | {"DERMAOPS_HOME": str(home)} | (env or {})
    with log.open("w") as out:
        process = subprocess.Popen(command, env=environment, stdout=out, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_ready(f"{url}/v2/health/ready", wait, process, log)
        yield url
    finally:
        stop(process)
