"""Loading a predictor as a hostile or busy client would: many requests at once, huge bodies sent
raw over a socket, and the resident memory they cost the server."""

from __future__ import annotations

import asyncio
import select
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import psutil

V1 = "/v1/models/dermaops:predict"
MIB = 2**20


def at_once(url: str, body: bytes, n: int, timeout: float = 60) -> list[httpx.Response]:
    """``n`` v1 predictions of ``body`` sent together, each on its own connection."""

    async def burst() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=n)
        async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as client:
            headers = {"content-type": "application/json"}
            return await asyncio.gather(*(client.post(V1, content=body, headers=headers)
                                          for _ in range(n)))  # fmt: skip

    return asyncio.run(burst())


def raw_head(port: int, framing: str, timeout: float = 10) -> socket.socket:
    """A socket that has sent a v1 request's head with ``framing`` (``Content-Length: N`` or
    ``Transfer-Encoding: chunked``) and no body yet."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(f"POST {V1} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              f"{framing}\r\n\r\n".encode())  # fmt: skip
    return s


def whole_answer(s: socket.socket) -> str:
    """A whole HTTP answer off a raw socket: the head, then as many body bytes as it declares
    (TCP may hand them over in several pieces)."""
    data = b""
    while b"\r\n\r\n" not in data:
        piece = s.recv(65536)
        if not piece:
            return data.decode("latin-1")
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)  # fmt: skip
    while len(body) < length and (piece := s.recv(65536)):
        body += piece
    return (head + b"\r\n\r\n" + body).decode("latin-1")


def post_big(port: int, size: int, chunked: bool) -> str:
    """A ``size``-byte body declared by Content-Length (nothing of it sent until answered), or
    chunked in 1 MiB pieces until the server answers; the status line it answered."""
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}"
    with raw_head(port, framing, timeout=120) as s:
        piece = b"%x\r\n%s\r\n" % (MIB, b" " * MIB)
        try:
            for _ in range(size // MIB if chunked else 0):
                if select.select([s], [], [], 0)[0]:  # answered: stop sending
                    break
                s.sendall(piece)
        except OSError:  # closed after answering; the answer is still to be read
            pass
        return whole_answer(s).split("\r\n")[0]


@contextmanager
def peak_resident(pid: int) -> Iterator[Callable[[], float]]:
    """The largest resident set of ``pid`` (MiB) while the block runs, sampled every 20 ms."""
    process, peak, done = psutil.Process(pid), [0.0], threading.Event()

    def watch() -> None:
        while not done.wait(0.02):
            peak[0] = max(peak[0], process.memory_info().rss / MIB)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield lambda: peak[0]
    finally:
        done.set()
        watcher.join()
