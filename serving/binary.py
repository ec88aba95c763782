"""The Open Inference Protocol's binary tensor extension over REST, for every standard client.

Triton's clients and load tools send tensors after the JSON header by default
(``Inference-Header-Content-Length``, then each tensor's bytes; a BYTES element is a 4-byte
little-endian length and its bytes) and ask for outputs the same way. KServe 0.21's REST decoder
reads a binary BYTES input back as UTF-8 text, so a raw JPEG gets HTTP 500 before any model sees
it. This ASGI middleware, added to KServe's app, turns such a request into the JSON form the
predictor takes (images as base64 strings) and, where the client asked for binary outputs, the
JSON answer back into binary. An infer request without the header is JSON whatever its
Content-Type says (Triton's client sends none, and KServe refuses such a body as binary without
its header). Everything else passes untouched. It can go when KServe decodes binary BYTES itself:
``tests/integration/test_oip_binary.py`` checks whether it still fails.
"""

from __future__ import annotations

import base64
import json
import re
import struct
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

HEADER = b"inference-header-content-length"
INFER_PATH = re.compile(r"^/v2/models/[^/]+(/versions/[^/]+)?/infer$")
DTYPES = {
    "BOOL": "?", "UINT8": "<u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8", "INT8": "<i1",
    "INT16": "<i2", "INT32": "<i4", "INT64": "<i8", "FP32": "<f4", "FP64": "<f8",
}  # fmt: skip

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


class BinaryFormatError(ValueError):
    """A binary request whose header or tensor bytes do not add up: HTTP 400."""


@dataclass(frozen=True)
class Wanted:
    """Which outputs the client wants as binary: all by default, or by name."""

    default: bool = False
    by_name: dict[str, bool] = field(default_factory=dict)

    def binary(self, name: str) -> bool:
        return self.by_name.get(name, self.default)

    def any(self) -> bool:
        return self.default or any(self.by_name.values())


def json_request(body: bytes, header_length: int) -> tuple[bytes, Wanted]:
    """A binary request as the JSON one the predictor reads, and the outputs wanted as binary.

    Raises:
        BinaryFormatError: the header is not JSON, or the tensors' sizes do not match the body.
    """
    if not 0 < header_length <= len(body):
        raise BinaryFormatError(
            f"Inference-Header-Content-Length {header_length} but the body has {len(body)} bytes"
        )
    try:
        request = json.loads(body[:header_length])
        inputs = request["inputs"]
    except (ValueError, KeyError, TypeError) as e:
        raise BinaryFormatError(f"the JSON header is not an inference request: {e}") from e
    start = header_length
    for tensor in inputs:
        size = (tensor.get("parameters") or {}).pop("binary_data_size", None)
        if size is None:
            continue
        if not isinstance(size, int) or size < 0 or start + size > len(body):
            raise BinaryFormatError(
                f"input {tensor.get('name')!r}: binary_data_size {size!r} runs past the body"
            )
        tensor["data"] = _decode(body[start : start + size], tensor)
        start += size
    if start != len(body):
        raise BinaryFormatError(f"{len(body) - start} bytes after the last tensor")
    return json.dumps(request).encode(), _wanted(request)


def _decode(raw: bytes, tensor: dict[str, Any]) -> list[Any]:
    datatype = tensor.get("datatype")
    if datatype == "BYTES":
        return [base64.b64encode(item).decode() for item in bytes_elements(raw, tensor.get("name"))]
    if datatype not in DTYPES:
        raise BinaryFormatError(f"input {tensor.get('name')!r}: no binary form for {datatype!r}")
    try:
        values: list[Any] = np.frombuffer(raw, DTYPES[datatype]).tolist()
    except ValueError as e:
        raise BinaryFormatError(f"input {tensor.get('name')!r}: {e}") from e
    return values


def bytes_elements(raw: bytes, name: object) -> list[bytes]:
    """The elements of a binary BYTES tensor (REST's binary extension, gRPC's raw contents):
    each a 4-byte little-endian length, then itself.

    Raises:
        BinaryFormatError: a length runs past the end (``name`` says which input).
    """
    items: list[bytes] = []
    at = 0
    while at < len(raw):
        if at + 4 > len(raw):
            raise BinaryFormatError(f"input {name!r}: a length prefix is cut short")
        (size,) = struct.unpack_from("<I", raw, at)
        if at + 4 + size > len(raw):
            raise BinaryFormatError(f"input {name!r}: element {len(items)} is cut")
        items.append(raw[at + 4 : at + 4 + size])
        at += 4 + size
    return items


