"""Requests to images: the v1 and v2 shapes, base64, and the image limits, strictly.

Every problem is an ``InvalidInput`` (HTTP 400) that says where and what to fix; messages
never quote the image bytes.
"""

from __future__ import annotations

import base64
import binascii
import math
from dataclasses import dataclass
from typing import Any

from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferInput, InferRequest

from dermaops.errors import ImageError, ImageTooLargeError, NotAnImageError, TruncatedImageError
from dermaops.imaging import Decoded, ImageLimits, decode
from dermaops.serving.binary import BinaryFormatError, bytes_elements
from dermaops.v1 import SHAPE as V1_SHAPE


@dataclass(frozen=True)
class RequestLimits:
    """What one request may carry."""

    max_instances: int = 32
    image: ImageLimits = ImageLimits()


class BadImage(InvalidInput):  # type: ignore[misc]
    """A request the predictor cannot use; ``code`` labels the error metric."""

    def __init__(self, message: str, code: str):
        super().__init__(message)
        self.code = code


def v1_images(payload: Any, limits: RequestLimits, min_size: tuple[int, int]) -> list[Decoded]:
    """Images of a v1 body: instances of ``{"image_bytes": {"b64": ...}}`` (or ``{"b64": ...}``)."""
    if not isinstance(payload, dict) or "instances" not in payload:
        raise BadImage(f"expected a JSON object like {V1_SHAPE}", "shape")
    instances = payload["instances"]
    if not isinstance(instances, list) or not instances:
        raise BadImage(f'"instances" must be a non-empty list, like {V1_SHAPE}', "shape")
    _check_count(len(instances), limits)
    images = []
    for i, item in enumerate(instances):
        where = f"instances[{i}]"
        images.append(_image(_b64(_v1_field(item, i), where, limits), where, limits, min_size))
    return images


def v2_images(
    request: InferRequest, limits: RequestLimits, min_size: tuple[int, int]
) -> list[Decoded]:
    """Images of a v2 request: one BYTES input, each element an encoded image.

    The elements come in any of the protocol's forms: base64 strings in JSON, ``bytes_contents``
    over gRPC, or length-prefixed in the request's raw contents (gRPC's ``raw_input_contents``,
    which Triton's client always sends; REST's binary extension is turned into JSON before).
    """
    tensors = [t for t in request.inputs if t.datatype == "BYTES"]
    if len(tensors) != 1:
        raise BadImage(
            f"expected one BYTES input of encoded images, got {len(tensors)} "
            f"(inputs: {', '.join(f'{t.name}:{t.datatype}' for t in request.inputs) or 'none'})",
            "shape",
        )
    tensor = tensors[0]
    data = _elements(tensor)
    if not data:
        raise BadImage(f"input {tensor.name!r} holds no images", "shape")
    declared = math.prod(tensor.shape or [0])
    if declared != len(data):
        raise BadImage(
            f"input {tensor.name!r} has shape {list(tensor.shape)} ({declared} elements) but "
            f"{len(data)} images; send shape [{len(data)}]",
            "shape",
        )
    _check_count(len(data), limits)
    images = []
    for i, element in enumerate(data):
        where = f"{tensor.name}[{i}]"
        raw = element if isinstance(element, bytes) else _b64(element, where, limits)
        images.append(_image(raw, where, limits, min_size))
    return images


def _elements(tensor: InferInput) -> list[Any]:
    """A BYTES tensor's elements: bytes from raw contents or gRPC, strings from JSON."""
    raw = getattr(tensor, "_raw_data", None)  # where KServe keeps gRPC's raw_input_contents
    if raw is not None:
        try:
            return list(bytes_elements(raw, tensor.name))
        except BinaryFormatError as e:
            raise BadImage(str(e), "shape") from e
    return _flat(tensor.data if isinstance(tensor.data, list) else [tensor.data])


def _flat(data: list[Any]) -> list[Any]:
    """A tensor's elements in row-major order (JSON may nest them by the shape)."""
    return [x for item in data for x in (_flat(item) if isinstance(item, list) else [item])]


def _v1_field(item: Any, i: int) -> Any:
    if isinstance(item, dict) and isinstance(item.get("image_bytes"), dict):
        item = item["image_bytes"]
    if not isinstance(item, dict) or "b64" not in item:
        raise BadImage(f'instances[{i}] must look like {{"image_bytes": {{"b64": ...}}}}', "shape")
    return item["b64"]


def _check_count(count: int, limits: RequestLimits) -> None:
    if count > limits.max_instances:
        raise BadImage(
            f"{count} images in one request; send at most {limits.max_instances} per request",
            "too_many_instances",
        )


def _b64(value: Any, where: str, limits: RequestLimits) -> bytes:
    if not isinstance(value, str) or not value:
        raise BadImage(f"{where}: b64 must be a non-empty base64 string", "bad_base64")
    if len(value) > (limits.image.max_bytes + 2) // 3 * 4:  # checked before decoding base64
        raise BadImage(
            f"{where}: the image is over {limits.image.max_bytes} bytes; send a smaller file",
            "image_too_large",
        )
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as e:
        raise BadImage(f"{where}: not valid base64 ({e})", "bad_base64") from e


def _image(data: bytes, where: str, limits: RequestLimits, min_size: tuple[int, int]) -> Decoded:
    if not data:
        raise BadImage(f"{where}: the image is empty", "empty_image")
    try:
        return decode(data, limits=limits.image, min_size=min_size)
    except ImageTooLargeError as e:
        raise BadImage(f"{where}: {e}", "image_too_large") from e
    except TruncatedImageError as e:
        raise BadImage(f"{where}: {e}; send the whole file", "truncated_image") from e
    except NotAnImageError as e:
        raise BadImage(f"{where}: {e}; send a JPEG or PNG", "not_an_image") from e
    except ImageError as e:
        raise BadImage(f"{where}: {e}", "unreadable_image") from e
