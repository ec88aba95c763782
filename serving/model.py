"""The KServe model: load, then preprocess -> predict -> postprocess, and explain (Grad-CAM).

Preprocess only reads what the request is; predict decodes its images on the worker thread
that runs the forward pass, so that a request costs one hop off the event loop, not two
(each hop wakes a worker thread, then the loop)."""

from __future__ import annotations

import asyncio
import base64
import io
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
from kserve.errors import InferenceError, InvalidInput
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse
from PIL import Image

from dermaops.cpus import cpu_budget
from dermaops.data.features import PREDICTION
from dermaops.data.privacy import day_folder, store_pixels
from dermaops.errors import ConfigError
from dermaops.imaging import Decoded, ImageLimits
from dermaops.inference_log import PROBABILITY_FIELDS, InferenceLog
from dermaops.labels import CLASSES, FULL_NAMES
from dermaops.model.artifact import MEL
from dermaops.model.heatmap import overlay
from dermaops.model.projection import PROJECTION_NAMES
from dermaops.model.uri import load_model
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
from dermaops.v1 import (
    REQUEST_ID_HEADER,
    SHADOW_HEADER,
    ExplainAnswer,
    Explanation,
    MelanomaFlag,
    OodVerdict,
    PredictAnswer,
    Prediction,
    TopClass,
)

log = logging.getLogger(__name__)

UNGUARDED = (
    "not checked: this model was served without an out-of-distribution guard (guard.npz, "
    "fitted by dermaops evaluate); it answers any image, dermoscopy or not"
)

Box = tuple[float, float, float, float]  # left, top, right, bottom as fractions of an image


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


class Answer(NamedTuple):
    """What the model says of a batch: calibrated probabilities, melanoma flags, embedding
    projections (N, K; K is 0 without a projection), the guard's scores (NaN without a guard)
    and verdicts (None without a guard)."""

    probs: np.ndarray
    flags: np.ndarray
    projections: np.ndarray
    ood_scores: np.ndarray
    in_distribution: list[bool | None]


