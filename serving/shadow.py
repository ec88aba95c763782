"""Shadow traffic: the stable predictor mirrors answered requests to the challenger.

During a rollout's ``shadow`` stage the challenger sees live images without answering anyone:
after the stable predictor has answered a v1 request, it hands the request body to a daemon
thread that posts it to the challenger with the same request id and the header
:data:`~dermaops.v1.SHADOW_HEADER`. The challenger answers as usual and logs its records marked
``shadow`` (the monitor's drift leaves them out; the rollout's judge pairs them with the stable's
records of the same request id). Its answer is read and dropped, never returned.

The hand-over is bounded: when ``max_waiting`` requests wait, more are dropped and counted (the
clinician's answer never waits on the challenger). Pixels go only from one predictor to the
other, the way the request came; nothing leaves the serving pods but the usual records.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
from collections.abc import Callable
from typing import Any

import httpx
from prometheus_client import Counter

from dermaops.v1 import REQUEST_ID_HEADER, SHADOW_HEADER

log = logging.getLogger(__name__)

SHADOWED = Counter(
    "dermaops_shadow_requests",
    "Requests mirrored to the challenger, by outcome: answered (2xx), refused (4xx), error "
    "(5xx), unreachable (no answer), dropped (the hand-over was full), skipped (outside the "
    "mirrored share).",
    ["outcome"],
)
OUTCOMES = ("answered", "refused", "error", "unreachable", "dropped", "skipped")
for _outcome in OUTCOMES:  # every series from the start, at 0, so rate() and increase() have data
    SHADOWED.labels(_outcome)


class ShadowMirror:
    """Post a ``share`` of the v1 requests handed over to the challenger at ``url``.

    Args:
        url: the challenger predictor's root (``http://host:port``).
        model: the served model's name (the path ``/v1/models/{model}:predict``).
        stable: the stable version, sent in :data:`SHADOW_HEADER`.
        share: the part of requests mirrored, 0 to 1.
        max_waiting: requests that may wait for the thread; more are dropped.
        timeout: seconds the challenger has to answer one request.
    """

    def __init__(
        self,
        url: str,
        model: str,
        stable: str,
        share: float = 1.0,
        max_waiting: int = 64,
        timeout: float = 30.0,
        draw: Callable[[], float] = random.random,
    ):
        self.url = f"{url.rstrip('/')}/v1/models/{model}:predict"
        self.stable, self.share, self.timeout, self._draw = stable, share, timeout, draw
        self._queue: queue.Queue[tuple[dict[str, Any], str] | None] = queue.Queue(max_waiting)
        self._thread = threading.Thread(target=self._run, name="dermaops-shadow", daemon=True)
        self._thread.start()

    def offer(self, body: dict[str, Any], request_id: str) -> bool:
        """Hand one answered request over without waiting; whether it will be mirrored."""
        if self._draw() >= self.share:
            SHADOWED.labels("skipped").inc()
            return False
        try:
            self._queue.put_nowait((body, request_id))
        except queue.Full:
            SHADOWED.labels("dropped").inc()
            return False
        return True

    def _run(self) -> None:
        headers = {SHADOW_HEADER: self.stable}
        with httpx.Client(timeout=self.timeout, headers=headers) as client:
            while (job := self._queue.get()) is not None:
                body, request_id = job
                SHADOWED.labels(self._send(client, body, request_id)).inc()

    def _send(self, client: httpx.Client, body: dict[str, Any], request_id: str) -> str:
        try:
            response = client.post(self.url, json=body, headers={REQUEST_ID_HEADER: request_id})
        except httpx.HTTPError as e:
            log.warning("challenger at %s unreachable: %s", self.url, e)
            return "unreachable"
        if response.status_code >= 500:
            log.warning("challenger answered %d: %s", response.status_code, response.text[:200])
            return "error"
        return "refused" if response.status_code >= 400 else "answered"

    def close(self, timeout: float = 5.0) -> None:
        """Send what waits (for up to ``timeout`` s), then stop the thread."""
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)
