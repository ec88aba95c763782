"""A DermaOps process ends without the collector's last sweep, and only at its end."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import atexit, gc
atexit.register(lambda: print("frozen at exit:", gc.get_freeze_count() > 0))  # runs last
from dermaops.exit import skip_final_collection
skip_final_collection()
print("frozen while running:", gc.get_freeze_count() > 0)
"""


def test_objects_are_frozen_at_exit_not_while_the_process_runs() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert out.splitlines() == ["frozen while running: False", "frozen at exit: True"]
