"""The predictor's v1 protocol (KServe's ``:predict`` and ``:explain``) as types: one owner for
both ends of the wire.

The predictor builds its answers through these models (so an answer that does not fit them is
its own bug, found where it is made), publishes their JSON schemas in its OpenAPI document, and
every client reads answers back through them (:mod:`dermaops.client`). The request body is
built in one place, :func:`request_body`.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dermaops.errors import DermaOpsError

M = TypeVar("M", bound="_Wire")
SHAPE = '{"instances": [{"image_bytes": {"b64": "<base64 JPEG or PNG>"}}]}'
REQUEST_ID_HEADER = "x-request-id"  # the id each inference-log record carries
# A request the stable predictor mirrored to the challenger during a rollout's shadow stage;
# its value is the stable version. A predictor started as the challenger answers it, logs it
# marked ``shadow`` and does not mirror it again; any other predictor ignores the header.
SHADOW_HEADER = "x-dermaops-shadow-of"


class ProtocolError(DermaOpsError):
    """An answer that is not what the v1 protocol says (a predictor of another version, or not
    a DermaOps predictor at all)."""


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ImageBytes(_Wire):
    b64: str = Field(description="The encoded image (JPEG or PNG), base64.")


class Instance(_Wire):
    image_bytes: ImageBytes


class PredictRequest(_Wire):
    """The body of ``:predict`` and ``:explain``: one or more encoded images."""

    instances: list[Instance] = Field(min_length=1)


class TopClass(_Wire):
    dx: str = Field(description="HAM10000's code: akiec, bcc, bkl, df, mel, nv or vasc.")
    name: str = Field(description="The class in words.")
    probability: float = Field(ge=0, le=1)


class MelanomaFlag(_Wire):
    flag: bool = Field(description="The calibrated probability reached the operating threshold.")
    probability: float = Field(ge=0, le=1)
    threshold: float = Field(
        ge=0, description="Set on validation images for sensitivity; above 1: never flagged."
    )


class OodVerdict(_Wire):
    """The out-of-distribution guard's reading of one image."""

    score: float = Field(description="Distance from the training images (higher: further).")
    threshold: float = Field(description="Scores above it are out of distribution.")
    keep: float = Field(gt=0, le=1, description="The share of validation images within it.")
    method: str


class Prediction(_Wire):
    """One image's answer."""

    in_distribution: bool | None = Field(
        default=None, description="The guard's verdict; null when the model has no guard."
    )
    ood: OodVerdict | None = None
    unchecked: str | None = Field(
        default=None, description="Why in_distribution is null (the model has no guard)."
    )
    probabilities: dict[str, float] = Field(description="Calibrated, one per class, sum 1.")
    top_k: list[TopClass] = Field(min_length=1, description="Best first.")
    melanoma: MelanomaFlag


class PredictAnswer(_Wire):
    """The answer of ``:predict``: one prediction per instance, in order."""

    predictions: list[Prediction]
    model_name: str
    model_version: str


class Explanation(_Wire):
    """Grad-CAM of the top class of one image."""

    dx: str
    name: str
    probability: float = Field(ge=0, le=1)
    method: str
    heatmap_png_b64: str = Field(description="Grayscale PNG, 0..255, over the square seen.")
    overlay_png_b64: str
    seen_box: tuple[float, float, float, float] = Field(
        description="The square the model saw: left, top, right, bottom, in fractions of the "
        "upright image."
    )


class ExplainAnswer(_Wire):
    """The answer of ``:explain``: one explanation per instance, in order."""

    explanations: list[Explanation]
    model_name: str
    model_version: str


def request_body(images: Sequence[bytes]) -> bytes:
    """The JSON body of ``:predict`` (and ``:explain``) for encoded images, as sent: the one
    place a v1 request is built."""
    parts = (b'{"image_bytes":{"b64":"' + base64.b64encode(i) + b'"}}' for i in images)
    return b'{"instances":[' + b",".join(parts) + b"]}"


def read_predict(answer: bytes | str | dict[str, Any]) -> PredictAnswer:
    """A ``:predict`` answer, checked against the protocol.

    Raises:
        ProtocolError: it is not one, naming the first field that is wrong.
    """
    return _read(PredictAnswer, answer)


def read_explain(answer: bytes | str | dict[str, Any]) -> ExplainAnswer:
    """An ``:explain`` answer, checked against the protocol.

    Raises:
        ProtocolError: it is not one.
    """
    return _read(ExplainAnswer, answer)


def _read(model: type[M], answer: bytes | str | dict[str, Any]) -> M:
    try:
        if isinstance(answer, dict):
            return model.model_validate(answer)
        return model.model_validate_json(answer)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "the body"
        raise ProtocolError(
            f"not a v1 {model.__name__} ({e.error_count()} problem(s); {where}: {first['msg']})"
        ) from e
