"""What the predictor keeps of each image, made after the answer: drift statistics, the input
histograms and the inference-log record, on one background thread.

None of it changes the answer, and the statistics alone (luma, saturation, hue and the
Laplacian's variance over the cache pixels) cost about as much as decoding the JPEG, so the
request path hands the pixels on and answers. The hand-over is bounded: at most ``max_images``
images wait (about 200 KB of cache pixels each); beyond that a batch's records are dropped and
counted, never the answer, as a full disk drops them
(:class:`~dermaops.inference_log.InferenceLog`). A SIGKILL loses what is waiting.
:meth:`Recorder.flush` waits until everything handed over is written (at shutdown, in tests).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from dermaops.data.features import image_stats
from dermaops.inference_log import InferenceRecord
from dermaops.serving.telemetry import RECORDS_PENDING

log = logging.getLogger(__name__)

Sink = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class Pending:
    """One answered batch: its cache pixels and original sizes, and what makes the rest of each
    image's record (answer, projections, guard), called on the recorder's thread."""

    pixels: list[np.ndarray]
    sizes: list[tuple[int, int]]
    records: Callable[[], list[dict[str, Any]]]


class Recorder:
    """One thread that turns answered batches into statistics, histograms and log records.

    Args:
        observe: called with each batch's statistics (the input histograms).
        sinks: each record goes to every one (the inference log, the monitor's forwarder).
        dropped: called with the number of images whose records were dropped (backlog full).
        max_images: images that may wait at once.
    """

    def __init__(
        self,
        observe: Callable[[list[dict[str, float]]], None],
        sinks: list[Sink],
        dropped: Callable[[int], None],
        max_images: int = 256,
    ):
        self.observe, self.sinks, self.dropped = observe, sinks, dropped
        self.max_images = max_images
        self._jobs: queue.Queue[Pending | None] = queue.Queue()
        self._waiting = 0  # images handed over and not yet recorded
        self._closed = False
        # Re-entrant: close() may run in a signal handler on the thread that is inside submit().
        self._lock = threading.RLock()
        self._idle = threading.Condition(self._lock)
        self._thread = threading.Thread(target=self._run, name="dermaops-records", daemon=True)
        self._thread.start()

    def submit(self, pending: Pending) -> bool:
        """Hand a batch over without waiting; False (and counted) when the backlog is full or
        the recorder is closed."""
        n = len(pending.pixels)
        with self._lock:
            if self._closed or self._waiting + n > self.max_images:
                self.dropped(n)
                return False
            self._waiting += n
            RECORDS_PENDING.set(self._waiting)
        self._jobs.put(pending)
        return True

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every batch handed over is recorded; whether it was within ``timeout``."""
        with self._idle:
            return self._idle.wait_for(lambda: self._waiting == 0, timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Record what is waiting, then stop the thread; later batches are counted as dropped
        (requests still being answered while the server shuts down)."""
        self.flush(timeout)
        with self._lock:
            self._closed = True
        self._jobs.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while (pending := self._jobs.get()) is not None:
            try:
                self._record(pending)
            except Exception:  # a bug here must not stop the recording of later answers
                log.exception("could not record an answered batch")
            finally:
                with self._idle:
                    self._waiting -= len(pending.pixels)
                    RECORDS_PENDING.set(self._waiting)
                    self._idle.notify_all()

    def _record(self, pending: Pending) -> None:
        stats = [image_stats(p, size) for p, size in zip(pending.pixels, pending.sizes,
                                                         strict=True)]  # fmt: skip
        self.observe(stats)
        if not self.sinks:
            return
        for stat, record in zip(stats, pending.records(), strict=True):
            rounded = {k: round(v, 5) for k, v in stat.items()}
            line = InferenceRecord.model_validate(record | rounded).model_dump()
            for sink in self.sinks:
                sink(line)
