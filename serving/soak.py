"""``dermaops bench soak``: the real predictor under a long mix of good and bad requests.

What a replica must hold for hours: every good request answered, every bad one refused with a
4xx that names the problem (never a 5xx, never a dropped connection), latency flat over time,
and resident memory flat after warm-up. The figures come from the predictor's own process, on
loopback, with the in-process decode + forward of the same images as the reference.
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
from tqdm import tqdm

from dermaops.errors import ConfigError
from dermaops.model.uri import load_model
from dermaops.serving.backends import resolve
from dermaops.serving.bench import InProcess, synthetic_jpegs
from dermaops.serving.process import PredictorProcess
from dermaops.serving.settings import ENV_PREFIX, ServingSettings
from dermaops.settings import Home, load_settings
from dermaops.v1 import request_body

V1 = "/v1/models/dermaops:predict"
V2 = "/v2/models/dermaops/infer"
MAX_RSS_GROWTH = 0.10  # over the measured requests, after warm-up
MAX_IDLE_RSS_MB = 400.0  # a CPU replica at rest, ready, before any request: the floor each pays
WINDOWS = 10  # latency and memory are reported for this many consecutive slices
JSON = {"content-type": "application/json"}


@dataclass(frozen=True)
class Payload:
    """One request of the mix; ``good`` ones must get 200, the others a 4xx."""

    kind: str
    path: str
    body: bytes
    good: bool
    images: int = 0


def mix(jpegs: list[bytes], max_instances: int) -> tuple[list[Payload], list[Payload]]:
    """Good payloads (v1 and v2, one or two images) and one of each kind of bad payload."""
    b64s = [base64.b64encode(j).decode() for j in jpegs]
    good: list[Payload] = []
    for i, (jpeg, b64) in enumerate(zip(jpegs, b64s, strict=True)):
        pair = [jpeg, jpegs[(i + 1) % len(jpegs)]]
        good += [
            Payload("v1", V1, request_body([jpeg]), True, 1),
            Payload("v1-two-images", V1, request_body(pair), True, 2),
            Payload("v2", V2, _v2([b64]), True, 1),
        ]
    one = b64s[0]
    bad = [
        Payload("not-json", V1, b"{not json", False),
        Payload("no-instances", V1, b'{"images": []}', False),
        Payload("empty-instances", V1, b'{"instances": []}', False),
        Payload("bad-base64", V1, b'{"instances": [{"image_bytes": {"b64": "@@ no @@"}}]}', False),
        Payload("not-an-image", V1, request_body([b"GIF? no: text"]), False),
        Payload("truncated-jpeg", V1, request_body([jpegs[0][: len(jpegs[0]) // 2]]), False),
        Payload("too-many-images", V1, request_body([jpegs[0]] * (max_instances + 1)), False),
        Payload("pixel-bomb", V1, request_body([_png_header(10_000, 10_000)]), False),
        Payload("v2-not-bytes", V2, _v2_raw("x", "FP32", [1], [0.5]), False),
        Payload("v2-shape-mismatch", V2, _v2_raw("image", "BYTES", [3], [one]), False),
        Payload("v2-no-inputs", V2, b'{"id": "soak"}', False),
        Payload("v2-unknown-output", V2, _v2([one], outputs=["nope"]), False),
        Payload("unknown-model", "/v1/models/nope:predict", request_body(jpegs[:1]), False),
    ]  # fmt: skip
    return good, bad


@dataclass
class Tally:
    """What the requests got, in the order they finished."""

    latencies_ms: list[float] = field(default_factory=list)
    good_errors: Counter[str] = field(default_factory=Counter)
    bad_not_4xx: Counter[str] = field(default_factory=Counter)
    connection_errors: int = 0


async def drive(
    url: str,
    plan: list[Payload],
    concurrency: int,
    tally: Tally,
    on_done: Callable[[int], None] = lambda done: None,
) -> None:
    """Send ``plan`` with ``concurrency`` requests in flight; count into ``tally``."""
    queue = iter(plan)
    done = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def worker() -> None:
            nonlocal done
            for payload in queue:
                started = time.perf_counter()
                try:
                    response = await client.post(payload.path, content=payload.body, headers=JSON)
                except httpx.TransportError:
                    tally.connection_errors += 1
                    status, answer = 0, None
                else:
                    status, answer = response.status_code, response
                if payload.good:
                    tally.latencies_ms.append((time.perf_counter() - started) * 1000)
                    if answer is None or not _answered(payload, answer):
                        tally.good_errors[f"{payload.kind}:{status}"] += 1
                elif answer is not None and not 400 <= status < 500:
                    tally.bad_not_4xx[f"{payload.kind}:{status}"] += 1
                done += 1
                on_done(done)

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def soak(
    model_uri: str,
    home: Home,
    requests: int = 20_000,
    concurrency: int = 8,
    bad_share: float = 0.1,
    backend: str = "auto",
    warmup: int = 500,
    seed: int = 0,
    url: str = "",
    pid: int = 0,
) -> dict[str, Any]:
    """The predictor under ``requests`` requests of the mix, after ``warmup`` more.

    By default the predictor is started here for ``model_uri``; with ``url`` the one already
    serving there is driven instead (a container, a port-forwarded pod), and ``pid``, its process
    id as this machine sees it, gives the memory figures. The in-process reference is always
    ``model_uri`` here.

    Returns the figures (``requests``, ``good_errors``, ``bad_not_4xx``, ``connection_errors``,
    ``p50_ms``, ``p99_ms``, ``idle_rss_mb``, ``rss_growth``...) and ``held``: whether every
    target held.
    """
    artifact, version = load_model(model_uri, home)
    backend = resolve(backend, artifact)
    serving = load_settings(ServingSettings, env_prefix=ENV_PREFIX)
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory(prefix="dermaops-soak-") as tmp:
        jpegs = synthetic_jpegs(Path(tmp) / "synth", 32)
        good, bad = mix(jpegs, serving.max_instances)
        reference = InProcess(artifact, backend, jpegs)
        in_process_p50 = float(np.percentile(reference.times(200), 50)) * 1000
        del reference
        target = _running(url, pid) if url else _started(artifact.folder, backend, Path(tmp))
        with target as (address, process):
            memory = Memory(process)
            idle = memory.mb()
            warm = _plan(good, bad, warmup, bad_share, rng)
            asyncio.run(drive(address, warm, concurrency, Tally()))
            rss_start = memory.mb()
            tally = Tally()
            samples: list[tuple[int, float | None]] = []
            every = max(1, requests // WINDOWS)

            plan = _plan(good, bad, requests, bad_share, rng)
            with tqdm(total=requests, desc="soak", unit="req") as bar:

                def sample(done: int) -> None:
                    bar.update()
                    if done % every == 0:
                        samples.append((len(tally.latencies_ms), memory.mb()))

                started = time.perf_counter()
                asyncio.run(drive(address, plan, concurrency, tally, sample))
                wall = time.perf_counter() - started
            rss_end = memory.mb()
            ready_after = _ready(address)
    return _figures(
        plan, tally, samples, wall, (idle, rss_start, rss_end), ready_after, in_process_p50,
        {"model": str(artifact.folder), "version": version, "arch": artifact.arch,
         "image_size": artifact.preprocessing.image_size, "url": url or "started here",
         "concurrency": concurrency, "bad_share": bad_share, "warmup_requests": warmup,
         "backend": backend},
    )  # fmt: skip


@dataclass(frozen=True)
class Memory:
    """Resident MiB of the predictor's process and any children it started (None: unknown)."""

    process: psutil.Process | None

    def mb(self) -> float | None:
        if self.process is None:
            return None
        every = [self.process, *self.process.children(recursive=True)]
        return float(sum(p.memory_info().rss for p in every)) / 2**20


