"""Integration fixtures: real servers on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fault_server import FaultyServer


@pytest.fixture
def http_server() -> Iterator[FaultyServer]:
    with FaultyServer() as server:
        yield server
