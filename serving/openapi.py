"""The predictor's OpenAPI document declares the v1 protocol's bodies.

KServe's v1 routes take a raw request and answer an untyped dict, so its ``/openapi.json`` says
nothing of what ``:predict`` and ``:explain`` take and give. The types of :mod:`dermaops.v1`,
which build the answers, are published there: a client generated from the document, or a
fuzzer reading it, sees the real contract.
"""

from __future__ import annotations

from fastapi import FastAPI

from dermaops.openapi import Bodies, publish
from dermaops.v1 import ExplainAnswer, PredictAnswer, PredictRequest

V1 = {
    ("post", "/v1/models/{model_name}:predict"): Bodies(
        PredictRequest, PredictAnswer, "One prediction per instance, in order."
    ),
    ("post", "/v1/models/{model_name}:explain"): Bodies(
        PredictRequest, ExplainAnswer, "One explanation per instance, in order."
    ),
}


def publish_v1(app: FastAPI) -> None:
    """Declare the v1 request and answers in ``app``'s OpenAPI document."""
    publish(app, V1)
