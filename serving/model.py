"""The KServe model: load, then preprocess -> predict -> postprocess, and explain (Grad-CAM).

Preprocess only reads what the request is; predict decodes its images on the worker thread
that runs the forward pass, so that a request costs one hop off the event loop, not two
(each hop wakes a worker thread, then the loop). How an answer is encoded (v1, v2 over REST
and gRPC, explain's PNGs) is :mod:`dermaops.serving.answers`."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from kserve import Model
from kserve.errors import InferenceError
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.infer_type import InferRequest, InferResponse

from dermaops.cpus import cpu_budget
from dermaops.data.features import PREDICTION
from dermaops.data.privacy import day_folder, store_pixels
from dermaops.errors import ConfigError
from dermaops.imaging import Decoded, ImageLimits
from dermaops.inference_log import PROBABILITY_FIELDS, InferenceLog
from dermaops.labels import CLASSES
from dermaops.model.projection import PROJECTION_NAMES
from dermaops.model.uri import load_model
from dermaops.serving.answers import Answer, Answers, Box
from dermaops.serving.backends import Backend, Outputs, choose_backend
from dermaops.serving.batching import MicroBatcher
from dermaops.serving.forward import RecordForwarder
from dermaops.serving.inputs import BadImage, RequestLimits, v1_images, v2_images
from dermaops.serving.records import Pending, Recorder
from dermaops.serving.settings import ServingSettings
from dermaops.serving.shadow import ShadowMirror, shadow_mirror
from dermaops.serving.telemetry import (
    ERRORS,
    LATENCY,
    MODEL_INFO,
    THREADS,
    count_backlog,
    count_log_failure,
    observe,
    observe_inputs,
)
from dermaops.settings import Home
from dermaops.tokens import MONITOR_TOKEN_ENV, read_token
from dermaops.v1 import REQUEST_ID_HEADER, SHADOW_HEADER

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Batch:
    """A request as preprocess hands it on, not yet decoded: the decode runs on the worker
    thread with the forward pass (or the explanation), in one hop."""

    payload: Any  # a v1 body (any JSON until decoded and checked) or a v2 InferRequest
    request_id: str
    started: float  # time.perf_counter() when preprocessing began
    shadow: bool = False  # mirrored by the stable predictor: answered, logged, not mirrored
    mirrored: bool = False  # a v1 request the shadow mirror sends on once it is answered

    @property
    def v2(self) -> InferRequest | None:
        """The v2 request (REST or gRPC); None for a v1 body."""
        return self.payload if isinstance(self.payload, InferRequest) else None


class Seen(NamedTuple):
    """A request's images as the model sees them: cache pixels, each image's (width, height)
    as sent (for its statistics) and the square seen, in fractions of each image."""

    pixels: list[np.ndarray]
    sizes: list[tuple[int, int]]
    boxes: list[Box]

    def stacked(self) -> np.ndarray:
        """The model's input; one image (the common request) as a view, not a stacked copy."""
        return self.pixels[0][None] if len(self.pixels) == 1 else np.stack(self.pixels)


@dataclass(frozen=True)
class Scored:
    """A batch and what the model says of it (predict's result, postprocess's input)."""

    batch: Batch
    answer: Answer


def worker_threads(settings: ServingSettings) -> int:
    """Threads for decoding and the CPU forward pass: the setting, else the container's CPUs
    (its CPU limit, not the node's cores); logged and exported."""
    budget = cpu_budget()
    threads, source = (
        (settings.workers, "setting") if settings.workers else (budget.threads, budget.source)
    )
    THREADS.labels(source).set(threads)
    log.info("%d worker threads (from the %s; %d CPUs here)", threads, source, budget.threads)
    return threads