@contextmanager
def _started(model: Path, backend: str, tmp: Path) -> Iterator[tuple[str, psutil.Process]]:
    flags = ["--backend", backend, "--enable_latency_logging", "false"]
    with PredictorProcess(model, tmp / "home", tmp / "log", flags) as server:
        yield server.url, psutil.Process(server.pid)


@contextmanager
def _running(url: str, pid: int) -> Iterator[tuple[str, psutil.Process | None]]:
    """A predictor someone else started; refused unless it is ready (and ``pid`` exists)."""
    if not _ready(url):
        raise ConfigError(f"--url {url}: no ready predictor answers there (/v2/health/ready)")
    try:
        process = psutil.Process(pid) if pid else None
    except psutil.NoSuchProcess as e:
        raise ConfigError(f"--pid {pid}: no such process on this machine") from e
    yield url.rstrip("/"), process


def _figures(
    plan: list[Payload],
    tally: Tally,
    samples: list[tuple[int, float | None]],
    wall: float,
    rss: tuple[float | None, float | None, float | None],
    ready_after: bool,
    in_process_p50: float,
    about: dict[str, Any],
) -> dict[str, Any]:
    ms = np.array(tally.latencies_ms)
    idle, start, end = rss
    windows, previous = [], 0
    for upto, rss_mb in samples:
        part = ms[previous:upto]
        if len(part):
            windows.append({"good_requests": upto, "p50_ms": _pct(part, 50),
                            "p99_ms": _pct(part, 99), "rss_mb": _round(rss_mb)})  # fmt: skip
        previous = upto
    kinds = Counter(p.kind for p in plan)
    images = sum(p.images for p in plan)  # good ones: a bad payload's images are not counted
    figures = {
        "benchmark": "soak",
        **about,
        "requests": len(plan),
        "bad_requests": sum(not p.good for p in plan),
        "good_errors": sum(tally.good_errors.values()),
        "bad_not_4xx": sum(tally.bad_not_4xx.values()),
        "connection_errors": tally.connection_errors,
        "p50_ms": _pct(ms, 50),
        "p99_ms": _pct(ms, 99),
        "requests_per_s": round(len(plan) / wall, 1),
        "images_per_s": round(images / wall, 1),
        "in_process_p50_ms": round(in_process_p50, 2),
        "in_process_images_per_s": round(1000 / in_process_p50, 1),
        "throughput_vs_in_process": round(images / wall / (1000 / in_process_p50), 2),
        "idle_rss_mb": _round(idle),
        "max_idle_rss_mb": MAX_IDLE_RSS_MB if about["backend"] != "cuda" else None,
        "rss_mb_after_warmup": _round(start),
        "rss_mb_end": _round(end),
        "rss_growth": round((end - start) / start, 4) if start and end else None,
        "ready_after": ready_after,
        "windows": windows,
        "kinds": dict(sorted(kinds.items())),
        "failures_by_kind": dict(tally.good_errors + tally.bad_not_4xx),
    }
    figures["missed"] = _missed(figures)
    figures["held"] = not figures["missed"]
    return figures