def _wanted(request: dict[str, Any]) -> Wanted:
    default = bool((request.get("parameters") or {}).get("binary_data_output", False))
    by_name = {
        str(o["name"]): bool(o["parameters"]["binary_data"])
        for o in request.get("outputs") or []
        if "binary_data" in (o.get("parameters") or {})
    }
    return Wanted(default, by_name)


def binary_response(answer: dict[str, Any], wanted: Wanted) -> tuple[bytes, int]:
    """A JSON answer with the wanted outputs moved after the header; and the header's length."""
    tail = []
    for output in answer.get("outputs", []):
        if not wanted.binary(output["name"]):
            continue
        raw = _encode(output["data"], output["datatype"])
        output["parameters"] = {**(output.get("parameters") or {}), "binary_data_size": len(raw)}
        del output["data"]
        tail.append(raw)
    header = json.dumps(answer).encode()
    return header + b"".join(tail), len(header)


def _encode(data: list[Any], datatype: str) -> bytes:
    if datatype == "BYTES":
        items = [d.encode() if isinstance(d, str) else bytes(d) for d in data]
        return b"".join(struct.pack("<I", len(item)) + item for item in items)
    return np.asarray(data, DTYPES[datatype]).tobytes()


class BinaryTensors:
    """ASGI middleware: binary tensors in and out of the v2 infer path, JSON for the rest."""

    def __init__(self, app: App):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not _infer(scope):
            await self.app(scope, receive, send)
            return
        length = _header(scope)
        if length is None:  # JSON, whatever its Content-Type says (Triton's client sends none)
            await self.app(_json_scope(scope), receive, send)
            return
        body = await _read(receive)
        try:
            rewritten, wanted = json_request(body, length)
        except BinaryFormatError as e:
            await _answer(send, 400, json.dumps({"error": str(e)}).encode(), [])
            return
        encoder = _Encoder(send, wanted)
        await self.app(_json_scope(scope, len(rewritten)), _replay(rewritten), encoder)


def _infer(scope: Scope) -> bool:
    """A v2 infer request."""
    return bool(
        scope["type"] == "http" and scope["method"] == "POST" and INFER_PATH.match(scope["path"])
    )


def _header(scope: Scope) -> int | None:
    """The JSON header's length, for a binary v2 infer request; None for a JSON one."""
    for name, value in scope["headers"]:
        if name.lower() == HEADER:
            try:
                return int(value)
            except ValueError:
                return -1  # answered as a bad request by json_request
    return None


def _json_scope(scope: Scope, length: int | None = None) -> Scope:
    """The request as JSON: KServe reads a body of another Content-Type as binary and refuses
    it for want of the binary header. ``length``: the rewritten body's (None: as it came)."""
    replaced = (
        (b"content-type",) if length is None else (HEADER, b"content-length", b"content-type")
    )
    keep = [(k, v) for k, v in scope["headers"] if k.lower() not in replaced]
    headers = [*keep, (b"content-type", b"application/json")]
    if length is not None:
        headers.append((b"content-length", b"%d" % length))
    return {**scope, "headers": headers}


async def _read(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


async def _answer(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]], binary: bool = False
) -> None:
    kind = b"application/octet-stream" if binary else b"application/json"
    headers = [*headers, (b"content-type", kind), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _Encoder:
    """Holds the app's answer; a successful JSON one goes out with the wanted outputs binary."""

    def __init__(self, send: Send, wanted: Wanted):
        self.send, self.wanted = send, wanted
        self.start: Message | None = None
        self.chunks: list[bytes] = []

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.start = message
            return
        if message["type"] != "http.response.body":
            await self.send(message)
            return
        self.chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        assert self.start is not None
        body, status = b"".join(self.chunks), self.start["status"]
        headers = [(k, v) for k, v in self.start.get("headers", [])
                   if k.lower() not in (b"content-length", b"content-type")]  # fmt: skip
        if status != 200 or not self.wanted.any():
            await _answer(self.send, status, body, headers)
            return
        encoded, length = binary_response(json.loads(body), self.wanted)
        headers.append((b"inference-header-content-length", b"%d" % length))
        await _answer(self.send, 200, encoded, headers, binary=True)
