"""``dermaops bench serve``: the real predictor on loopback against the same model in process.

Both sides do the same work per image: decode a 600x450 JPEG, the stem, the forward pass. The
ratio of the server's median latency at concurrency 1 to the in-process median is the cost of
HTTP, JSON, base64 and KServe.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from dermaops.data.synth import SynthSettings, synthesize
from dermaops.errors import DermaOpsError
from dermaops.imaging import decode
from dermaops.models import Preprocessing
from dermaops.serving.backends import choose_backend
from dermaops.serving.resolve import resolve_model
from dermaops.settings import Home
from dermaops.stem import cache_pixels, pixels_to_batch

PREDICT = "/v1/models/dermaops:predict"


def bench_serve(
    model_uri: str,
    home: Home,
    requests: int = 200,
    concurrency: tuple[int, ...] = (1, 8, 32),
    backend: str = "auto",
    images: int = 32,
) -> dict[str, Any]:
    """Latency and throughput of the served model, and the in-process reference."""
    folder, version = resolve_model(model_uri, home)
    with tempfile.TemporaryDirectory() as tmp:
        jpegs = _jpegs(Path(tmp) / "synth", images)
        in_process = _in_process(folder, backend, jpegs, requests)
        levels = _served(folder, backend, jpegs, requests, concurrency, Path(tmp))
    first = levels[0]
    return {
        "model": str(folder),
        "version": version,
        "backend": in_process["backend"],
        "requests_per_level": requests,
        "in_process": in_process,
        "served": levels,
        "ratio_p50_vs_in_process": round(first["p50_ms"] / in_process["p50_ms"], 3),
        "errors": sum(level["errors"] for level in levels),
    }


def _jpegs(folder: Path, n: int) -> list[bytes]:
    synthesize(folder, SynthSettings(n=max(n, 40), seed=11, workers=os.cpu_count() or 1))
    return [p.read_bytes() for p in sorted(folder.rglob("*.jpg"))[:n]]


def _in_process(folder: Path, backend: str, jpegs: list[bytes], count: int) -> dict[str, Any]:
    import json

    from dermaops.model_dir import META

    pre = Preprocessing.from_dict(json.loads((folder / META).read_text())["preprocessing"])
    run = choose_backend(folder, backend)
    times = []
    for i in range(count + 5):
        start = time.perf_counter()
        image = decode(jpegs[i % len(jpegs)], min_size=pre.cache_size).image
        run(pixels_to_batch([cache_pixels(image, pre)], pre))
        if i >= 5:  # warm-up
            times.append(time.perf_counter() - start)
    return {"backend": run.name, **_summary(times, 0, sum(times))}


def _served(
    folder: Path,
    backend: str,
    jpegs: list[bytes],
    count: int,
    levels: tuple[int, ...],
    tmp: Path,
) -> list[dict[str, Any]]:
    port = _free_port()
    command = [sys.executable, "-m", "dermaops.serving", "--model_dir", str(folder),
               "--http_port", str(port), "--enable_grpc", "false", "--backend", backend,
               "--max_instances", "1"]  # fmt: skip
    env = os.environ | {"DERMAOPS_HOME": str(tmp / "home")}
    log = tmp / "server.log"
    with log.open("w") as out:
        server = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_ready(url, server, log)
            bodies = [_body(j) for j in jpegs]
            return [asyncio.run(_level(url, bodies, count, c)) for c in levels]
        finally:
            server.terminate()
            server.wait(timeout=30)


async def _level(url: str, bodies: list[bytes], count: int, concurrency: int) -> dict[str, Any]:
    times: list[float] = []
    errors = 0
    queue = iter(range(count))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        await client.post(PREDICT, content=bodies[0], headers=_JSON)  # warm the connection

        async def worker() -> None:
            nonlocal errors
            for i in queue:
                start = time.perf_counter()
                try:
                    response = await client.post(
                        PREDICT, content=bodies[i % len(bodies)], headers=_JSON
                    )
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                times.append(time.perf_counter() - start)
                errors += not ok

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return {"concurrency": concurrency, **_summary(times, errors, wall)}


def _summary(times: list[float], errors: int, wall: float) -> dict[str, Any]:
    ms = np.array(times) * 1000
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "images_per_s": round(len(times) / wall, 1),
        "errors": errors,
    }


_JSON = {"content-type": "application/json"}


def _body(jpeg: bytes) -> bytes:
    b64 = base64.b64encode(jpeg).decode()
    return f'{{"instances":[{{"image_bytes":{{"b64":"{b64}"}}}}]}}'.encode()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_ready(url: str, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise DermaOpsError(f"the predictor exited:\n{log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise DermaOpsError("the predictor was not ready within 180 s")
