"""A DermaOps process ends without the collector's last sweep, and only at its end."""

from __future__ import annotations

import atexit
import gc
import subprocess
import sys

import pytest

from dermaops.exit import skip_final_collection

FROZEN_AT_EXIT = """
import atexit, gc
atexit.register(lambda: print("frozen at exit:", gc.get_freeze_count() > 0))  # runs last
"""
PROBE = f"""{FROZEN_AT_EXIT}
from dermaops.exit import skip_final_collection
skip_final_collection()
print("frozen while running:", gc.get_freeze_count() > 0)
"""
CLI = f"""{FROZEN_AT_EXIT}
import sys
from dermaops.cli import main
sys.argv = ["dermaops", "--help"]
main()
"""


def run(code: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip
    return [line for line in done.stdout.splitlines() if line.startswith("frozen")]


def test_objects_are_frozen_at_exit_not_while_the_process_runs() -> None:
    assert run(PROBE) == ["frozen while running: False", "frozen at exit: True"]


def test_it_is_registered_once_however_often_it_is_called(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registered: list[object] = []
    monkeypatch.setattr(atexit, "register", registered.append)
    skip_final_collection.cache_clear()
    skip_final_collection()
    skip_final_collection()
    assert registered == [gc.freeze]


def test_the_command_line_ends_that_way() -> None:
    assert run(CLI) == ["frozen at exit: True"]