class DermaOpsModel(Model):  # type: ignore[misc]
    """Serves one DermaOps model version; ready only after a real load and a warm-up."""

    def __init__(self, name: str, settings: ServingSettings, home: Home | None = None):
        super().__init__(name)
        self.settings = settings
        self.home = home or Home.from_env()
        self.limits = RequestLimits(
            settings.max_instances,
            ImageLimits(settings.max_image_bytes, settings.max_image_pixels),
        )
        self.threads = worker_threads(settings)
        self.pool = ThreadPoolExecutor(self.threads, "dermaops")
        self.sinks: list[InferenceLog | RecordForwarder] = []
        self.mirror: ShadowMirror | None = None

    def load(self) -> bool:
        """Resolve and load the model, run one inference; only then ``ready``."""
        self.artifact, version = load_model(self.settings.model_uri, self.home)
        self.version = self.settings.model_version or version
        self.pre = self.artifact.preprocessing
        self.backend: Backend = choose_backend(
            self.artifact, self.settings.backend, self.settings.compile, self.threads,
            self.settings.precision,
        )  # fmt: skip
        self.forward = self._forward_fn()
        logits, embedding = self.backend(np.zeros((1, *self.pre.cache_size[::-1], 3), np.uint8))
        if logits.shape != (1, len(CLASSES)):
            raise InferenceError(f"{self.artifact.folder} gave a wrong output shape at warm-up")
        if self.artifact.projection is not None:
            self.artifact.projection(embedding)  # a projection of another width fails here
        if self.artifact.guard is not None:
            self.artifact.guard.scores(logits, embedding)  # and so does a guard
        if self.settings.inference_log:
            where = self.settings.inference_log_dir or str(self.home.inference_log)
            self.sinks.append(InferenceLog(Path(where), on_failure=count_log_failure))
        if self.settings.monitor_url:
            self.sinks.append(RecordForwarder(self.settings.monitor_url, self._monitor_token()))
        self.recorder = Recorder(observe_inputs, [s.write for s in self.sinks], count_backlog)
        self.mirror = shadow_mirror(self.settings, self.name, self.version)
        self.answers = Answers(self.name, self.version, self.artifact.melanoma_threshold,
                               self.artifact.guard, self.settings.top_k)  # fmt: skip
        MODEL_INFO.labels(self.name, self.version, self.artifact.arch, self.backend.name).set(1)
        log.info("serving %s v%s (%s) with %s in %s", self.name, self.version,
                 self.artifact.folder, self.backend.name, self.backend.precision)  # fmt: skip
        self.ready = True
        return self.ready

    def _monitor_token(self) -> str:
        """The monitor's token: the environment (a Secret), else a local monitor's own file."""
        token = read_token()
        local = self.home.monitoring / "token"
        if token is None and local.is_file():
            token = local.read_text().strip()
        if not token:
            raise ConfigError(
                f"DERMAOPS_SERVING_MONITOR_URL is set but no token: set {MONITOR_TOKEN_ENV} "
                f"or {MONITOR_TOKEN_ENV}_FILE (the monitor refuses records without it)"
            )
        return token

    def _forward_fn(self) -> Callable[[Any], Awaitable[tuple[Seen, Answer]]]:
        """Decode, the forward pass and the scoring of its outputs off the event loop, in one
        hop to a worker thread (each hop and return costs a wake-up of a thread and of the
        loop); micro-batched on CUDA or when asked (decoded in a hop of its own, batched, then
        scored on the loop)."""
        cuda = self.backend.name.startswith("torch-cuda")
        size = self.settings.max_batch or (32 if cuda else 0)
        if size > 1:
            batcher = MicroBatcher(self.backend, size, self.settings.max_wait_ms, self.pool)

            async def batched(payload: Any) -> tuple[Seen, Answer]:
                loop = asyncio.get_running_loop()
                seen = await loop.run_in_executor(self.pool, self._seen, payload)
                return seen, self._score(await batcher(seen.stacked()))

            return batched

        def decode_and_answer(payload: Any) -> tuple[Seen, Answer]:
            seen = self._seen(payload)
            return seen, self._score(self.backend(seen.stacked()))

        async def direct(payload: Any) -> tuple[Seen, Answer]:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self.pool, decode_and_answer, payload)

        return direct

    def _score(self, outputs: Outputs) -> Answer:
        """Calibrated probabilities, melanoma flags, embedding projections and the guard's
        verdicts of a batch's logits and embeddings."""
        logits, embedding = outputs
        probs = self.artifact.probabilities(logits)
        flags = self.artifact.melanoma_flags(probs)
        projection = self.artifact.projection
        projected = projection(embedding) if projection is not None else np.zeros((len(probs), 0))
        ood_scores, in_distribution = self._guard(logits, embedding)
        return Answer(probs, flags, projected, ood_scores, in_distribution)

    async def preprocess(self, payload: Any, headers: dict[str, str] | None = None) -> Batch:
        """What the request is and whether it is mirrored; its images are decoded by
        :meth:`predict` or :meth:`explain`, on the worker thread that uses them."""
        started = time.perf_counter()
        headers = headers or {}
        shadow = self.settings.challenger and SHADOW_HEADER in headers
        mirrored = (self.mirror is not None and self.mirror.active and not shadow
                    and isinstance(payload, dict))  # fmt: skip
        # A mirrored request needs an id: the judge pairs the two answers on it.
        request_id = headers.get(REQUEST_ID_HEADER) or (uuid.uuid4().hex if mirrored else "")
        return Batch(payload, request_id, started, shadow, mirrored)

    def _seen(self, payload: Any) -> Seen:
        """Decode, then the stem's cache pixels, the original size and the square the model
        sees of each image (its drift statistics are computed after the answer). A bad image
        is counted by its reason and raised (KServe answers 400)."""
        try:
            decoded = self._decode(payload, self.pre.cache_size)
        except BadImage as e:
            ERRORS.labels(e.code).inc()
            raise
        if self.settings.retain_images:
            self._retain(decoded)
        return Seen(
            [self.pre.cache_pixels(d.image) for d in decoded],
            [d.original_size for d in decoded],
            [self.pre.seen_box(d.image.size) for d in decoded],
        )

    def _retain(self, decoded: list[Decoded]) -> None:
        """Keep the images (only when asked): pixels alone, by day, for ``feedback purge``."""
        root = Path(self.settings.retained_dir or self.home.root / "retained")
        folder = day_folder(root)
        for d in decoded:
            store_pixels(d.image, folder / uuid.uuid4().hex)

    def _decode(self, payload: Any, min_size: tuple[int, int]) -> list[Decoded]:
        if isinstance(payload, InferRequest):
            return v2_images(payload, self.limits, min_size)
        return v1_images(payload, self.limits, min_size)

    async def predict(
        self, batch: Batch, headers: dict[str, str] | None = None, response_headers: Any = None
    ) -> Scored:
        try:
            seen, answer = await self.forward(batch.payload)
        except BadImage:
            raise
        except Exception as e:
            ERRORS.labels("inference").inc()
            raise InferenceError(f"inference failed: {type(e).__name__}: {e}") from e
        # The model's path (decode, forward, scoring), for the rollout judge's latency check.
        latency_ms = round((time.perf_counter() - batch.started) * 1000, 2)
        observe(self.version, answer.probs, answer.flags, answer.in_distribution)
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        request_id, shadow = batch.request_id, batch.shadow  # not the batch: it holds the bytes
        self.recorder.submit(
            Pending(seen.pixels, seen.sizes,
                    lambda: self._records(answer, request_id, now, shadow, latency_ms))
        )  # fmt: skip
        return Scored(batch, answer)

    def _guard(
        self, logits: np.ndarray, embedding: np.ndarray
    ) -> tuple[np.ndarray, list[bool | None]]:
        """The guard's score of each image and whether it is in distribution (None: no guard)."""
        guard = self.artifact.guard
        if guard is None:
            return np.full(len(logits), np.nan), [None] * len(logits)
        scores = guard.scores(logits, embedding)
        return scores, [bool(v) for v in guard.admits(scores)]

    def _records(
        self, answer: Answer, request_id: str, now: str, shadow: bool, latency_ms: float
    ) -> list[dict[str, Any]]:
        """Each image's record for the log and the monitor, but for its statistics (the
        recorder adds them): embedding projections and the answer; never pixels."""
        records = []
        rows = zip(answer.probs, answer.flags, answer.projections, answer.ood_scores,
                   answer.in_distribution, strict=True)  # fmt: skip
        for row, flag, projected, ood_score, in_distribution in rows:
            top = int(row.argmax())
            record = {
                "time": now,
                "request_id": request_id,
                "model": self.name,
                "model_version": self.version,
                "latency_ms": latency_ms,
                **{
                    k: round(float(v), 5) for k, v in zip(PROJECTION_NAMES, projected, strict=False)
                },
                PREDICTION: CLASSES[top],
                "confidence": round(float(row[top]), 5),
                "melanoma": bool(flag),
                "in_distribution": in_distribution,
                "ood_score": None if np.isnan(ood_score) else round(float(ood_score), 4),
                **{f: round(float(p), 5) for f, p in zip(PROBABILITY_FIELDS, row, strict=True)},
            }
            if shadow:
                record["shadow"] = True
            records.append(record)
        return records

    async def postprocess(
        self, result: Any, headers: dict[str, str] | None = None, response_headers: Any = None
    ) -> dict[str, Any] | InferResponse:
        if not isinstance(result, Scored):
            return result  # explain's answer is complete already
        batch = result.batch
        LATENCY.labels("predict").observe(time.perf_counter() - batch.started)
        if batch.v2 is not None:
            return self.answers.v2(result.answer, batch.v2)
        answer = self.answers.v1(result.answer)
        if self.mirror is not None and batch.mirrored:
            assert isinstance(batch.payload, dict)  # preprocess mirrors v1 bodies alone
            self.mirror.offer(batch.payload, batch.request_id)
        return answer

    @property
    def platform(self) -> str:
        """What answers, for the v2 model metadata's ``platform``: the backend and the
        arithmetic of its graph (``onnxruntime:fp32``, ``onnxruntime-int8:int8``,
        ``torch-cuda-fp16:fp16``)."""
        return f"{self.backend.name}:{self.backend.precision}"

    def get_input_types(self) -> list[dict[str, Any]]:
        """The v2 model metadata's inputs: one BYTES tensor of encoded images (any name)."""
        return [{"name": "image", "datatype": "BYTES", "shape": [-1]}]

    def get_output_types(self) -> list[dict[str, Any]]:
        """The v2 model metadata's outputs: what the v2 answer holds."""
        return self.answers.output_types()

    async def explain(self, batch: Batch, headers: dict[str, str] | None = None) -> dict[str, Any]:
        """Grad-CAM of the top class of each image: heatmap and overlay as base64 PNG."""
        loop = asyncio.get_running_loop()
        answer = await loop.run_in_executor(self.pool, self._explain, batch.payload)
        LATENCY.labels("explain").observe(time.perf_counter() - batch.started)
        return answer

    def _explain(self, payload: Any) -> dict[str, Any]:
        seen = self._seen(payload)
        explained = self.backend.explain(seen.stacked())
        return self.answers.explanations(
            explained, self.artifact.probabilities(explained.logits), seen.boxes
        )

    def stop(self) -> None:
        if self.mirror is not None:
            self.mirror.close()
        if hasattr(self, "recorder"):  # loaded
            self.recorder.close()
        for sink in self.sinks:
            sink.close()
        self.pool.shutdown(wait=False)


class PlatformDataPlane(DataPlane):  # type: ignore[misc]  # kserve is untyped
    """KServe's data plane, whose v2 model metadata names what answers in ``platform`` (KServe
    leaves it empty; REST and gRPC) and the served version in ``versions`` (REST: KServe's gRPC
    servicer copies only name, platform, inputs and outputs)."""

    async def model_metadata(self, model_name: str) -> dict[str, Any]:
        metadata: dict[str, Any] = await super().model_metadata(model_name)
        model = self.get_model_from_registry(model_name)
        if isinstance(model, DermaOpsModel):
            metadata.update(platform=model.platform, versions=[str(model.version)])
        return metadata
