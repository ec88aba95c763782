"""End-to-end fixtures: the installed `dermaops` command, run as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fault_server import FaultyServer

DERMAOPS = Path(sys.executable).with_name("dermaops")


@pytest.fixture
def cli(dermaops_home: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ``dermaops ARGS`` in a subprocess with this test's DERMAOPS_HOME."""

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = os.environ | {"DERMAOPS_HOME": str(dermaops_home)}
        result = subprocess.run(
            [str(DERMAOPS), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"dermaops {' '.join(args)} failed:\n{result.stderr}")
        return result

    return run


@pytest.fixture
def http_server() -> Iterator[FaultyServer]:
    with FaultyServer() as server:
        yield server
