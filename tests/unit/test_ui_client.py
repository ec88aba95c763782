"""The UI's predictor client and wording, and the feedback store it writes."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dermaops.client import PredictorError
from dermaops.data.feedback import read_feedback, record_feedback
from dermaops.data.privacy import has_metadata
from dermaops.labels import CLASSES
from dermaops.model.artifact import Preprocessing
from dermaops.ui.client import (
    Answer,
    classify,
    grad_cam_views,
    guard_warning,
    operating_point,
    signed_in_user,
    too_large,
    upload_limit_mb,
)
from tests.fault_server import FaultyServer
from tests.unit.test_privacy import _photo


def _answer(flag: bool, heatmap: np.ndarray | None = None,
            box: tuple[float, float, float, float] = (0, 0, 1, 1)) -> Answer:  # fmt: skip
    return Answer({}, [("mel", "Melanoma", 0.4)], flag, 0.4, 0.21, "dermaops", "3", heatmap, box,
                  "mel")  # fmt: skip


def _coordinates(width: int, height: int) -> Image.Image:
    """Red is x, green is y, each from 0 to 255 across the image."""
    x = np.linspace(0, 255, width)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height)[:, None].repeat(width, 1)
    return Image.fromarray(np.stack([x, y, np.zeros_like(x)], -1).round().astype(np.uint8))


@pytest.mark.parametrize("size", [(600, 450), (450, 600), (1000, 200), (256, 256)])
def test_the_seen_box_is_the_square_the_stem_keeps(size: tuple[int, int]) -> None:
    """Cropping the box from the upright image gives what the stem (cover cache_size, short
    side to image_size, centre square) hands the model, for any aspect."""
    import torch

    from dermaops.model.stem import centre_crop, fit_short_side

    pre = Preprocessing(image_size=64)
    image = _coordinates(*size)
    cache = torch.from_numpy(pre.cache_pixels(image).copy())[None]
    stem = centre_crop(fit_short_side(cache, 64), 64)[0].numpy().astype(float)
    w, h = size
    left, top, right, bottom = pre.seen_box(size)
    assert right - left == pytest.approx((bottom - top) * h / w)  # a square
    boxed = image.crop((left * w, top * h, right * w, bottom * h)).resize((64, 64))
    assert np.abs(np.asarray(boxed, float) - stem)[..., :2].mean() < 4  # of 255


def test_grad_cam_is_shown_on_the_uploads_own_square_at_one_size() -> None:
    """The heatmap's hot corner lands on the same corner of the square the model saw, and the
    square and the overlay share one size, the upload's own up to the width asked."""
    heat = np.zeros((8, 8), np.float32)
    heat[:2, -2:] = 1.0  # top right
    buf = io.BytesIO()
    _coordinates(900, 600).save(buf, "PNG")
    box = Preprocessing(image_size=8).seen_box((900, 600))
    views = grad_cam_views(buf.getvalue(), _answer(False, heat, box), width=400)
    assert views is not None
    seen, cam = views
    assert seen.shape == cam.shape == (400, 400, 3)
    assert seen[0, 0, 0] == pytest.approx(255 * box[0], abs=3)  # the square's left edge
    hot = cam.astype(float)[..., 0] - cam.astype(float)[..., 2]  # jet: red hot, blue cold
    assert hot[:100, -100:].mean() > hot[-100:, :100].mean() + 100
    small = grad_cam_views(buf.getvalue(), _answer(False, heat, box), width=4000)
    assert small is not None and small[0].shape == (600, 600, 3)  # never upscaled
    assert grad_cam_views(buf.getvalue(), _answer(False)) is None


def test_the_upload_limit_is_the_predictors() -> None:
    assert upload_limit_mb(20 * 2**20) == 20  # the chart's 20 MiB, exactly
    assert upload_limit_mb(20_000_000) == 19  # never above the predictor's
    assert too_large(b"x" * 100, 100) is None
    refusal = too_large(b"x" * (3 * 2**20), 2 * 2**20)
    assert refusal is not None and "3.0 MiB" in refusal and "up to 2.0 MiB" in refusal


def test_operating_point_in_plain_words() -> None:
    assert operating_point(_answer(True)).startswith("Melanoma flag: probability 40%, at or above")
    text = operating_point(_answer(False))
    assert text.startswith("No melanoma flag") and "reaches 21%" in text and "benign" in text


