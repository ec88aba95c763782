"""What the predictor settles before any of KServe's handlers run (ASGI middleware).

KServe's model repository extension answers ``POST /v2/repository/models/{name}/unload`` (and
``/load``) to anyone who can reach the port: one request unloads the served model, which a
single-model predictor cannot load back, while ``/v2/health/ready`` goes on saying ready. A
DermaOps predictor serves one registered version from its start to its end; another version is
a rollout (the registry and the deploy patch), never a request. So the repository is read-only.

Admission keeps one replica inside its memory: a body over the limit gets 413 before it is read
(by its ``Content-Length``, or as soon as a chunked body passes the limit). Requests beyond the
replica's share wait their turn in a queue bounded in length and in time, their bodies unread
(as Knative's queue-proxy queues before a Serverless pod; in RawDeployment nothing else would);
a full queue, or no place within the wait, is a 503 with ``Retry-After``, and so is a request
whose body would take the bytes being handled past what the memory limit holds (a request holds
about three times its body at its peak: the body, its JSON strings, the decoded bytes and
pixels); a request still unanswered at its deadline, its wait included, gets 504. Health,
readiness and metrics are never refused.

The same single version answers the protocol's version paths (``/v2/models/{name}/versions/{v}``
and ``?model_version=``), which KServe 0.21 answers with 501 for any version: the served one is
served, any other is a 404 that names the one served.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

import psutil

from dermaops.serving.binary import App, Message, Receive, Scope, Send
from dermaops.serving.settings import ServingSettings
from dermaops.serving.telemetry import (
    BYTES_IN_FLIGHT,
    IN_FLIGHT,
    QUEUE_WAIT,
    QUEUED,
    REFUSED,
    RESPONSES,
    STATUS_CLASSES,
)

REPOSITORY_PREFIX = "/v2/repository/"
READ_ONLY = (
    "this predictor serves one model version for its whole life and cannot load or unload "
    "models; to serve another version, promote it in the registry and roll it out"
)


class ReadOnlyRepository:
    """ASGI middleware: every request under ``/v2/repository/`` gets 403 with the reason."""

    def __init__(self, app: App):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(REPOSITORY_PREFIX):
            await self.app(scope, receive, send)
            return
        await answer(send, 403, READ_ONLY)


INFERENCE_PATH = re.compile(
    r"^/v1/models/[^/]+:(predict|explain)$|^/v2/models/[^/]+(/versions/[^/]+)?/infer$"
)
RETRY_AFTER = (b"retry-after", b"1")  # seconds


CGROUP_MEMORY_LIMITS = (  # v2, then v1: what a pod's memory limit becomes in its container
    Path("/sys/fs/cgroup/memory.max"),
    Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
)
log = logging.getLogger("dermaops.serving")


def memory_limit() -> int:
    """This process's memory limit: its cgroup's (the pod's limit), else the machine's memory."""
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in CGROUP_MEMORY_LIMITS:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit():  # v2 says "max" when there is none
            return min(int(text), physical)
    return physical


def resident_bytes() -> int:
    """What this process holds now (the loaded model, the interpreter)."""
    return int(psutil.Process().memory_info().rss)


@dataclass(frozen=True)
class AdmissionLimits:
    """What :class:`Admission` allows one replica."""

    max_body_bytes: int
    max_in_flight: int
    max_bytes_in_flight: int
    timeout_s: float
    max_queue: int = 0
    queue_wait_s: float = 0.0


def admission_limits(settings: ServingSettings, threads: int) -> AdmissionLimits:
    """The settings' limits for this replica, its memory limit and what it holds already.

    The bytes in flight follow from the memory limit unless set; a body limit they cannot hold
    is lowered to them (with a warning), so a request alone always fits.
    """
    limit = memory_limit()
    resident = resident_bytes()
    budget = settings.bytes_in_flight_limit(limit, resident)
    body = settings.body_limit()
    if body > budget:
        log.warning(
            "a memory limit of %s bytes with %s resident holds request bodies up to %s bytes, "
            "not the %s the settings allow; larger ones get 413 (raise the memory limit, or "
            "lower max_instances or max_image_bytes)",
            f"{limit:,}", f"{resident:,}", f"{budget:,}", f"{body:,}",
        )  # fmt: skip
        body = budget
    in_flight = settings.in_flight_limit(threads)
    limits = AdmissionLimits(body, in_flight, budget, settings.request_timeout_s,
                    settings.queue_limit(in_flight), settings.queue_wait_s())  # fmt: skip
    log.info(
        "admission: bodies up to %s bytes; %d requests and %s body bytes at once (memory limit "
        "%s bytes, %s resident), %d more waiting up to %g s; %g s per request",
        f"{limits.max_body_bytes:,}", limits.max_in_flight, f"{budget:,}", f"{limit:,}",
        f"{resident:,}", limits.max_queue, limits.queue_wait_s, limits.timeout_s,
    )  # fmt: skip
    return limits


class QueueFullError(Exception):
    """No room to wait: the queue holds its most already."""


class Places:
    """``size`` places taken first come, first served, with at most ``max_waiting`` waiting.

    Runs on one event loop (no thread touches it). A place freed goes straight to the oldest
    waiter, so a newcomer never overtakes the queue.
    """

    def __init__(self, size: int, max_waiting: int):
        self.free = size
        self.max_waiting = max_waiting
        self.waiters: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        return sum(not w.done() for w in self.waiters)

    async def take(self, timeout: float) -> None:
        """Take a place, waiting up to ``timeout`` seconds in line.

        Raises:
            QueueFullError: nobody is let in and the line is full.
            TimeoutError: no place within ``timeout``.
        """
        if self.free and not self.waiting:
            self.free -= 1
            return
        if self.waiting >= self.max_waiting:
            raise QueueFullError
        waiter = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter, timeout)
        except BaseException:  # the wait ran out, or the client went away
            if waiter.done() and not waiter.cancelled():
                self.give_back()  # a place came just as it gave up: the next one gets it
            raise

    def give_back(self) -> None:
        """Free a place: to the oldest waiter still waiting, else to the pool."""
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.free += 1


@dataclass
class Held:
    """The body bytes one request is counted for."""

    bytes: int = 0


class RefusedError(Exception):
    """An answer given instead of the app's."""

    def __init__(self, status: int, reason: str, error: str, *headers: tuple[bytes, bytes]):
        super().__init__(error)
        self.status, self.reason, self.error, self.headers = status, reason, error, list(headers)


class Admission:
    """ASGI middleware: what an inference request must meet before KServe reads it.

    ``max_bytes_in_flight`` bounds the body bytes of the requests being handled together; it is
    never below ``max_body_bytes``, so a request alone always fits.
    """

    def __init__(self, app: App, limits: AdmissionLimits):
        self.app = app
        self.max_body_bytes = limits.max_body_bytes
        self.max_in_flight = limits.max_in_flight
        self.max_bytes_in_flight = max(limits.max_bytes_in_flight, limits.max_body_bytes)
        self.timeout_s = limits.timeout_s
        self.queue_wait_s = min(limits.queue_wait_s or limits.timeout_s, limits.timeout_s)
        self.places = Places(limits.max_in_flight, limits.max_queue)
        self.in_flight = 0
        self.bytes_in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not INFERENCE_PATH.match(scope["path"]):
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        held = Held()
        try:
            if declared is not None and declared > self.max_body_bytes:
                raise RefusedError(413, "body_too_large", self._too_large(declared))
            waited = await self._take_place()
            try:
                self._hold(held, declared or 0)
                self.in_flight += 1
                IN_FLIGHT.inc()
                try:
                    body = await self._read_capped(receive, held)
                    await self._within_deadline(scope, _replay(body, receive), send, waited)
                finally:
                    self.in_flight -= 1
                    IN_FLIGHT.dec()
            finally:
                self.places.give_back()
        except RefusedError as refused:
            REFUSED.labels(refused.reason).inc()
            await answer(send, refused.status, refused.error, refused.headers)
        finally:
            self.bytes_in_flight -= held.bytes
            BYTES_IN_FLIGHT.dec(held.bytes)

    async def _take_place(self) -> float:
        """Wait for a place in line; the seconds waited.

        Raises:
            RefusedError: 503, the queue is full or no place came within its wait.
        """
        started = time.perf_counter()
        QUEUED.inc()
        try:
            await self.places.take(self.queue_wait_s)
        except QueueFullError:
            busy = (f"{self.max_in_flight} requests in flight and {self.places.max_waiting} "
                    "waiting, the most this replica takes; retry")  # fmt: skip
            raise RefusedError(503, "overloaded", busy, RETRY_AFTER) from None
        except TimeoutError:
            late = f"no place within {self.queue_wait_s:g} s of waiting; retry"
            raise RefusedError(503, "queue_timeout", late, RETRY_AFTER) from None
        finally:
            QUEUED.dec()
            QUEUE_WAIT.observe(time.perf_counter() - started)
        return time.perf_counter() - started

    def _hold(self, held: Held, size: int) -> None:
        """Count a request's body as ``size`` bytes from now on (never fewer than before).

        Raises:
            RefusedError: 503, the bytes being handled would pass ``max_bytes_in_flight``.
        """
        grow = size - held.bytes
        if grow <= 0:
            return
        if self.bytes_in_flight + grow > self.max_bytes_in_flight:
            busy = (f"{self.bytes_in_flight:,} bytes of requests being handled, the most this "
                    "replica's memory takes with this one; retry")  # fmt: skip
            raise RefusedError(503, "memory", busy, RETRY_AFTER)
        self.bytes_in_flight += grow
        BYTES_IN_FLIGHT.inc(grow)
        held.bytes = size

    async def _within_deadline(
        self, scope: Scope, receive: Receive, send: Send, waited: float
    ) -> None:
        """The app's answer, if it starts before the deadline less the time spent in line."""
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await asyncio.wait_for(self.app(scope, receive, tracked), self.timeout_s - waited)
        except TimeoutError:
            if not started:
                late = (
                    f"no answer within {self.timeout_s:g} s; retry, or send fewer or smaller images"
                )
                raise RefusedError(504, "deadline", late) from None

    async def _read_capped(self, receive: Receive, held: Held) -> deque[bytes]:
        """The whole body as it came (not joined: the app joins it once), counted against the
        limits as it arrives.

        Raises:
            RefusedError: 413 as soon as it passes ``max_body_bytes`` (the rest is never read); 503
                when it would take the bytes in flight past their limit.
        """
        chunks: deque[bytes] = deque()
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return chunks  # the client went away; KServe sees what came
            size += len(message.get("body", b""))
            if size > self.max_body_bytes:
                raise RefusedError(413, "body_too_large", self._too_large(None))
            self._hold(held, size)
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                return chunks

    def _too_large(self, declared: int | None) -> str:
        size = f"{declared:,} bytes" if declared is not None else "the body"
        return (f"{size} is over the limit of {self.max_body_bytes:,} bytes per request; "
                "send fewer or smaller images")  # fmt: skip


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _replay(chunks: deque[bytes], receive: Receive) -> Receive:
    """A receive that hands the app the body already read, chunk by chunk (each let go once
    handed over), then the server's own (which tells of a client that went away)."""

    async def replayed() -> Message:
        if chunks:
            body = chunks.popleft()
            return {"type": "http.request", "body": body, "more_body": bool(chunks)}
        return await receive()

    return replayed


class CountedResponses:
    """ASGI middleware: each inference request's answer counted by the served version and its
    status class (``dermaops_inference_responses_total``); one that raised counts as 5xx, one
    cancelled (the caller gone) not at all. Added outermost, so refusals before the model count
    too."""

    def __init__(self, app: App, version: str):
        self.app = app
        self.version = version
        for code in STATUS_CLASSES:  # every series from the start, at 0, so increase() has data
            RESPONSES.labels(version, code)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not INFERENCE_PATH.match(scope["path"]):
            await self.app(scope, receive, send)
            return
        status = 500

        async def counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, counted)
        except asyncio.CancelledError:  # the caller went away: no answer to count
            raise
        except BaseException:
            RESPONSES.labels(self.version, "5xx").inc()
            raise
        RESPONSES.labels(self.version, f"{min(status // 100, 5)}xx").inc()


