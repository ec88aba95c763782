"""Integration fixtures: real servers on loopback."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from dermaops.data.prepare import PrepareSettings, prepare
from tests.fault_server import FaultyServer


@pytest.fixture
def http_server() -> Iterator[FaultyServer]:
    with FaultyServer() as server:
        yield server


@pytest.fixture(scope="session")
def prepared_small(synth_raw: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 80-image generated set, prepared."""
    out = tmp_path_factory.mktemp("prepared") / "small"
    prepare(synth_raw, out, PrepareSettings(workers=2, max_share_gap=0.5))
    return out


def free_port() -> int:
    """A TCP port nothing listens on now (on 127.0.0.1)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
