"""The v1 protocol's types and the one predictor client, against a real HTTP server on loopback."""

from __future__ import annotations

import base64
import json

import pytest

from dermaops.client import PredictorClient, PredictorError
from dermaops.labels import CLASSES
from dermaops.v1 import PredictRequest, ProtocolError, read_predict, request_body
from tests.fault_server import FaultyServer

PREDICT = "/v1/models/dermaops:predict"
ANSWER = {
    "predictions": [{
        "in_distribution": True,
        "ood": {"score": 3.1, "threshold": 9.0, "keep": 0.95, "method": "mahalanobis"},
        "probabilities": {c: 1 / 7 for c in CLASSES},
        "top_k": [{"dx": "nv", "name": "Melanocytic nevi", "probability": 1 / 7}],
        "melanoma": {"flag": False, "probability": 1 / 7, "threshold": 0.3},
    }],
    "model_name": "dermaops",
    "model_version": "3",
}  # fmt: skip


def test_the_request_body_is_the_protocols_and_carries_the_bytes_exactly() -> None:
    images = [b"\xff\xd8 a jpeg", b"\x89PNG\r\n another"]
    body = request_body(images)
    parsed = PredictRequest.model_validate_json(body)
    assert [base64.b64decode(i.image_bytes.b64) for i in parsed.instances] == images
    assert json.loads(body) == {"instances": [
        {"image_bytes": {"b64": base64.b64encode(i).decode()}} for i in images]}  # fmt: skip


def test_an_answer_that_is_not_the_protocols_is_an_error_naming_the_field() -> None:
    assert read_predict(json.dumps(ANSWER)).predictions[0].ood is not None
    wrong = json.loads(json.dumps(ANSWER))
    del wrong["predictions"][0]["melanoma"]["threshold"]
    with pytest.raises(ProtocolError, match=r"predictions\.0\.melanoma\.threshold: Field required"):
        read_predict(wrong)
    wrong["predictions"][0]["melanoma"]["threshold"], wrong["extra"] = 0.3, 1
    with pytest.raises(ProtocolError, match="extra: Extra inputs are not permitted"):
        read_predict(wrong)
    with pytest.raises(ProtocolError, match="Invalid JSON"):
        read_predict(b"<html>proxy error</html>")


def test_a_full_queue_is_retried_after_the_time_it_names() -> None:
    with FaultyServer() as server:
        server.add(PREDICT, json.dumps(ANSWER).encode(), "retry-after=0", "retry-after=0")
        with PredictorClient(server.url, retries=3) as client:
            answer = client.predict([b"x"])
        assert answer.model_version == "3" and len(server.posts) == 3


def test_retries_stop_at_their_number_and_at_the_wait_allowed() -> None:
    with FaultyServer() as server:
        server.add(PREDICT, json.dumps(ANSWER).encode(), *["retry-after=0"] * 3)
        with PredictorClient(server.url, retries=1) as client, pytest.raises(
            PredictorError, match=r"refused the request \(503\): busy"
        ) as refused:  # fmt: skip
            client.predict([b"x"])
        assert refused.value.status == 503 and len(server.posts) == 2
        server.add(PREDICT, json.dumps(ANSWER).encode(), "retry-after=120")
        with PredictorClient(server.url, max_retry_wait=5) as client, pytest.raises(
            PredictorError, match="503"
        ):  # fmt: skip
            client.predict([b"x"])  # the predictor asks for 2 minutes: not waited for
        assert len(server.posts) == 3


def test_a_refusal_without_retry_after_is_not_retried_and_quotes_the_reason() -> None:
    with FaultyServer() as server:
        server.add(PREDICT, b'{"error": "instance 0: not an image"}', "400")
        server.add("/v1/models/dermaops:explain", b'{"error": "no class maps"}', "501")
        with PredictorClient(server.url) as client:
            with pytest.raises(PredictorError, match=r"\(400\): instance 0: not an image"):
                client.predict([b"x"])
            assert client.explain([b"x"]) is None  # 501: this model cannot be explained
        assert len(server.posts) == 2
    with pytest.raises(PredictorError, match="cannot be reached") as unreachable:
        PredictorClient("http://127.0.0.1:9", timeout=2).predict([b"x"])
    assert unreachable.value.status == 0
