"""What the predictor settles before any of KServe's handlers run (ASGI middleware).

KServe's model repository extension answers ``POST /v2/repository/models/{name}/unload`` (and
``/load``) to anyone who can reach the port: one request unloads the served model, which a
single-model predictor cannot load back, while ``/v2/health/ready`` goes on saying ready. A
DermaOps predictor serves one registered version from its start to its end; another version is
a rollout (the registry and the deploy patch), never a request. So the repository is read-only.

The same single version answers the protocol's version paths (``/v2/models/{name}/versions/{v}``
and ``?model_version=``), which KServe 0.21 answers with 501 for any version: the served one is
served, any other is a 404 that names the one served.
"""

from __future__ import annotations

import json
import re
from urllib.parse import parse_qsl, urlencode

from dermaops.serving.binary import App, Receive, Scope, Send

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


async def answer(send: Send, status: int, error: str) -> None:
    """A JSON ``{"error": ...}`` answer, as KServe's own errors look."""
    body = json.dumps({"error": error}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