VERSION_PATH = re.compile(r"^/v2/models/(?P<name>[^/]+)/versions/(?P<version>[^/]+)(?P<rest>/.*)?$")
MODEL_PATH = re.compile(r"^/v2/models/(?P<name>[^/]+)(/ready|/infer)?$")


class OneVersion:
    """ASGI middleware: a request for the served version goes on without the version; a request
    for any other version of the served model gets 404 naming the one served."""

    def __init__(self, app: App, name: str, version: str):
        self.app = app
        self.name = name
        self.version = version

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            by_path = VERSION_PATH.match(scope["path"])
            by_query = MODEL_PATH.match(scope["path"])
            if by_path is not None:
                if not await self._served(by_path["name"], by_path["version"], send):
                    return
                scope = {**scope, "path": f"/v2/models/{by_path['name']}{by_path['rest'] or ''}"}
                scope.pop("raw_path", None)
            elif by_query is not None and b"model_version" in scope["query_string"]:
                query = parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
                asked = [v for k, v in query if k == "model_version"]
                if asked and not await self._served(by_query["name"], asked[-1], send):
                    return
                rest = urlencode([(k, v) for k, v in query if k != "model_version"])
                scope = {**scope, "query_string": rest.encode("latin-1")}
        await self.app(scope, receive, send)

    async def _served(self, name: str, version: str, send: Send) -> bool:
        """Whether ``name`` at ``version`` is what this predictor serves; else answer 404."""
        if name == self.name and version in ("", self.version):
            return True
        if name != self.name:
            await answer(send, 404, f"Model with name {name} does not exist.")
        else:
            served = f"this predictor serves version {self.version!r}"
            await answer(send, 404, f"model {name} has no version {version!r} here: {served}")
        return False


async def answer(
    send: Send, status: int, error: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    """A JSON ``{"error": ...}`` answer, as KServe's own errors look."""
    body = json.dumps({"error": error}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    headers += extra or []
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
