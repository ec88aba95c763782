"""The monitor's inference log: the records predictors post (statistics and predictions, no
pixels), appended under one lock, and read back from a snapshot by the drift and estimate jobs.

``POST /records`` judges a batch record by record: an inference record is appended as sent,
anything else is counted as rejected, so one bad record never costs the rest.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError

from dermaops.inference_log import InferenceLog, InferenceRecord, read_records
from dermaops.monitoring.drift import read_window
from dermaops.monitoring.metrics import MonitorMetrics
from dermaops.monitoring.webhooks import RecordsAnswer


class RecordLog:
    """The inference log in ``folder``; ``lock`` is held by the writer and, briefly, by a read
    taking its snapshot (see :func:`~dermaops.inference_log.read_records`)."""

    def __init__(self, folder: Path, metrics: MonitorMetrics) -> None:
        self.folder = folder
        self.lock = threading.Lock()
        self._metrics = metrics
        self._writer: InferenceLog | None = None

    def receive(self, payload: Any) -> RecordsAnswer:
        """Append the records that are inference records (as sent); count the rest as rejected.

        Raises:
            ValueError: the body is not ``{"records": [...]}``.
        """
        if not isinstance(payload, dict) or not isinstance(payload.get("records"), list):
            raise ValueError('expected {"records": [...]}')
        good = [r for r in payload["records"] if _inference_record(r)]
        with self.lock:
            if self._writer is None:
                self._writer = InferenceLog(self.folder)
            dropped_before = self._writer.dropped
            for record in good:
                self._writer.write(record)
            dropped = self._writer.dropped - dropped_before  # the log's disk full, say
        rejected = len(payload["records"]) - len(good)
        self._metrics.records.labels("accepted").inc(len(good) - dropped)
        self._metrics.records.labels("rejected").inc(rejected)
        self._metrics.records.labels("dropped").inc(dropped)
        return RecordsAnswer(accepted=len(good) - dropped, rejected=rejected, dropped=dropped)

    def window(self, rows: int) -> pd.DataFrame:
        """The last ``rows`` records of the traffic (shadow answers left out)."""
        return read_window(self.folder, rows, self.lock)

    def read(self) -> list[dict[str, Any]]:
        """Every record, oldest first."""
        return read_records(self.folder, self.lock)


def _inference_record(record: Any) -> bool:
    """An inference record: every image statistic a finite number, nothing else unknown, no
    long strings (nothing that looks like pixels)."""
    try:
        InferenceRecord.model_validate(record)
    except ValidationError:
        return False
    return True


def router(records: RecordLog, authorised: Callable[[Request], None]) -> APIRouter:
    """POST /records (bearer token)."""
    routes = APIRouter()

    @routes.post("/records", dependencies=[Depends(authorised)], response_model=None)
    async def receive(request: Request) -> dict[str, int]:
        try:
            # The file write in a worker: the event loop never waits on the disk or a lock.
            answer = await run_in_threadpool(records.receive, await request.json())
        except ValueError as e:
            raise HTTPException(400, f"expected the predictor's records: {e}") from e
        return answer.model_dump(exclude_defaults=True)

    return routes
