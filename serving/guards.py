"""What the predictor settles before any of KServe's handlers run (ASGI middleware).

KServe's model repository extension answers ``POST /v2/repository/models/{name}/unload`` (and
``/load``) to anyone who can reach the port: one request unloads the served model, which a
single-model predictor cannot load back, while ``/v2/health/ready`` goes on saying ready. A
DermaOps predictor serves one registered version from its start to its end; another version is
a rollout (the registry and the deploy patch), never a request. So the repository is read-only.

Admission keeps one replica inside its memory: a body over the limit gets 413 before it is read
(by its ``Content-Length``, or as soon as a chunked body passes the limit), requests beyond the
replica's share get 503 with ``Retry-After`` at once instead of a queue that grows, and a
request still unanswered at its deadline gets 504. Health, readiness and metrics are never
refused.

The same single version answers the protocol's version paths (``/v2/models/{name}/versions/{v}``
and ``?model_version=``), which KServe 0.21 answers with 501 for any version: the served one is
served, any other is a 404 that names the one served.
"""

from __future__ import annotations

import asyncio
import json
import re
from urllib.parse import parse_qsl, urlencode

from dermaops.serving.binary import App, Message, Receive, Scope, Send
from dermaops.serving.telemetry import IN_FLIGHT, REFUSED

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


class Admission:
    """ASGI middleware: what an inference request must meet before KServe reads it."""

    def __init__(self, app: App, max_body_bytes: int, max_in_flight: int, timeout_s: float):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_in_flight = max_in_flight
        self.timeout_s = timeout_s
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not INFERENCE_PATH.match(scope["path"]):
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            await self._refuse(send, 413, "body_too_large", self._too_large(declared))
            return
        if self.in_flight >= self.max_in_flight:
            busy = f"{self.in_flight} requests in flight, the most this replica takes; retry"
            await self._refuse(send, 503, "overloaded", busy, RETRY_AFTER)
            return
        self.in_flight += 1
        IN_FLIGHT.inc()
        try:
            if declared is None:  # chunked: read it here, counting, so as to stop at the limit
                body = await self._read_capped(receive)
                if body is None:
                    await self._refuse(send, 413, "body_too_large", self._too_large(None))
                    return
                receive = _replay(body, receive)
            await self._within_deadline(scope, receive, send)
        finally:
            self.in_flight -= 1
            IN_FLIGHT.dec()

    async def _within_deadline(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await asyncio.wait_for(self.app(scope, receive, tracked), self.timeout_s)
        except TimeoutError:
            if not started:
                late = (
                    f"no answer within {self.timeout_s:g} s; retry, or send fewer or smaller images"
                )
                await self._refuse(send, 504, "deadline", late)

    async def _read_capped(self, receive: Receive) -> bytes | None:
        """The whole body, or None as soon as it passes the limit (the rest is never read)."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"".join(chunks)  # the client went away; KServe sees what came
            size += len(message.get("body", b""))
            if size > self.max_body_bytes:
                return None
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _too_large(self, declared: int | None) -> str:
        size = f"{declared:,} bytes" if declared is not None else "the body"
        return (f"{size} is over the limit of {self.max_body_bytes:,} bytes per request; "
                "send fewer or smaller images")  # fmt: skip

    @staticmethod
    async def _refuse(
        send: Send, status: int, reason: str, error: str, *headers: tuple[bytes, bytes]
    ) -> None:
        REFUSED.labels(reason).inc()
        await answer(send, status, error, list(headers))


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the app the body already read, then the server's own (which tells
    of a client that went away)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


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