@dataclass(frozen=True)
class Scored:
    """A batch with its calibrated probabilities, melanoma flags, embedding projections and
    the out-of-distribution guard's verdicts."""

    batch: Batch
    probs: np.ndarray
    flags: np.ndarray
    projections: np.ndarray  # (N, K); K is 0 when the model has no projection
    ood_scores: np.ndarray  # (N,); NaN when the model has no guard
    in_distribution: list[bool | None]  # None when the model has no guard


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
        return Scored(batch, *answer)

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
        LATENCY.labels("predict").observe(time.perf_counter() - result.batch.started)
        if result.batch.v2 is not None:
            return self._v2_response(result)
        rows = zip(result.probs, result.flags, result.ood_scores, result.in_distribution,
                   strict=True)  # fmt: skip
        answer = PredictAnswer(
            predictions=[self._describe(*row) for row in rows],
            model_name=self.name,
            model_version=self.version,
        ).model_dump()
        if self.mirror is not None and result.batch.mirrored:
            assert isinstance(result.batch.payload, dict)  # preprocess mirrors v1 bodies alone
            self.mirror.offer(result.batch.payload, result.batch.request_id)
        return answer

    def _describe(
        self, row: np.ndarray, flag: bool, ood_score: float, in_distribution: bool | None
    ) -> Prediction:
        exact = row.tolist()  # seven numbers: Python's sort, not NumPy's (a tenth of a ms)
        order = sorted(range(len(exact)), key=exact.__getitem__, reverse=True)
        probs = [round(p, 6) for p in exact]
        return Prediction(
            in_distribution=in_distribution,
            ood=self._ood(ood_score),
            unchecked=None if self.artifact.guard is not None else UNGUARDED,
            probabilities=dict(zip(CLASSES, probs, strict=True)),
            top_k=[
                TopClass(dx=CLASSES[i], name=FULL_NAMES[CLASSES[i]], probability=probs[i])
                for i in order[: self.settings.top_k]
            ],
            melanoma=MelanomaFlag(
                flag=bool(flag),
                probability=probs[MEL],
                threshold=round(self.artifact.melanoma_threshold, 6),
            ),
        )

    def _ood(self, score: float) -> OodVerdict | None:
        """The guard's score, threshold and method (None: the model has no guard)."""
        guard = self.artifact.guard
        if guard is None:
            return None
        return OodVerdict(
            score=round(float(score), 4),
            threshold=round(guard.threshold, 4),
            keep=guard.keep,
            method=guard.method,
        )

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
        """The v2 model metadata's outputs: what :meth:`_v2_response` answers with."""
        types = [("probabilities", "FP32", [-1, len(CLASSES)]), ("label", "BYTES", [-1]),
                 ("melanoma", "BOOL", [-1])]  # fmt: skip
        if self.artifact.guard is not None:
            types += [("in_distribution", "BOOL", [-1]), ("ood_score", "FP32", [-1])]
        return [{"name": n, "datatype": d, "shape": shape} for n, d, shape in types]

    def _v2_response(self, result: Scored) -> InferResponse:
        n = len(result.probs)
        labels = [CLASSES[int(i)] for i in result.probs.argmax(axis=1)]
        outputs = [
            InferOutput(
                "probabilities", [n, len(CLASSES)], "FP32", result.probs.astype(np.float32)
            ),
            InferOutput("label", [n], "BYTES", labels),
            InferOutput("melanoma", [n], "BOOL", result.flags.tolist()),
        ]
        guard = self.artifact.guard
        parameters: dict[str, Any] = {
            "classes": ",".join(CLASSES),
            "melanoma_threshold": self.artifact.melanoma_threshold,
        }
        if guard is not None:
            outputs += [
                InferOutput("in_distribution", [n], "BOOL", list(result.in_distribution)),
                InferOutput("ood_score", [n], "FP32", result.ood_scores.astype(np.float32)),
            ]
            parameters |= {"ood_threshold": guard.threshold, "ood_method": guard.method}
        request = result.batch.v2
        assert request is not None
        outputs = _requested(outputs, request)
        return InferResponse(
            response_id=request.id or "",
            model_name=self.name,
            model_version=self.version,
            infer_outputs=_raw(outputs) if request.from_grpc else outputs,
            parameters=_grpc_parameters(parameters) if request.from_grpc else parameters,
        )

    async def explain(self, batch: Batch, headers: dict[str, str] | None = None) -> dict[str, Any]:
        """Grad-CAM of the top class of each image: heatmap and overlay as base64 PNG."""
        loop = asyncio.get_running_loop()
        answer = await loop.run_in_executor(self.pool, self._explain, batch.payload)
        LATENCY.labels("explain").observe(time.perf_counter() - batch.started)
        return answer

    def _explain(self, payload: Any) -> dict[str, Any]:
        seen = self._seen(payload)
        explained = self.backend.explain(seen.stacked())
        probs = self.artifact.probabilities(explained.logits)
        top = [int(i) for i in probs.argmax(axis=1)]
        return ExplainAnswer(
            explanations=[
                Explanation(
                    dx=CLASSES[c],
                    name=FULL_NAMES[CLASSES[c]],
                    probability=round(float(probs[i, c]), 6),
                    method="gradcam",
                    heatmap_png_b64=_png((explained.heatmaps[i] * 255).astype(np.uint8)),
                    overlay_png_b64=_png(overlay(explained.images[i], explained.heatmaps[i])),
                    seen_box=_rounded(seen.boxes[i]),
                )
                for i, c in enumerate(top)
            ],
            model_name=self.name,
            model_version=self.version,
        ).model_dump()

    def stop(self) -> None:
        if self.mirror is not None:
            self.mirror.close()
        if hasattr(self, "recorder"):  # loaded
            self.recorder.close()
        for sink in self.sinks:
            sink.close()
        self.pool.shutdown(wait=False)


def _requested(outputs: list[InferOutput], request: InferRequest) -> list[InferOutput]:
    """The outputs a v2 request names, in its order; all of them when it names none."""
    names = [o.name for o in request.request_outputs or []]
    if not names:
        return outputs
    by_name = {o.name: o for o in outputs}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise InvalidInput(
            f"unknown output(s) {', '.join(unknown)}; this model has {', '.join(by_name)}"
        )
    return [by_name[n] for n in names]


def _raw(outputs: list[InferOutput]) -> list[InferOutput]:
    """Every output as raw bytes, the way Triton's server answers over gRPC.

    KServe's gRPC encoder puts NumPy outputs in ``raw_output_contents`` and lists in
    ``contents``; clients find raw outputs by position, so a reply that mixes the two is read
    wrongly. All raw is the one form every OIP client reads.
    """
    for output in outputs:
        output.set_data_from_numpy(output.as_numpy(), binary_data=True)
        output.parameters = None  # binary_data_size is REST's; gRPC carries each length itself
    return outputs


def _grpc_parameters(parameters: dict[str, Any]) -> dict[str, Any]:
    """Numbers as text: KServe's gRPC ``InferParameter`` has no double (only bool, int64 and
    string), and a float parameter fails the whole answer."""
    return {k: repr(float(v)) if isinstance(v, float) else v for k, v in parameters.items()}


def _rounded(box: Box) -> Box:
    left, top, right, bottom = (round(f, 6) for f in box)
    return left, top, right, bottom


def _png(pixels: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


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
