"""What the predictor tells the outside: Prometheus metrics and the inference log for drift.

Metrics live in prometheus_client's default registry, which KServe's ``/metrics`` serves next
to its own request histograms. The inference log (:mod:`dermaops.inference_log`)
holds the same answers per image, for drift.
"""

from __future__ import annotations

import errno
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from dermaops.labels import CLASSES

PREDICTIONS = Counter(
    "dermaops_predictions", "Images classified, by predicted class.", ["model_version", "dx"]
)
CONFIDENCE = Histogram(
    "dermaops_confidence",
    "Probability of the predicted class.",
    ["model_version"],
    buckets=(0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0),
)
MELANOMA_FLAGS = Counter(
    "dermaops_melanoma_flags", "Images at or above the melanoma threshold.", ["model_version"]
)
INPUT_STAT = Histogram(
    "dermaops_input_image_stat",
    "Per-image colour statistics of what the model sees (0..1).",
    ["stat"],
    buckets=tuple(round(0.05 * i, 2) for i in range(1, 21)),
)
INPUT_SIZE = Histogram(
    "dermaops_input_image_pixels",
    "Width x height of the images as sent.",
    buckets=(1e4, 1e5, 2.7e5, 5e5, 1e6, 4e6, 1.6e7, 4e7),
)
LATENCY = Histogram(
    "dermaops_request_duration_seconds",
    "From the decoded request to the answer (decode, stem, forward, formatting).",
    ["verb"],
    buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0),
)
OUT_OF_DISTRIBUTION = Counter(
    "dermaops_out_of_distribution",
    "Images the out-of-distribution guard judged unlike the model's training images (answered "
    "with in_distribution false, the page showing a warning instead of a diagnosis), by model "
    "version.",
    ["model_version"],
)
THREADS_METRIC = "dermaops_serving_threads"  # read back by `bench serve`
THREADS = Gauge(
    THREADS_METRIC,
    "Threads for decoding and the CPU forward pass, by where the number came from: setting, "
    "cgroup-v2 or cgroup-v1 (the container's CPU limit), cores.",
    ["source"],
)
ERRORS = Counter("dermaops_request_errors", "Rejected or failed requests, by reason.", ["reason"])
RESPONSES = Counter(
    "dermaops_inference_responses",
    "Answers to inference requests (v1 predict and explain, v2 infer), refusals included, by "
    "model version and status class (2xx, 4xx, 5xx): a rollout's judge reads a canary's 5xx "
    "share from it.",
    ["model_version", "code"],
)
STATUS_CLASSES = ("2xx", "4xx", "5xx")
REFUSED = Counter(
    "dermaops_requests_refused",
    "Inference requests refused before the model saw them, by reason: body_too_large (413), "
    "overloaded (503, Retry-After: the queue is full), queue_timeout (503, Retry-After: no place "
    "within the queue's wait), memory (503, Retry-After: too many body bytes), deadline (504).",
    ["reason"],
)
IN_FLIGHT = Gauge("dermaops_requests_in_flight", "Inference requests being handled now.")
QUEUED = Gauge(
    "dermaops_requests_queued", "Inference requests waiting for a place (their bodies unread)."
)
QUEUE_WAIT = Histogram(
    "dermaops_queue_wait_seconds",
    "How long inference requests waited for a place, refused ones included.",
    buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
BYTES_IN_FLIGHT = Gauge(
    "dermaops_request_bytes_in_flight", "Body bytes of the inference requests being handled now."
)
LOG_FAILURES = Counter(
    "dermaops_inference_log_failures",
    "Inference-log records dropped because the log could not be written (the answers went "
    "out), by errno name; backlog: dropped before writing, the recorder's queue full.",
    ["reason"],
)
RECORDS_PENDING = Gauge(
    "dermaops_records_pending",
    "Answered images whose statistics and inference-log records are not yet made.",
)
MODEL_INFO = Gauge(
    "dermaops_model_info",
    "The model being served (value 1).",
    ["name", "version", "arch", "backend"],
)
UNIT_STATS = ("brightness", "contrast", "saturation", "hue_spread")


def observe(
    version: str,
    probs: Any,
    flags: Any,
    in_distribution: list[bool | None],
) -> None:
    """Count one answered batch: predicted classes, confidences, melanoma flags, and the images
    the guard refused."""
    # inc(0) too: the series exists from the first batch, so rate() has data
    OUT_OF_DISTRIBUTION.labels(version).inc(sum(admitted is False for admitted in in_distribution))
    for row, flagged in zip(probs, flags, strict=True):
        top = int(row.argmax())
        PREDICTIONS.labels(version, CLASSES[top]).inc()
        CONFIDENCE.labels(version).observe(float(row[top]))
        if flagged:
            MELANOMA_FLAGS.labels(version).inc()


def observe_inputs(stats: list[dict[str, float]]) -> None:
    """The input histograms of one batch's statistics (made after the answer)."""
    for stat in stats:
        for name in UNIT_STATS:
            INPUT_STAT.labels(name).observe(stat[name])
        INPUT_SIZE.observe(stat["width"] * stat["height"])


REFUSED_REASONS = ("body_too_large", "overloaded", "queue_timeout", "memory", "deadline")
# errno names of failed writes, and "backlog": records dropped before writing, the recorder's
# queue full (serving/records.py)
LOG_FAILURE_REASONS = ("ENOSPC", "EDQUOT", "EFBIG", "EROFS", "EACCES", "EIO", "other", "backlog")
for _reason in REFUSED_REASONS:  # every series exists from the start, at 0, so rate() has data
    REFUSED.labels(_reason)
for _reason in LOG_FAILURE_REASONS:
    LOG_FAILURES.labels(_reason)


def count_backlog(images: int) -> None:
    """Records of ``images`` answered images dropped: the recorder's queue was full."""
    LOG_FAILURES.labels("backlog").inc(images)


def count_log_failure(error: OSError) -> None:
    """One inference-log record dropped: ENOSPC (disk full), EFBIG (file-size limit), EROFS..."""
    name = errno.errorcode.get(error.errno or 0, "other")
    LOG_FAILURES.labels(name if name in LOG_FAILURE_REASONS else "other").inc()
