"""Settings of the predictor: flags of ``dermaops serve`` or ``DERMAOPS_SERVING_*`` env vars."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from dermaops.imaging import PIL_MAX_PIXELS, ImageLimits

ENV_PREFIX = "DERMAOPS_SERVING_"
# Resident bytes a request holds at its peak per byte of its body: the body, its JSON strings,
# the decoded image bytes and pixels. Measured 2.9-3.0 for 8 images of 25 MB, 40 MP each
# (`tests/integration/test_admission.py` keeps it true); the rest is margin.
BODY_PEAK = 3.5


class ServingSettings(BaseModel):
    """What to serve and how strictly."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    model_uri: str = Field(
        "", description="folder, file://, models:/NAME@ALIAS; empty: the local deployment"
    )
    model_version: str = Field("", description="version label (default: from the URI)")
    backend: Literal["auto", "onnx", "torch", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "int8"] = Field(
        "auto", description="ONNX graph: auto serves INT8 where the registration kept it"
    )
    compile: bool = Field(False, description="torch.compile the CUDA model")
    max_instances: int = Field(32, ge=1, description="images per request")
    max_image_bytes: int = Field(ImageLimits.max_bytes, gt=0)
    max_image_pixels: int = Field(ImageLimits.max_pixels, gt=0, le=PIL_MAX_PIXELS)
    max_batch: int = Field(0, ge=0, description="micro-batch size (0: 32 on CUDA, off on CPU)")
    max_wait_ms: float = Field(2.0, ge=0, description="longest wait to fill a micro-batch")
    top_k: int = Field(3, ge=1, le=7)
    inference_log: bool = Field(True, description="append image statistics and predictions")
    trace_log: bool = Field(
        False, description="KServe's two timing lines per request (kserve.trace, INFO)"
    )
    access_log: bool = Field(
        False,
        description="uvicorn's line per request (uvicorn.access, INFO): the request metrics "
        "count them, and the ingress or mesh logs access",
    )
    inference_log_dir: str = Field("", description="default: $DERMAOPS_HOME/inference")
    retain_images: bool = Field(
        False, description="keep each served image (pixels only, no metadata) for later review"
    )
    retained_dir: str = Field("", description="default: $DERMAOPS_HOME/retained")
    monitor_url: str = Field(
        "", description="also send each inference-log record to this monitor's /records"
    )
    shadow_url: str = Field(
        "",
        description="mirror answered v1 requests to this challenger predictor (a rollout's "
        "shadow stage; empty: none)",
    )
    shadow_share: float = Field(1.0, gt=0, le=1, description="part of requests mirrored")
    shadow_follows_rollout: bool = Field(
        False,
        description="mirror to shadow_url only while the monitor's rollout (monitor_url's "
        "/rollout) is in its shadow stage with this version as the stable one",
    )
    shadow_poll_s: float = Field(
        10.0, gt=0, description="seconds between two questions to the monitor's /rollout"
    )
    challenger: bool = Field(
        False,
        description="serve a rollout's shadow: requests that carry x-dermaops-shadow-of "
        "are logged as shadow answers (elsewhere the header is ignored: a client cannot hide its "
        "requests from drift and the estimates)",
    )
    workers: int = Field(0, ge=0, description="threads for decoding and CPU inference (0: cores)")
    max_body_bytes: int = Field(
        0, ge=0, description="largest request body (0: max_instances images as base64 JSON)"
    )
    max_in_flight: int = Field(
        0, ge=0, description="inference requests at once; more wait in the queue (0: 4 per thread)"
    )
    max_queue: int = Field(
        -1,
        ge=-1,
        description="requests waiting for a place; more get 503 (-1: 10 x max_in_flight, as "
        "Knative's queue-proxy; 0: no queue)",
    )
    queue_timeout_s: float = Field(
        0.0, ge=0, description="longest wait in the queue, then 503 (0: the request deadline)"
    )
    max_bytes_in_flight: int = Field(
        0, ge=0, description="body bytes handled at once; more get 503 (0: from the memory limit)"
    )
    request_timeout_s: float = Field(
        60.0, gt=0, description="an inference request unanswered after this gets 504"
    )

    def body_limit(self) -> int:
        """The largest body: the setting, else ``max_instances`` images at the image limit as
        base64 (4 characters per 3 bytes), with room for the JSON around them."""
        per_image = 4 * math.ceil(self.max_image_bytes / 3) + 1024
        return self.max_body_bytes or self.max_instances * per_image + 64 * 1024

    def bytes_in_flight_limit(self, memory_limit: int, resident: int) -> int:
        """Body bytes one replica handles at once: the setting, else what is left of nine tenths
        of ``memory_limit`` after the ``resident`` process, at ``BODY_PEAK`` bytes per body
        byte."""
        if self.max_bytes_in_flight:
            return self.max_bytes_in_flight
        return max(0, int((0.9 * memory_limit - resident) / BODY_PEAK))

    def in_flight_limit(self, threads: int) -> int:
        """Inference requests one replica takes at once: the setting, else 4 per thread."""
        return self.max_in_flight or 4 * threads

    def queue_limit(self, in_flight: int) -> int:
        """Requests that may wait for one of ``in_flight`` places: the setting, else ten times
        them (Knative's queue-proxy queues ten times the container concurrency)."""
        return 10 * in_flight if self.max_queue < 0 else self.max_queue

    def queue_wait_s(self) -> float:
        """The longest wait in the queue: the setting, never past the request deadline."""
        return min(self.queue_timeout_s or self.request_timeout_s, self.request_timeout_s)
