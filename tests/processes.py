"""Background processes for the end-to-end tests, stopped when their ExitStack closes."""

from __future__ import annotations

import subprocess
from contextlib import ExitStack
from pathlib import Path

from dermaops.net import stop


def start(
    stack: ExitStack, command: list[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Run ``command`` with its output in ``log``; terminated (then killed) on leaving ``stack``."""
    with log.open("w") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    stack.callback(stop, process)
    return process
