"""The one client of the predictor: v1 predict and explain, v2 infer and readiness, with
timeouts and retries where the predictor asks for them.

Used by the clinician page, ``dermaops predict`` and ``traffic``, and the smoke test; the
benchmarks drive load through their own connection pools but build their bodies with
:func:`dermaops.v1.request_body`. A 503 with ``Retry-After`` (the predictor's queue is full, or
it is loading) is retried after the time it names, at most ``retries`` times and never past
``max_retry_wait`` seconds in all; every other refusal is a :class:`PredictorError` that quotes
the predictor's reason.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import httpx

from dermaops.errors import DermaOpsError
from dermaops.v1 import ExplainAnswer, PredictAnswer, read_explain, read_predict, request_body

_JSON = {"content-type": "application/json"}


class PredictorError(DermaOpsError):
    """The predictor could not be reached (``status`` 0) or refused a request (its HTTP
    status); the message says which and why."""

    def __init__(self, message: str, status: int = 0):
        super().__init__(message)
        self.status = status


class PredictorClient:
    """A predictor at ``url`` serving ``model``; a context manager (one connection pool)."""

    def __init__(
        self,
        url: str,
        model: str = "dermaops",
        timeout: float = 60,
        retries: int = 3,
        max_retry_wait: float = 30,
    ):
        self.url, self.model = url.rstrip("/"), model
        self.retries, self.max_retry_wait = retries, max_retry_wait
        self._http = httpx.Client(timeout=timeout)

    def __enter__(self) -> PredictorClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def predict(self, images: Sequence[bytes]) -> PredictAnswer:
        """Classify encoded images (JPEG or PNG), one prediction each, in order.

        Raises:
            PredictorError: unreachable, or a refusal (with the predictor's reason).
            ProtocolError: the answer is not a v1 predict answer.
        """
        response = self._post(f"/v1/models/{self.model}:predict", request_body(images))
        return read_predict(response.content)

    def explain(self, images: Sequence[bytes]) -> ExplainAnswer | None:
        """Grad-CAM of each image's top class; None where the predictor cannot explain this
        model (501: a head the CPU predictor has no class maps for).

        Raises:
            PredictorError: unreachable, or any other refusal.
            ProtocolError: the answer is not a v1 explain answer.
        """
        body = request_body(images)
        response = self._post(f"/v1/models/{self.model}:explain", body, unexplained_ok=True)
        return None if response.status_code == 501 else read_explain(response.content)

    def infer(self, images: Sequence[bytes]) -> dict[str, dict[str, Any]]:
        """The v2 (Open Inference Protocol) answer for images sent as one BYTES tensor of
        base64 strings: its outputs by name.

        Raises:
            PredictorError: unreachable, refused, or an answer without outputs.
        """
        data = [base64.b64encode(i).decode() for i in images]
        tensor = {"name": "image", "shape": [len(data)], "datatype": "BYTES", "data": data}
        response = self._post(f"/v2/models/{self.model}/infer",
                              json.dumps({"inputs": [tensor]}).encode())  # fmt: skip
        try:
            return {o["name"]: o for o in response.json()["outputs"]}
        except (ValueError, KeyError, TypeError) as e:
            raise PredictorError(f"{self.url}: a v2 answer without outputs: {e}") from e

    def _post(self, path: str, body: bytes, unexplained_ok: bool = False) -> httpx.Response:
        url, waited = f"{self.url}{path}", 0.0
        for attempt in range(self.retries + 1):
            try:
                response = self._http.post(url, content=body, headers=_JSON)
            except httpx.HTTPError as e:
                raise PredictorError(
                    f"the predictor at {self.url} cannot be reached ({type(e).__name__}: {e})"
                ) from e
            pause = _retry_after(response)
            if pause is None or attempt == self.retries or waited + pause > self.max_retry_wait:
                break
            time.sleep(pause)
            waited += pause
        if response.status_code == 200 or (response.status_code == 501 and unexplained_ok):
            return response
        raise PredictorError(
            f"the predictor refused the request ({response.status_code}): {_reason(response)}",
            response.status_code,
        )


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds the predictor asked to wait before retrying; None: not a retryable answer."""
    if response.status_code != 503:
        return None
    try:
        return max(0.0, float(response.headers.get("retry-after", "")))
    except ValueError:  # absent, or an HTTP date: the predictor sends seconds
        return None


def _reason(response: httpx.Response) -> str:
    try:
        found = response.json()
    except ValueError:
        return response.text[:500]
    return str(found.get("error", found)) if isinstance(found, dict) else response.text[:500]
