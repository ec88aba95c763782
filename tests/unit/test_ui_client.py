"""The UI's predictor client and wording, and the feedback store it writes."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from dermaops.data.feedback import read_feedback, record_feedback
from dermaops.data.privacy import has_metadata
from dermaops.ui.client import Answer, PredictorError, classify, operating_point, signed_in_user
from tests.fault_server import FaultyServer
from tests.unit.test_privacy import _photo


def _answer(flag: bool) -> Answer:
    return Answer({}, [("mel", "Melanoma", 0.4)], flag, 0.4, 0.21, "dermaops", "3", None, "mel")


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
        with pytest.raises(PredictorError, match=r"refused the image \(400\): instance 0"):
            classify(server.url, b"x")
    with pytest.raises(PredictorError, match="cannot be reached"):
        classify("http://127.0.0.1:9", b"x", timeout=2)


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