def _missed(f: dict[str, Any]) -> list[str]:
    """The targets a soak run missed, in words."""
    missed = [f"{f[k]} {k.replace('_', ' ')}" for k in
              ("good_errors", "bad_not_4xx", "connection_errors") if f[k]]  # fmt: skip
    if f["rss_growth"] is not None and f["rss_growth"] > MAX_RSS_GROWTH:
        missed.append(f"resident memory grew {f['rss_growth']:.1%} (at most {MAX_RSS_GROWTH:.0%})")
    idle, most = f["idle_rss_mb"], f["max_idle_rss_mb"]
    if idle is not None and most is not None and idle > most:
        missed.append(f"{idle:.0f} MB resident at rest (at most {most:.0f} MB on CPU)")
    if not f["ready_after"]:
        missed.append("not ready afterwards")
    return missed


def _plan(
    good: list[Payload], bad: list[Payload], n: int, bad_share: float, rng: np.random.Generator
) -> list[Payload]:
    is_bad = rng.random(n) < bad_share
    picks_good = rng.integers(len(good), size=n)
    picks_bad = rng.integers(len(bad), size=n)
    return [bad[b] if x else good[g] for x, g, b in zip(is_bad, picks_good, picks_bad, strict=True)]


def _answered(payload: Payload, response: httpx.Response) -> bool:
    """A 200 whose body holds one answer per image sent."""
    if response.status_code != 200:
        return False
    try:
        body = response.json()
    except ValueError:
        return False
    if payload.path == V1:
        return len(body.get("predictions", [])) == payload.images
    shapes = {o["name"]: o["shape"] for o in body.get("outputs", [])}
    return shapes.get("probabilities") == [payload.images, 7]


def _ready(url: str) -> bool:
    try:
        return all(
            httpx.get(f"{url}{path}", timeout=10).status_code == 200
            for path in ("/v2/health/ready", "/v2/models/dermaops/ready")
        )
    except httpx.HTTPError:
        return False


def _round(mb: float | None) -> float | None:
    return None if mb is None else round(mb, 1)


def _pct(ms: np.ndarray, q: int) -> float:
    return round(float(np.percentile(ms, q)), 2) if len(ms) else 0.0


def _v2(b64s: list[str], outputs: list[str] | None = None) -> bytes:
    body: dict[str, Any] = json.loads(_v2_raw("image", "BYTES", [len(b64s)], b64s))
    if outputs:
        body["outputs"] = [{"name": name} for name in outputs]
    return json.dumps(body).encode()


def _v2_raw(name: str, datatype: str, shape: list[int], data: list[Any]) -> bytes:
    tensor = {"name": name, "shape": shape, "datatype": datatype, "data": data}
    return json.dumps({"inputs": [tensor]}).encode()


def _png_header(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` pixels in a few bytes: a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    chunks = chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks
