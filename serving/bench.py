"""``dermaops bench serve``: the real predictor on loopback against the same model in process.

Both sides do the same work per image: decode a 600x450 JPEG, the stem, the forward pass. The
ratio of the server's median latency at concurrency 1 to the in-process median is the cost of
HTTP, JSON, base64 and KServe.

With ``client_cores``, the client runs on cores of its own and the predictor and the in-process
reference on the rest, each with as many threads as those cores: what a client on another
machine leaves the predictor's pod. Without, all three share every core (on 2 cores the client's
own work and wake-ups fall on the cores the forward pass uses).
"""

from __future__ import annotations

import asyncio
import http.client
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np

from dermaops.cpus import SHARED, CoreSplit, cpu_budget, pinned, split_cores
from dermaops.data.synth import SynthSettings, synthesize
from dermaops.errors import ConfigError, DermaOpsError
from dermaops.imaging import decode
from dermaops.model.artifact import ModelArtifact
from dermaops.model.uri import load_model
from dermaops.serving.backends import choose_backend
from dermaops.serving.process import PredictorProcess
from dermaops.serving.profile import MIN_REQUESTS, profiled
from dermaops.serving.telemetry import THREADS_METRIC
from dermaops.settings import Home
from dermaops.v1 import request_body

PREDICT = "/v1/models/dermaops:predict"


def bench_serve(
    model_uri: str,
    home: Home,
    requests: int = 200,
    concurrency: tuple[int, ...] = (1, 8, 32),
    backend: str = "auto",
    precision: str = "auto",
    images: int = 32,
    rounds: int = 5,
    profile: bool = False,
    client_cores: int = 0,
) -> dict[str, Any]:
    """Latency and throughput of the served model, and the in-process reference.

    The in-process loop and the served requests at concurrency 1 alternate in ``rounds``, so
    that the machine's noise falls on both alike; higher concurrency levels follow. With
    ``profile``, ``requests`` more (at least ``MIN_REQUESTS``) at concurrency 1 are sampled
    by py-spy after the timed ones (:mod:`dermaops.serving.profile`: its sampling never
    touches the timed figures). ``client_cores``: see the module's text (0: shared).
    """
    split = split_cores(client_cores)
    measured, client = (split.measured, split.client) if split else (None, None)
    artifact, version = load_model(model_uri, home)
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        jpegs = synthetic_jpegs(Path(tmp) / "synth", images)
        with pinned(measured):  # the reference's and the predictor's threads start there
            local = InProcess(artifact, backend, jpegs, precision)
            if split is not None and local.threads is None:
                raise ConfigError(f"--client-cores sizes ONNX Runtime's threads by the cores "
                                  f"left; {local.backend.name} sizes its own: use --backend "
                                  f"onnx, or no --client-cores")  # fmt: skip
            flags = ["--precision", precision]
            server = stack.enter_context(_server(artifact.folder, backend, Path(tmp), flags))
        url = server.url
        bodies = [request_body([j]) for j in jpegs]
        per_round = max(1, requests // rounds)
        near: list[float] = []
        served: list[float] = []
        errors = 0
        for _ in range(rounds):
            with pinned(measured):
                near += local.times(per_round)
            with pinned(client):
                level = _sequential(url, bodies, per_round)
            served += level.pop("times")
            errors += level["errors"]
        levels = [{"concurrency": 1, **_summary(served, errors, sum(served))}]
        phases = server_phases_ms(url)  # of the concurrency-1 requests alone
        threads = predictor_threads(url)
        sampled = None
        with pinned(client):  # py-spy too: it runs beside the client, not on measured cores
            if profile:  # after the timed requests: sampling must not touch their figures
                count = max(requests, MIN_REQUESTS)
                sampled = profiled(server.pid, count, lambda n: _sequential(url, bodies, n))
            for c in (c for c in concurrency if c != 1):
                level = asyncio.run(_level(url, bodies, requests, c))
                level.pop("times")
                levels.append(level)
    in_process = {"backend": local.backend.name, "threads": local.threads,
                  **_summary(near, 0, sum(near))}  # fmt: skip
    return {
        "benchmark": "serve",
        "model": str(artifact.folder),
        "version": version,
        "arch": artifact.arch,
        "image_size": artifact.preprocessing.image_size,
        "backend": local.backend.name,
        "precision": local.backend.precision,
        "requests_per_level": requests,
        "in_process": in_process,
        "served": levels,
        "ratio_p50_vs_in_process": round(levels[0]["p50_ms"] / in_process["p50_ms"], 3),
        "cores": _cores(split),
        "predictor_threads": threads,
        "server_phases_ms": phases,
        "errors": sum(level["errors"] for level in levels),
        **({"profile": sampled} if sampled else {}),
    }


def server_phases_ms(url: str) -> dict[str, float]:
    """Mean milliseconds per request of KServe's phases as the predictor measured them
    (``request_{preprocess,predict,postprocess}_seconds``: reading the request; decode,
    forward and scoring, in one hop to a worker thread; the answer), so that a round trip
    can be split into the model's path and the rest."""
    totals = _metric_totals(url)
    phases = {}
    for phase in ("preprocess", "predict", "postprocess"):
        count = totals.get(f"request_{phase}_seconds_count", 0.0)
        if count:
            phases[phase] = round(1000 * totals[f"request_{phase}_seconds_sum"] / count, 2)
    return phases


def predictor_threads(url: str) -> int:
    """The worker threads the predictor sized its pool and graph by (its threads gauge, one
    sample labelled by where the number came from): the CPUs it found, which ``client_cores``
    narrows.

    Raises:
        DermaOpsError: the predictor reports no such gauge, or more than one.
    """
    values = [value for name, value in _samples(url) if name == THREADS_METRIC]
    if len(values) != 1:
        raise DermaOpsError(f"the predictor at {url} reports {len(values)} samples of "
                            f"{THREADS_METRIC}, not one")  # fmt: skip
    return int(values[0])


def _metric_totals(url: str) -> dict[str, float]:
    """The predictor's /metrics, each sample name's values summed over its labels."""
    totals: dict[str, float] = {}
    for name, value in _samples(url):
        totals[name] = totals.get(name, 0.0) + value
    return totals


def _samples(url: str) -> list[tuple[str, float]]:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=30).text
    return [(s.name, s.value) for f in text_string_to_metric_families(text) for s in f.samples]


