"""What the UI asks the predictor, and how it words the answer; no Streamlit here."""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from PIL import Image

from dermaops.client import PredictorClient
from dermaops.imaging import ImageLimits, decode, to_array
from dermaops.labels import CLASSES, FULL_NAMES
from dermaops.model.heatmap import overlay, resize_bilinear
from dermaops.v1 import OodVerdict

DISCLAIMER = (
    "Decision support only, not a diagnosis. A clinician examines the patient and decides; "
    "the model has seen only dermoscopic images of the seven HAM10000 lesion types."
)
# Headers an authenticating proxy (oauth2-proxy, Istio, an Ingress) sets to the signed-in user.
USER_HEADERS = ("x-forwarded-user", "x-auth-request-user", "x-remote-user", "remote-user")


@dataclass(frozen=True)
class Answer:
    probabilities: dict[str, float]
    top: list[tuple[str, str, float]]  # (code, full name, probability), best first
    melanoma_flag: bool
    melanoma_probability: float
    threshold: float
    model_name: str
    model_version: str
    heatmap: np.ndarray | None  # Grad-CAM of the top class, (S, S) in 0..1, over the square seen
    seen_box: tuple[float, float, float, float]  # that square, in fractions of the upright image
    explained: str  # the class Grad-CAM explains
    in_distribution: bool | None = None  # the guard's verdict; None: the model has no guard
    ood: OodVerdict | None = None  # its score, threshold and method


def classify(url: str, image: bytes, model: str = "dermaops", timeout: float = 60) -> Answer:
    """Predict and explain one image; a predictor that cannot explain this model (501: a head
    the CPU predictor has no class maps for) gives an answer without a heatmap.

    Raises:
        PredictorError: unreachable predictor, or a refusal (with the predictor's reason).
        ProtocolError: an answer that is not the v1 protocol's.
    """
    with PredictorClient(url, model, timeout) as client:
        predicted = client.predict([image])
        explained = client.explain([image])
    (p,) = predicted.predictions
    e = explained.explanations[0] if explained else None
    return Answer(
        probabilities={c: p.probabilities[c] for c in CLASSES},
        top=[(t.dx, FULL_NAMES[t.dx], t.probability) for t in p.top_k],
        melanoma_flag=p.melanoma.flag,
        melanoma_probability=p.melanoma.probability,
        threshold=p.melanoma.threshold,
        model_name=predicted.model_name,
        model_version=predicted.model_version,
        heatmap=_heatmap(e.heatmap_png_b64) if e else None,
        seen_box=e.seen_box if e else (0.0, 0.0, 1.0, 1.0),
        explained=e.dx if e else p.top_k[0].dx,
        in_distribution=p.in_distribution,
        ood=p.ood,
    )


def _heatmap(png_b64: str) -> np.ndarray:
    with Image.open(io.BytesIO(base64.b64decode(png_b64))) as png:
        return np.asarray(png.convert("L"), dtype=np.float32) / 255


def upload_limit_mb(max_image_bytes: int) -> int:
    """The upload widget's limit in whole MiB (Streamlit's unit): none larger than the
    predictor's limit gets through, and a MiB-multiple limit (the chart's) is met exactly."""
    return max(1, max_image_bytes // 2**20)


def too_large(image: bytes, max_image_bytes: int) -> str | None:
    """Why the predictor would refuse ``image`` for its size, in words; None when it fits."""
    if len(image) <= max_image_bytes:
        return None
    size, most = len(image) / 2**20, max_image_bytes / 2**20
    return (f"This image is {size:.1f} MiB; the model takes images up to {most:.1f} MiB. "
            "Export a smaller JPEG and upload it again.")  # fmt: skip


def grad_cam_views(
    image: bytes, answer: Answer, width: int = 640, limits: ImageLimits = ImageLimits()
) -> tuple[np.ndarray, np.ndarray] | None:
    """The square of the upload the model saw, at up to ``width`` pixels a side, and the same
    square with the Grad-CAM heatmap over it, at the same size; None without a heatmap."""
    if answer.heatmap is None:
        return None
    upright = decode(image, limits=limits).image
    w, h = upright.size
    left, top, right, bottom = answer.seen_box
    square = upright.crop((round(left * w), round(top * h), round(right * w), round(bottom * h)))
    side = min(square.width, square.height, width)
    seen = to_array(square.resize((side, side), Image.Resampling.LANCZOS))
    heat = resize_bilinear(answer.heatmap[None], (side, side))[0]
    return seen, overlay(seen, heat)


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


def guard_warning(answer: Answer) -> str | None:
    """Why the model should not be asked about this image, in words; None when it may be."""
    if answer.in_distribution is not False:
        return None
    how_far = ""
    if answer.ood:
        score, threshold, keep = answer.ood.score, answer.ood.threshold, answer.ood.keep
        how_far = (
            f" (its distance from the training images is {score:.3g}; {keep:.0%} of the "
            f"validation images are within {threshold:.3g})"
        )
    return (
        "This does not look like the dermoscopic images the model was trained on" + how_far + ". "
        "It may be a photograph without a dermatoscope, a screenshot, another object, or a "
        "lesion type or device the model has not seen; its answer would be a guess. Take a "
        "dermoscopic image of the lesion, or judge it without the model."
    )


def signed_in_user(headers: Mapping[str, str]) -> str | None:
    """The user an authenticating proxy vouches for, if any."""
    lowered = {k.lower(): v for k, v in headers.items()}
    return next((lowered[h].strip() for h in USER_HEADERS if lowered.get(h, "").strip()), None)
