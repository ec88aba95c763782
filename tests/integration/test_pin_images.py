"""`make pin-images` against a registry on loopback that speaks the OCI distribution API."""

from __future__ import annotations

import hashlib
import json
import runpy
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.k8s.conftest import ROOT

pin = runpy.run_path(str(ROOT / "scripts" / "pin_images.py"))
pytestmark = pytest.mark.integration

INDEX = json.dumps({"schemaVersion": 2, "manifests": []}).encode()
TOKEN = "pull-token"


class Registry(ThreadingHTTPServer):
    """One repository, base/python:3.11, behind an anonymous bearer-token challenge."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), RegistryHandler)
        self.requests: list[str] = []
        self.claimed_digest = ""  # a registry that lies about what it serves

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


class RegistryHandler(BaseHTTPRequestHandler):
    server: Registry

    def do_GET(self) -> None:
        self.server.requests.append(self.path)
        if self.path.startswith("/token?"):
            assert "scope=repository%3Abase%2Fpython%3Apull" in self.path
            return self._send(200, json.dumps({"token": TOKEN}).encode())
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            challenge = (f'Bearer realm="http://{self.server.host}/token",service="loopback",'
                         'scope="repository:base/python:pull"')  # fmt: skip
            return self._send(401, b"{}", {"WWW-Authenticate": challenge})
        if self.path != "/v2/base/python/manifests/3.11":
            return self._send(404, b'{"errors": [{"code": "MANIFEST_UNKNOWN"}]}')
        assert "application/vnd.oci.image.index.v1+json" in self.headers["Accept"]
        digest = self.server.claimed_digest or f"sha256:{hashlib.sha256(INDEX).hexdigest()}"
        return self._send(200, INDEX, {"Docker-Content-Digest": digest})

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture()
def registry() -> Iterator[Registry]:
    server = Registry()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _files(tmp_path: Path, host: str) -> tuple[Path, Path]:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(f"ARG BASE_IMAGE={host}/base/python:3.11\nFROM ${{BASE_IMAGE}}\n")
    values = tmp_path / "values.yaml"
    values.write_text(f"sidecar:\n  # -- a comment stays\n  image: {host}/base/python:3.11\n")
    return dockerfile, values


def test_pins_each_reference_to_the_digest_of_the_served_bytes(
    registry: Registry, tmp_path: Path
) -> None:
    dockerfile, values = _files(tmp_path, registry.host)
    assert pin["main"](["--check", str(dockerfile), str(values)]) == 1
    assert pin["main"]([str(dockerfile), str(values)]) == 0
    digest = f"sha256:{hashlib.sha256(INDEX).hexdigest()}"
    pinned = f"{registry.host}/base/python:3.11@{digest}"
    assert dockerfile.read_text().splitlines()[0] == f"ARG BASE_IMAGE={pinned}"
    assert values.read_text() == f"sidecar:\n  # -- a comment stays\n  image: {pinned}\n"
    assert registry.requests.count("/v2/base/python/manifests/3.11") == 4  # 401, then 200, twice
    assert pin["main"](["--check", str(dockerfile), str(values)]) == 0
    asked = len(registry.requests)
    assert pin["main"]([str(dockerfile), str(values)]) == 0
    assert len(registry.requests) == asked, "a pinned reference is never asked about again"


def test_a_registry_that_cannot_be_trusted_or_reached_changes_nothing(
    registry: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dockerfile, values = _files(tmp_path, registry.host)
    before = dockerfile.read_text(), values.read_text()
    registry.claimed_digest = "sha256:" + "0" * 64
    assert pin["main"]([str(dockerfile), str(values)]) == 2
    assert "served bytes hash to sha256:" in capsys.readouterr().out
    values.write_text(before[1].replace("python:3.11", "python:9.9"))
    assert pin["main"]([str(values)]) == 2
    assert "HTTP 404" in capsys.readouterr().out
    registry.shutdown()
    registry.server_close()  # nothing listens there any more
    registry.claimed_digest = ""
    assert pin["main"]([str(dockerfile)]) == 2
    assert "CANNOT PIN" in capsys.readouterr().out
    assert dockerfile.read_text() == before[0]


def test_references_follow_dockers_naming_rules() -> None:
    parse = pin["Reference"].parse
    hub = parse("python:3.11-slim")
    assert (hub.registry, hub.repository, hub.tag) == ("docker.io", "library/python", "3.11-slim")
    assert hub.base_url == "https://registry-1.docker.io"
    assert parse("kserve/storage-initializer:v0.21.0").repository == "kserve/storage-initializer"
    ghcr = parse("ghcr.io/mlflow/mlflow:v3.17.2@sha256:" + "a" * 64)
    assert (ghcr.registry, ghcr.repository, ghcr.tag) == ("ghcr.io", "mlflow/mlflow", "v3.17.2")
    assert parse("localhost:5000/x:1").base_url == "http://localhost:5000"
    with pytest.raises(ValueError, match="neither a tag nor a digest"):
        parse("python")
    with pytest.raises(ValueError, match="sha256:<64 hex>"):
        parse("python:3@sha256:abc")


def test_the_dockerfile_base_image_is_pinned_by_digest() -> None:
    (_, text), *rest = pin["references"](ROOT / "Dockerfile")
    assert not rest and pin["Reference"].parse(text).digest, text
