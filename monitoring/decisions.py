"""The monitor's retraining decisions on disk: what survives a restart of the monitor.

``retraining.json`` holds when the last retraining run started (wall-clock seconds, so that the
cooldown outlives the process) and which process it is: its pid and the kernel's start time of
that pid, so that a pid reused after a restart is never taken for the run. It is written
atomically (a temporary file, fsync, rename): a monitor killed mid-write leaves the old state or
the new one, never half. ``triggers.jsonl`` is the decision log, one JSON object per line; a
line torn by a kill mid-write is ended before the next is appended, and skipped with a warning
when the log is read back.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dermaops.inference_log import end_torn_line, parse_json_lines

log = logging.getLogger(__name__)

STATE_NAME, LOG_NAME = "retraining.json", "triggers.jsonl"


@dataclass(frozen=True)
class LastRun:
    """The last retraining run started: when, and which process (pid 0: not started yet)."""

    started: float  # time.time() when it was decided
    pid: int = 0
    pid_start: str = ""  # field 22 of /proc/PID/stat: tells this process from a reused pid

    def alive(self) -> bool:
        """Whether that very process still runs (never true for a pid reused by another)."""
        return bool(self.pid) and process_start(self.pid) == self.pid_start


def process_start(pid: int) -> str:
    """The kernel's start time of ``pid`` (clock ticks after boot); empty when it is not running
    (gone, a zombie, or no /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    fields = stat.rsplit(")", 1)[-1].split()  # after "pid (comm)": field 3 onwards
    if len(fields) < 20 or fields[0] == "Z":
        return ""
    return fields[19]


def load_last_run(folder: Path) -> LastRun | None:
    """The saved state, or None when there is none; an unreadable file is reported and ignored."""
    path = folder / STATE_NAME
    try:
        data = json.loads(path.read_text())
        return LastRun(float(data["started"]), int(data.get("pid", 0)),
                       str(data.get("pid_start", "")))  # fmt: skip
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError) as e:
        log.warning("ignoring the retraining state in %s: %s", path, e)
        return None


def save_last_run(folder: Path, run: LastRun) -> None:
    """Replace the saved state atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=folder, prefix=f".{STATE_NAME}.",
                                     delete=False) as f:  # fmt: skip
        json.dump(asdict(run), f)
        f.flush()
        os.fsync(f.fileno())
    Path(f.name).replace(folder / STATE_NAME)


def append_decision(folder: Path, decision: dict[str, Any]) -> None:
    """One line on the decision log, on disk before this returns."""
    folder.mkdir(parents=True, exist_ok=True)
    end_torn_line(folder / LOG_NAME)
    with (folder / LOG_NAME).open("a") as f:
        f.write(json.dumps(decision) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_decisions(folder: Path, limit: int) -> list[dict[str, Any]]:
    """The last ``limit`` decisions, oldest first; damaged lines are skipped with a warning."""
    path = folder / LOG_NAME
    try:
        decisions = parse_json_lines(path.read_bytes(), path)
    except FileNotFoundError:
        return []
    return decisions[-limit:] if limit > 0 else []
