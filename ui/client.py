"""What the UI asks the predictor, and how it words the answer; no Streamlit here."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from dermaops.errors import DermaOpsError
from dermaops.labels import CLASSES, FULL_NAMES

DISCLAIMER = (
    "Decision support only, not a diagnosis. A clinician examines the patient and decides; "
    "the model has seen only dermoscopic images of the seven HAM10000 lesion types."
)
# Headers an authenticating proxy (oauth2-proxy, Istio, an Ingress) sets to the signed-in user.
USER_HEADERS = ("x-forwarded-user", "x-auth-request-user", "x-remote-user", "remote-user")


class PredictorError(DermaOpsError):
    """The predictor could not be reached or refused the image; the message says which."""


@dataclass(frozen=True)
class Answer:
    probabilities: dict[str, float]
    top: list[tuple[str, str, float]]  # (code, full name, probability), best first
    melanoma_flag: bool
    melanoma_probability: float
    threshold: float
    model_name: str
    model_version: str
    overlay_png: bytes | None  # Grad-CAM of the top class over the image
    explained: str  # the class Grad-CAM explains


def classify(url: str, image: bytes, model: str = "dermaops", timeout: float = 60) -> Answer:
    """Predict and explain one image.

    Raises:
        PredictorError: unreachable predictor, or a refusal (with the predictor's reason).
    """
    body = {"instances": [{"image_bytes": {"b64": base64.b64encode(image).decode()}}]}
    base = url.rstrip("/")
    predicted = _post(f"{base}/v1/models/{model}:predict", body, timeout)
    explained = _post(f"{base}/v1/models/{model}:explain", body, timeout)
    (p,) = predicted["predictions"]
    (e,) = explained["explanations"]
    return Answer(
        probabilities={c: float(p["probabilities"][c]) for c in CLASSES},
        top=[(t["dx"], FULL_NAMES[t["dx"]], float(t["probability"])) for t in p["top_k"]],
        melanoma_flag=bool(p["melanoma"]["flag"]),
        melanoma_probability=float(p["melanoma"]["probability"]),
        threshold=float(p["melanoma"]["threshold"]),
        model_name=str(predicted["model_name"]),
        model_version=str(predicted["model_version"]),
        overlay_png=base64.b64decode(e["overlay_png_b64"]) if e.get("overlay_png_b64") else None,
        explained=str(e["dx"]),
    )


def _post(url: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
    try:
        response = httpx.post(url, json=body, timeout=timeout)
    except httpx.HTTPError as e:
        raise PredictorError(
            f"the predictor at {url} cannot be reached ({type(e).__name__})"
        ) from e
    if response.status_code != 200:
        try:
            reason = response.json().get("error", response.text)
        except ValueError:
            reason = response.text
        raise PredictorError(f"the predictor refused the image ({response.status_code}): {reason}")
    answer: dict[str, Any] = response.json()
    return answer


def operating_point(answer: Answer) -> str:
    """The melanoma flag in plain words."""
    share = f"{answer.melanoma_probability:.0%}"
    rule = (
        f"The model flags melanoma when its calibrated probability reaches "
        f"{answer.threshold:.0%}, a threshold set on validation images so that most melanomas "
        f"(about 85%) are flagged, at the price of also flagging some benign lesions."
    )
    if answer.melanoma_flag:
        return f"Melanoma flag: probability {share}, at or above the threshold. {rule}"
    return f"No melanoma flag: probability {share}, below the threshold. {rule}"


def signed_in_user(headers: Mapping[str, str]) -> str | None:
    """The user an authenticating proxy vouches for, if any."""
    lowered = {k.lower(): v for k, v in headers.items()}
    return next((lowered[h].strip() for h in USER_HEADERS if lowered.get(h, "").strip()), None)
