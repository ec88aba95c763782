"""A real HTTP server on loopback that serves files and injects the faults downloads meet."""

from __future__ import annotations

import base64
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote


@dataclass
class Route:
    """What a path serves; ``faults`` are used up one a request (reset, truncate, 503, no-range;
    a POST answers a numeric fault as its status code, and ``retry-after=S`` as a 503 with that
    ``Retry-After``)."""

    body: bytes
    faults: list[str] = field(default_factory=list)
    content_type: str = "application/octet-stream"
    auth: tuple[str, str] | None = None


class FaultyServer:
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.posts: list[tuple[str, bytes]] = []
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.handle_error = lambda request, address: None  # faults are on purpose
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def add(self, path: str, body: bytes, *faults: str, **kw: object) -> Route:
        route = Route(body, list(faults), **kw)  # type: ignore[arg-type]
        self.routes[path] = route
        return route

    def hits(self, path: str) -> list[dict[str, str]]:
        return [headers for p, headers in self.requests if p == path]

    def __enter__(self) -> FaultyServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def _handler_for(server: FaultyServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
            pass

        def do_GET(self) -> None:
            path = unquote(self.path)
            server.requests.append((path, dict(self.headers)))
            route = server.routes.get(path) or server.routes.get(path.split("?")[0])
            if route is None:
                return self._plain(404, b"not found")
            if route.auth and self.headers.get("Authorization") != _basic(route.auth):
                return self._plain(401, b"unauthorized")
            fault = route.faults.pop(0) if route.faults else "ok"
            if fault == "503":
                return self._plain(503, b"busy")
            start = _range_start(self.headers.get("Range")) if fault != "no-range" else 0
            body = route.body[start:]
            self.send_response(206 if start else 200)
            if start:
                self.send_header(
                    "Content-Range", f"bytes {start}-{len(route.body) - 1}/{len(route.body)}"
                )
            self.send_header("Content-Type", route.content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if fault in ("reset", "truncate"):
                self.wfile.write(body[: len(body) // 2])
                self._drop(reset=fault == "reset")
            else:
                self.wfile.write(body)

        def do_POST(self) -> None:
            """A webhook: record the body; answer the route's next fault as a status code."""
            path = unquote(self.path)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            server.posts.append((path, body))
            route = server.routes.get(path)
            if route is None:
                return self._plain(404, b"not found")
            fault = route.faults.pop(0) if route.faults else "ok"
            if fault.startswith("retry-after="):
                return self._plain(503, b'{"error": "busy"}', {"Retry-After": fault[12:]})
            self._plain(int(fault) if fault.isdigit() else 200, route.body)

        def _plain(self, code: int, text: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(code)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            self.wfile.write(text)

        def _drop(self, reset: bool) -> None:
            if reset:  # SO_LINGER 0: close sends RST, the way a crashed proxy does
                time.sleep(0.3)  # let the client read what was sent: an RST discards unread data
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
            else:
                self.connection.shutdown(socket.SHUT_WR)
            self.connection.close()
            self.close_connection = True

    return Handler


def _range_start(value: str | None) -> int:
    if not value or not value.startswith("bytes="):
        return 0
    return int(value.removeprefix("bytes=").split("-")[0])


def _basic(auth: tuple[str, str]) -> str:
    return "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
