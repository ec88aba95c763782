"""The inference log: JSON lines, one per image the predictor classified.

Each line holds the image's statistics, the embedding projections and the prediction, never
pixels. The predictor writes it (and forwards each line to the monitor); the monitor writes
what it receives and reads the latest window for drift.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

LOG_NAME = "predictions.jsonl"
log = logging.getLogger(__name__)


def parse_json_lines(data: bytes, source: Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSON-lines file's bytes; a damaged line (a write cut short, say) is
    skipped, with one warning naming ``source``."""
    records, damaged = [], 0
    for line in data.splitlines():
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            record = None
        if isinstance(record, dict):
            records.append(record)
        elif line.strip():
            damaged += 1
    if damaged:
        log.warning("skipped %d damaged line(s) in %s (a write cut short?)", damaged, source)
    return records


def end_torn_line(path: Path) -> bool:
    """End a JSON-lines file whose last line was cut short (its writer killed mid-write), so the
    next line appended starts on a line of its own; the torn line stays for readers to skip.
    Whether there was one."""
    try:
        with path.open("rb") as f:
            f.seek(0, 2)
            if f.tell() == 0:
                return False
            f.seek(-1, 2)
            if f.read(1) == b"\n":
                return False
    except FileNotFoundError:
        return False
    with path.open("ab") as f:
        f.write(b"\n")
    log.warning("%s ended in a torn line (a write cut short); it will be skipped", path)
    return True


class InferenceLog:
    """Append-only JSON lines under a folder, rotated at ``max_bytes`` keeping ``backups``."""

    def __init__(self, folder: Path, max_bytes: int = 50 * 2**20, backups: int = 5):
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / LOG_NAME
        end_torn_line(self.path)
        self._logger = logging.getLogger(f"dermaops.inference_log.{id(self)}")
        self._logger.propagate = False
        self._logger.setLevel(logging.INFO)
        handler = logging.handlers.RotatingFileHandler(
            self.path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
        )
        handler.setFormatter(logging.Formatter("%(message)s"))
        self._logger.addHandler(handler)

    def write(self, record: dict[str, Any]) -> None:
        stamped = {"time": datetime.now(UTC).isoformat(timespec="milliseconds"), **record}
        self._logger.info(json.dumps(stamped, separators=(",", ":")))

    def close(self) -> None:
        for handler in list(self._logger.handlers):
            handler.close()
            self._logger.removeHandler(handler)
