"""Ship inference-log records to the monitor: statistics and predictions, never pixels.

In a cluster the predictor and the monitor run in separate pods, so the predictor posts each
record (the same line it writes to its own log) to the monitor's ``/records``. A daemon thread
sends them in batches; serving never waits for the monitor, and while the monitor is away
records are dropped and counted rather than piled up in memory.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

import httpx
from prometheus_client import Counter

log = logging.getLogger(__name__)

RECORDS = Counter(
    "dermaops_monitor_records", "Inference-log records for the monitor, by outcome.", ["outcome"]
)


class RecordForwarder:
    """POST ``{"records": [...]}`` to ``url`` with the monitor's bearer ``token``, in batches of
    up to ``batch`` every ``interval`` s."""

    def __init__(
        self,
        url: str,
        token: str,
        batch: int = 64,
        interval: float = 1.0,
        max_queue: int = 10_000,
        timeout: float = 5.0,
    ):
        self.url = url.rstrip("/") + "/records"
        self.batch, self.interval, self.timeout = batch, interval, timeout
        self._headers = {"Authorization": f"Bearer {token}"}
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue(max_queue)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dermaops-forward", daemon=True)
        self._thread.start()

    def write(self, record: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            RECORDS.labels("dropped").inc()

    def _run(self) -> None:
        with httpx.Client(timeout=self.timeout, headers=self._headers) as client:
            while not (self._stop.is_set() and self._queue.empty()):
                records = self._take()
                if records:
                    self._send(client, records)

    def _take(self) -> list[dict[str, Any]]:
        """Up to ``batch`` records, waiting at most ``interval`` for the first ones."""
        records: list[dict[str, Any]] = []
        deadline = time.monotonic() + self.interval
        while len(records) < self.batch:
            try:
                records.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
        return records

    def _send(self, client: httpx.Client, records: list[dict[str, Any]]) -> None:
        try:
            response = client.post(self.url, json={"records": records})
            response.raise_for_status()
        except httpx.HTTPError as e:
            RECORDS.labels("dropped").inc(len(records))
            log.warning(
                "monitor at %s unreachable, %d records dropped: %s", self.url, len(records), e
            )
            return
        RECORDS.labels("sent").inc(len(records))

    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued (for up to ``timeout`` s), then stop."""
        self._stop.set()
        self._thread.join(timeout)