def test_signed_in_user_comes_from_the_proxy_headers_only() -> None:
    assert signed_in_user({"X-Forwarded-User": " dr.lee "}) == "dr.lee"
    assert signed_in_user({"X-Auth-Request-User": "a", "Cookie": "x"}) == "a"
    assert signed_in_user({"Host": "ui"}) is None


def test_predictor_refusals_and_absence_are_readable(tmp_path: Path) -> None:
    with FaultyServer() as server:
        server.add("/v1/models/dermaops:predict", json.dumps({"error": "instance 0: not an image"}
                                                             ).encode(), "400")  # fmt: skip
        with pytest.raises(PredictorError, match=r"refused the request \(400\): instance 0"):
            classify(server.url, b"x")
    with pytest.raises(PredictorError, match="cannot be reached"):
        classify("http://127.0.0.1:9", b"x", timeout=2)


def test_a_model_the_predictor_cannot_explain_still_gets_its_answer() -> None:
    """The CPU predictor answers explain with 501 for heads it has no class maps for: the page
    shows the prediction and the image without a heatmap, not an error."""
    probabilities = {c: (0.4 if c == "mel" else 0.1) for c in CLASSES}
    predicted = {"predictions": [{
        "probabilities": probabilities, "top_k": [{"dx": "mel", "name": "x", "probability": 0.4}],
        "melanoma": {"flag": True, "probability": 0.4, "threshold": 0.2},
        "in_distribution": None, "ood": None,
    }], "model_name": "dermaops", "model_version": "4"}  # fmt: skip
    with FaultyServer() as server:
        server.add("/v1/models/dermaops:predict", json.dumps(predicted).encode())
        server.add("/v1/models/dermaops:explain", b'{"error": "no class maps"}', "501")
        answer = classify(server.url, b"x")
    assert answer.melanoma_flag and answer.heatmap is None and answer.explained == "mel"
    assert grad_cam_views(b"x", answer) is None
    assert answer.in_distribution is None and guard_warning(answer) is None  # a model unguarded


def test_an_image_the_guard_refuses_gets_a_warning_in_words() -> None:
    ood = {"score": 71.2, "threshold": 44.4, "keep": 0.95, "method": "mahalanobis"}
    predicted = {"predictions": [{
        "probabilities": {c: 1 / 7 for c in CLASSES},
        "top_k": [{"dx": "nv", "name": "x", "probability": 0.2}],
        "melanoma": {"flag": False, "probability": 0.1, "threshold": 0.2},
        "in_distribution": False, "ood": ood,
    }], "model_name": "dermaops", "model_version": "4"}  # fmt: skip
    with FaultyServer() as server:
        server.add("/v1/models/dermaops:predict", json.dumps(predicted).encode())
        server.add("/v1/models/dermaops:explain", b'{"error": "no class maps"}', "501")
        answer = classify(server.url, b"x")
    assert answer.in_distribution is False and answer.ood and answer.ood.model_dump() == ood
    warning = guard_warning(answer)
    assert warning is not None and "does not look like the dermoscopic images" in warning
    assert "71.2" in warning and "95% of the validation images are within 44.4" in warning
    assert guard_warning(replace(answer, in_distribution=True)) is None


def test_feedback_store_is_clean_idempotent_and_ingestible(tmp_path: Path) -> None:
    photo = _photo(size=(600, 450))
    first = record_feedback(tmp_path, photo, "mel", "Dr A", "3", "nv")
    again = record_feedback(
        tmp_path, photo, "bcc", "Dr A", "3", "nv", {"age": "55", "sex": "female"}
    )
    assert first.created and not again.created and first.feedback_id == again.feedback_id
    rows = read_feedback(tmp_path)
    assert len(rows) == 1 and rows.loc[0, "dx"] == "bcc" and rows.loc[0, "sex"] == "female"
    stored = tmp_path / rows.loc[0, "image_file"]
    assert not has_metadata(stored.read_bytes())
    with pytest.raises(ValueError, match="not one of"):
        record_feedback(tmp_path, photo, "melanoma", "Dr A")
    with pytest.raises(ValueError, match="clinician"):
        record_feedback(tmp_path, photo, "mel", "  ")
    assert len(pd.read_csv(tmp_path / "feedback.csv")) == 1, "refusals change nothing"
