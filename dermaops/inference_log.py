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


class InferenceLog:
    """Append-only JSON lines under a folder, rotated at ``max_bytes`` keeping ``backups``."""

    def __init__(self, folder: Path, max_bytes: int = 50 * 2**20, backups: int = 5):
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / LOG_NAME
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
