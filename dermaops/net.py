"""Small loopback helpers shared by the CLI, the benchmarks and the tests."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import httpx

from dermaops.errors import DermaOpsError


def free_port() -> int:
    """A TCP port nothing listens on now (on 127.0.0.1)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def answers_ok(url: str, timeout: float = 2) -> bool:
    """Whether ``url`` answers 200 now; no answer at all is a no."""
    try:
        return httpx.get(url, timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def wait_until_ready(
    url: str,
    seconds: float,
    process: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> None:
    """Poll ``url`` until it answers 200; fail early if ``process`` exits.

    Raises:
        DermaOpsError: the process exited (with the tail of ``log``) or time ran out.
    """
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            tail = log.read_text()[-3000:] if log and log.is_file() else ""
            raise DermaOpsError(f"the server behind {url} exited:\n{tail}")
        if answers_ok(url):
            return
        time.sleep(0.3)
    raise DermaOpsError(f"{url} did not answer 200 within {seconds:.0f} s")


def stop(process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """Terminate ``process``; kill it if it has not exited within ``timeout`` seconds."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