def _cores(split: CoreSplit | None) -> dict[str, Any]:
    """Where each side ran, and whether a CPU quota (a container's limit) was over them all:
    under one, a core of the client's own is still time out of the same quota."""
    quota = cpu_budget().source
    if split is None:
        return {"shared": True, "quota": quota, "described": SHARED}
    return {"shared": False, "quota": quota, "client": sorted(split.client),
            "measured": sorted(split.measured), "described": split.describe()}  # fmt: skip


def synthetic_jpegs(folder: Path, n: int) -> list[bytes]:
    synthesize(folder, SynthSettings(n=max(n, 40), seed=11, workers=os.cpu_count() or 1))
    return [p.read_bytes() for p in sorted(folder.rglob("*.jpg"))[:n]]


def bench_precision(
    model_uri: str, home: Home, requests: int = 200, images: int = 32, rounds: int = 5
) -> dict[str, Any]:
    """The INT8 and the fp32 graph of one model, each served, at concurrency 1, and the fp32
    graph in process; rounds alternate so that the machine's noise falls on all three alike.

    Raises:
        ConfigError: the model has no INT8 graph (its registration says why).
    """
    artifact, version = load_model(model_uri, home)
    decision = artifact.precision
    if artifact.int8_path is None:
        why = decision.get("reason", "it was registered without a precision decision")
        raise ConfigError(f"{artifact.folder} has no INT8 graph to compare: {why}")
    per_round = max(1, requests // rounds)
    times: dict[str, list[float]] = {"in_process": [], "fp32": [], "int8": []}
    errors = 0
    with tempfile.TemporaryDirectory() as tmp:
        jpegs = synthetic_jpegs(Path(tmp) / "synth", images)
        bodies = [request_body([j]) for j in jpegs]
        local = InProcess(artifact, "onnx", jpegs, precision="fp32")
        with (
            _server(artifact.folder, "onnx", Path(tmp) / "fp32", ["--precision", "fp32"]) as fp32,
            _server(artifact.folder, "onnx", Path(tmp) / "int8", ["--precision", "int8"]) as int8,
        ):
            for _ in range(rounds):
                times["in_process"] += local.times(per_round)
                for name, server in (("fp32", fp32), ("int8", int8)):
                    level = _sequential(server.url, bodies, per_round)
                    times[name] += level["times"]
                    errors += level["errors"]
    summaries = {name: _summary(t, 0, sum(t)) for name, t in times.items()}
    return {
        "benchmark": "serve-precision",
        "model": str(artifact.folder),
        "version": version,
        "arch": artifact.arch,
        "image_size": artifact.preprocessing.image_size,
        "cpu": decision.get("cpu", {}),
        "recipe": decision.get("recipe", ""),
        "in_process_fp32": summaries["in_process"],
        "served_fp32": summaries["fp32"],
        "served_int8": summaries["int8"],
        "ratio_int8_vs_fp32_served_p50": round(
            summaries["int8"]["p50_ms"] / summaries["fp32"]["p50_ms"], 3
        ),
        "accuracy_deltas_points": decision.get("deltas_points", {}),
        "errors": errors,
    }


class InProcess:
    """Decode, stem and forward in this process: what serving adds nothing to."""

    def __init__(
        self, artifact: ModelArtifact, backend: str, jpegs: list[bytes], precision: str = "auto"
    ):
        self.pre = artifact.preprocessing
        self.backend = choose_backend(artifact, backend, precision=precision)
        self.threads: int | None = getattr(self.backend, "threads", None)  # ONNX Runtime's
        self.jpegs = jpegs
        self.times(5)  # warm-up

    def times(self, count: int) -> list[float]:
        result = []
        for i in range(count):
            start = time.perf_counter()
            image = decode(self.jpegs[i % len(self.jpegs)], min_size=self.pre.cache_size).image
            self.backend(self.pre.cache_pixels(image)[None])
            result.append(time.perf_counter() - start)
        return result


@contextmanager
def _server(
    folder: Path, backend: str, tmp: Path, extra: Sequence[str] = ()
) -> Iterator[PredictorProcess]:
    flags = ["--backend", backend, "--enable_latency_logging", "false", *extra]
    tmp.mkdir(parents=True, exist_ok=True)
    with PredictorProcess(folder, tmp / "home", tmp / "server.log", flags) as server:
        yield server


def _sequential(url: str, bodies: list[bytes], count: int) -> dict[str, Any]:
    """Concurrency 1 with the leanest client there is (one kept-alive ``http.client``
    connection, no event loop), so that the figure is the server's cost, not the client's: an
    asyncio client added about as much again as the whole server on 2 cores."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)
    times: list[float] = []
    errors = 0
    try:
        for i in range(count + 1):  # the first warms the connection
            start = time.perf_counter()
            try:
                connection.request("POST", PREDICT, body=bodies[i % len(bodies)], headers=_JSON)
                response = connection.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                connection.close()  # reconnects at the next request
                ok = False
            if i:
                times.append(time.perf_counter() - start)
                errors += not ok
    finally:
        connection.close()
    return {"concurrency": 1, **_summary(times, errors, sum(times)), "times": times}


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
    return {"concurrency": concurrency, **_summary(times, errors, wall), "times": times}


def _summary(times: list[float], errors: int, wall: float) -> dict[str, Any]:
    ms = np.array(times) * 1000
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "images_per_s": round(len(times) / wall, 1),
        "errors": errors,
    }


_JSON = {"content-type": "application/json"}
