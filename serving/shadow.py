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

Where the predictor always has a challenger at hand (the chart's canary Deployment beside a
KServe InferenceService, 0 replicas between rollouts) it mirrors only while a rollout is in its
shadow stage with this version as the stable one: a :class:`RolloutWatch` asks the monitor's
``GET /rollout`` (the driver's own record, :class:`~dermaops.rollout.plan.Rollout`) every few
seconds, and the mirror stays shut while the monitor does not answer.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
from collections.abc import Callable
from typing import Any

import httpx
from prometheus_client import Counter, Gauge
from pydantic import ValidationError

from dermaops.errors import ConfigError
from dermaops.rollout.plan import Rollout
from dermaops.serving.settings import ServingSettings
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
MIRRORING = Gauge(
    "dermaops_shadow_mirroring",
    "1 while this predictor mirrors requests to a challenger (a rollout's shadow stage).",
)


class RolloutWatch:
    """Whether the monitor's rollout wants this predictor's requests mirrored: running, in its
    ``shadow`` stage, with ``stable`` as the stable version. A daemon thread asks the monitor's
    ``GET /rollout`` every ``every`` seconds; no rollout (404), another stage or version, a
    monitor that does not answer or answers something else: shut.

    Args:
        monitor_url: the monitor's root (``http://host:port``).
        stable: this predictor's version.
        every: seconds between two questions.
    """

    def __init__(self, monitor_url: str, stable: str, every: float = 10.0):
        self.url = f"{monitor_url.rstrip('/')}/rollout"
        self.stable, self.every = stable, every
        self._open = False
        self._said = ""  # the last reason logged, so a monitor that stays away is said once
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dermaops-rollout-watch",
                                        daemon=True)  # fmt: skip
        self._thread.start()

    @property
    def open(self) -> bool:
        return self._open

    def _run(self) -> None:
        with httpx.Client(timeout=min(self.every, 5.0)) as client:
            while True:
                try:
                    self._open, why = self.ask(client)
                except Exception as e:  # the watch must outlive any one answer: shut
                    self._open, why = False, f"asking {self.url} failed: {type(e).__name__}: {e}"
                MIRRORING.set(int(self._open))
                if why != self._said:
                    log.info("shadow mirror %s: %s", "open" if self._open else "shut", why)
                    self._said = why
                if self._stop.wait(self.every):
                    return

    def ask(self, client: httpx.Client) -> tuple[bool, str]:
        """Ask the monitor once: whether to mirror, and why."""
        try:
            response = client.get(self.url)
        except httpx.HTTPError as e:
            return False, f"the monitor at {self.url} did not answer ({e})"
        if response.status_code == 404:
            return False, "no rollout"
        try:
            response.raise_for_status()
            # a monitor newer than this predictor may say more than it knows: ignore the rest
            r = Rollout.model_validate_json(response.content, extra="ignore")
        except (httpx.HTTPStatusError, ValidationError) as e:
            return False, f"{self.url} gave no rollout ({str(e).splitlines()[0]})"
        where = f"the rollout of version {r.candidate} is {r.status} in {r.current.label}"
        if r.status != "running" or r.current.name != "shadow":
            return False, where
        if r.stable != self.stable:
            return False, f"{where}, in shadow of version {r.stable}, not of {self.stable}"
        return True, where

    def close(self) -> None:
        self._stop.set()
        self._thread.join(self.every + 5)
        MIRRORING.set(0)


class ShadowMirror:
    """Post a ``share`` of the v1 requests handed over to the challenger at ``url``.

    Args:
        url: the challenger predictor's root (``http://host:port``).
        model: the served model's name (the path ``/v1/models/{model}:predict``).
        stable: the stable version, sent in :data:`SHADOW_HEADER`.
        share: the part of requests mirrored, 0 to 1.
        max_waiting: requests that may wait for the thread; more are dropped.
        timeout: seconds the challenger has to answer one request.
        watch: mirror only while it is open (None: always).
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
        watch: RolloutWatch | None = None,
    ):
        self.url = f"{url.rstrip('/')}/v1/models/{model}:predict"
        self.watch = watch
        if watch is None:
            MIRRORING.set(1)
        self.stable, self.share, self.timeout, self._draw = stable, share, timeout, draw
        self._queue: queue.Queue[tuple[dict[str, Any], str] | None] = queue.Queue(max_waiting)
        self._thread = threading.Thread(target=self._run, name="dermaops-shadow", daemon=True)
        self._thread.start()

    @property
    def active(self) -> bool:
        """Whether requests are mirrored now (always, without a watch)."""
        return self.watch is None or self.watch.open

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
        """Send what waits (for up to ``timeout`` s), then stop the threads."""
        if self.watch is not None:
            self.watch.close()
        MIRRORING.set(0)
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)


def shadow_mirror(s: ServingSettings, model: str, version: str) -> ShadowMirror | None:
    """The mirror the settings ask for (None without ``shadow_url``): always on, or with
    ``shadow_follows_rollout`` only while the monitor's rollout says shadow of ``version``.

    Raises:
        ConfigError: ``shadow_follows_rollout`` without a monitor to ask.
    """
    if not s.shadow_url:
        return None
    watch = None
    if s.shadow_follows_rollout:
        if not s.monitor_url:
            raise ConfigError(
                "DERMAOPS_SERVING_SHADOW_FOLLOWS_ROLLOUT asks the monitor's /rollout: set "
                "DERMAOPS_SERVING_MONITOR_URL too"
            )
        watch = RolloutWatch(s.monitor_url, version, s.shadow_poll_s)
    log.info("mirroring %.0f%% of v1 requests to the challenger at %s%s", 100 * s.shadow_share,
             s.shadow_url, " during a rollout's shadow" if watch else "")  # fmt: skip
    return ShadowMirror(s.shadow_url, model, version, s.shadow_share, watch=watch)
