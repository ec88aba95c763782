"""The predictor as KServe runs it: a real ModelServer process on a loopback port."""

from __future__ import annotations

import base64
import io
import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from dermaops.labels import CLASSES
from dermaops.serving.process import predictor_process
from tests.docs_files import assert_published_as_documented
from tests.scrape import wait_recorded

pytestmark = [pytest.mark.integration, pytest.mark.slow]

V1 = "/v1/models/dermaops:predict"
V2 = "/v2/models/dermaops/infer"
EXPLAIN = "/v1/models/dermaops:explain"
MAX_BYTES = 300_000
MAX_PIXELS = 4_000_000


@dataclass(frozen=True)
class Server:
    url: str
    log: Path
    inference_log: Path
    threshold: float


@pytest.fixture(scope="module")
def model_dir(served_model: Path) -> Path:
    return served_model


@pytest.fixture(scope="module")
def server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("server")
    limits = {
        "DERMAOPS_SERVING_MAX_IMAGE_BYTES": str(MAX_BYTES),
        "DERMAOPS_SERVING_MAX_IMAGE_PIXELS": str(MAX_PIXELS),
        "DERMAOPS_SERVING_MAX_INSTANCES": "8",
    }
    log = root / "server.log"
    with predictor_process(model_dir, root / "home", log, ["--workers", "1"], limits) as url:
        threshold = json.loads((model_dir / "calibration.json").read_text())
        yield Server(url, log, root / "home" / "inference" / "predictions.jsonl",
                     threshold["melanoma_threshold"])  # fmt: skip


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _instances(*images: bytes) -> dict[str, object]:
    return {"instances": [{"image_bytes": {"b64": _b64(i)}} for i in images]}


def _png(width: int, height: int, noise: bool = False) -> bytes:
    rng = np.random.default_rng(0)
    pixels = (
        rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        if noise
        else np.full((height, width, 3), 120, np.uint8)
    )
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def test_ready_only_after_load_and_health_says_so(server: Server) -> None:
    assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200
    ready = httpx.get(f"{server.url}/v2/models/dermaops/ready").json()
    assert ready["ready"] is True
    assert httpx.get(f"{server.url}/v1/models/dermaops").json()["ready"] is True


def test_v1_predicts_several_images(server: Server, jpeg_bytes: Callable[..., bytes]) -> None:
    body = _instances(jpeg_bytes(600, 450), jpeg_bytes(300, 400, "PNG"))
    answer = httpx.post(f"{server.url}{V1}", json=body, timeout=30).json()
    assert answer["model_name"] == "dermaops" and len(answer["predictions"]) == 2
    for prediction in answer["predictions"]:
        probs = prediction["probabilities"]
        assert list(probs) == list(CLASSES) and abs(sum(probs.values()) - 1) < 1e-4
        assert prediction["top_k"][0]["dx"] == max(probs, key=probs.__getitem__)
        assert prediction["top_k"][0]["name"]
        mel = prediction["melanoma"]
        assert mel["threshold"] == pytest.approx(server.threshold, abs=1e-6)
        assert mel["flag"] == (mel["probability"] >= mel["threshold"])


def test_v2_bytes_tensor(server: Server, jpeg_bytes: Callable[..., bytes]) -> None:
    data = [_b64(jpeg_bytes(600, 450)), _b64(jpeg_bytes(64, 64))]
    body = {"inputs": [{"name": "image", "shape": [2], "datatype": "BYTES", "data": data}]}
    answer = httpx.post(f"{server.url}{V2}", json=body, timeout=30).json()
    outputs = {o["name"]: o for o in answer["outputs"]}
    assert outputs["probabilities"]["shape"] == [2, 7]
    assert outputs["label"]["data"][0] in CLASSES and len(outputs["melanoma"]["data"]) == 2
    v1 = httpx.post(f"{server.url}{V1}", json=_instances(jpeg_bytes(600, 450)), timeout=30).json()
    first = np.array(outputs["probabilities"]["data"][:7])
    assert np.allclose(first, list(v1["predictions"][0]["probabilities"].values()), atol=1e-5)
    # The model metadata names what the answers hold (the guard's outputs included).
    metadata = httpx.get(f"{server.url}/v2/models/dermaops").json()
    assert metadata["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": [-1]}]
    described = {o["name"]: (o["datatype"], o["shape"][1:]) for o in metadata["outputs"]}
    assert described == {o["name"]: (o["datatype"], o["shape"][1:]) for o in answer["outputs"]}
    assert "in_distribution" in described


def test_explain_returns_gradcam_pngs(server: Server, jpeg_bytes: Callable[..., bytes]) -> None:
    answer = httpx.post(f"{server.url}{EXPLAIN}", json=_instances(jpeg_bytes(600, 450)), timeout=60)
    assert answer.status_code == 200, answer.text
    explanation = answer.json()["explanations"][0]
    assert explanation["dx"] in CLASSES and explanation["method"] == "gradcam"
    heatmap = Image.open(io.BytesIO(base64.b64decode(explanation["heatmap_png_b64"])))
    overlay = Image.open(io.BytesIO(base64.b64decode(explanation["overlay_png_b64"])))
    assert heatmap.size == (32, 32) and overlay.size == (32, 32) and overlay.mode == "RGB"
    assert explanation["seen_box"] == pytest.approx([0.125, 0, 0.875, 1])  # 450 of 600 wide

    portrait = httpx.post(f"{server.url}{EXPLAIN}", json=_instances(jpeg_bytes(450, 600)),
                          timeout=60).json()["explanations"][0]  # fmt: skip
    assert portrait["seen_box"] == pytest.approx([0.125, 0.21875, 0.875, 0.78125])  # 337.5 px


def _bad_inputs(jpeg: bytes) -> list[tuple[str, str, bytes | dict[str, object] | list[object]]]:
    huge = _png(400, 400, noise=True)  # over MAX_BYTES
    many_pixels = _png(2500, 2000)  # small file, over MAX_PIXELS
    assert len(huge) > MAX_BYTES and len(many_pixels) < MAX_BYTES
    img = {"image_bytes": {"b64": _b64(jpeg)}}
    v2 = {"name": "image", "shape": [1], "datatype": "BYTES"}
    return [
        (V1, "empty body", b""),
        (V1, "not JSON", b"hello"),
        (V1, "a JSON list", []),
        (V1, "no instances", {}),
        (V1, "instances not a list", {"instances": "x"}),
        (V1, "no images", {"instances": []}),
        (V1, "a number as instance", {"instances": [1]}),
        (V1, "no b64", {"instances": [{"image_bytes": {}}]}),
        (V1, "empty b64", {"instances": [{"image_bytes": {"b64": ""}}]}),
        (V1, "b64 not a string", {"instances": [{"image_bytes": {"b64": 12}}]}),
        (V1, "bad base64", {"instances": [{"image_bytes": {"b64": "!!not base64!!"}}]}),
        (V1, "text, not an image", _instances(b"hello, I am not a JPEG")),
        (V1, "truncated JPEG", _instances(jpeg[: len(jpeg) // 2])),
        (V1, "JPEG header only", _instances(jpeg[:20])),
        (V1, "corrupt PNG", _instances(_png(50, 50)[:40] + b"\x00" * 200)),
        (V1, "too many instances", {"instances": [img] * 9}),
        (V1, "over the byte limit", _instances(huge)),
        (V1, "over the pixel limit", _instances(many_pixels)),
        (V1, "one good, one bad", {"instances": [img, {"image_bytes": {"b64": "@@"}}]}),
        (EXPLAIN, "explain, not an image", _instances(b"GIF89a but not really")),
        (V2, "v2 without inputs", {"inputs": []}),
        (V2, "v2 inputs not a list", {"inputs": "image"}),
        (
            V2,
            "v2 FP32, not BYTES",
            {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}]},
        ),
        (V2, "v2 bad base64", {"inputs": [v2 | {"data": ["%%%"]}]}),
        (V2, "v2 not an image", {"inputs": [v2 | {"data": [_b64(b"plain text")]}]}),
        (V2, "v2 empty body", b""),
        ("/v1/models/unknown:predict", "unknown model", _instances(jpeg)),
    ]


def test_bad_inputs_get_a_4xx_that_says_what_to_fix(
    server: Server, jpeg_bytes: Callable[..., bytes]
) -> None:
    jpeg = jpeg_bytes(600, 450)
    corpus = _bad_inputs(jpeg)
    assert len(corpus) >= 20
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for path, what, body in corpus:
            if isinstance(body, bytes):
                answer = client.post(
                    path, content=body, headers={"content-type": "application/json"}
                )
            else:
                answer = client.post(path, json=body)
            assert 400 <= answer.status_code < 500, f"{what}: {answer.status_code} {answer.text}"
            assert len(answer.text) > 10, f"{what}: {answer.text!r} says nothing"
            assert client.post(V1, json=_instances(jpeg)).status_code == 200, f"down after {what}"
        specific = client.post(V1, json={"instances": [{"image_bytes": {"b64": "@@"}}]})
        assert "instances[0]" in specific.text and "base64" in specific.text
        assert "at most 8" in client.post(V1, json={"instances": [{"b64": "x"}] * 9}).text
    assert _b64(jpeg)[:200] not in server.log.read_text(), "image bytes never reach the logs"


def test_random_bytes_never_get_a_5xx(server: Server) -> None:
    rng = random.Random(1)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for i in range(120):
            blob = rng.randbytes(rng.randint(0, 3000))
            if i % 3 == 0:
                answer = client.post(V1, content=blob, headers={"content-type": "application/json"})
            elif i % 3 == 1:
                answer = client.post(V1, json=_instances(blob))
            else:
                body = {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                                    "data": [_b64(blob)]}]}  # fmt: skip
                answer = client.post(V2, json=body)
            assert answer.status_code < 500, f"fuzz case {i}: {answer.status_code} {answer.text}"


def test_metrics_and_inference_log(server: Server, jpeg_bytes: Callable[..., bytes]) -> None:
    httpx.post(f"{server.url}{V1}", json=_instances(jpeg_bytes(600, 450)), timeout=30)
    httpx.post(f"{server.url}{V1}", json={"instances": [{"b64": "@@"}]}, timeout=30)
    wait_recorded(server.url)  # statistics and records are made after the answer
    text = httpx.get(f"{server.url}/metrics").text
    expected = (
        "dermaops_predictions_total", "dermaops_confidence_bucket", "dermaops_model_info{",
        "dermaops_melanoma_flags_total", "dermaops_input_image_stat_bucket",
        'dermaops_request_errors_total{reason="bad_base64"}', "request_predict_seconds",
        'dermaops_request_duration_seconds_bucket{le="0.005",verb="predict"}',
    )  # fmt: skip
    for name in expected:
        assert name in text, name
    lines = server.inference_log.read_text().splitlines()
    record = json.loads(lines[-1])
    assert {"brightness", "sharpness", "width", "prediction", "confidence", "melanoma",
            "embedding_pc1", "embedding_pc2", "embedding_pc3"} <= set(record)  # fmt: skip
    assert record["width"] == 600.0 and len(lines[-1]) < 2000, "statistics, never pixels"


def test_the_smoke_check_helm_test_runs_passes_against_a_real_predictor(server: Server) -> None:
    from dermaops.serving.smoke import main

    assert main(["--url", server.url, "--wait", "30"]) == 0
    assert main(["--url", server.url, "--model-name", "other", "--wait", "5"]) == 1


def test_good_requests_add_no_line_to_the_servers_log(server: Server) -> None:
    """Neither uvicorn's access line (the metrics count requests) nor FastAPI's deprecation of
    the response class KServe uses, which every decode brought back by resetting the warning
    registries: 1,100 lines for 1,100 requests, and a tenth of a millisecond each."""
    body = {"instances": [{"image_bytes": {"b64": _b64(_png(64, 48))}}]}
    httpx.post(f"{server.url}{V1}", json=body).raise_for_status()  # the first may say things
    before = server.log.read_text()
    for _ in range(20):
        httpx.post(f"{server.url}{V1}", json=body).raise_for_status()
    added = server.log.read_text()[len(before) :]
    assert added.count("\n") < 5, added[-2000:]


def test_no_log_holds_image_bytes_or_base64(server: Server) -> None:
    """Runs last in this module: every request above (good, bad and fuzzed) has been logged."""
    from tests.log_scan import assert_no_image_data

    wait_recorded(server.url)
    assert_no_image_data([server.log, *server.inference_log.parent.glob("predictions.jsonl*")])


def test_the_served_model_cannot_be_unloaded_over_http(server: Server) -> None:
    """KServe's repository extension let any caller unload the model (ready stayed true)."""
    for verb in ("unload", "load"):
        refused = httpx.post(f"{server.url}/v2/repository/models/dermaops/{verb}")
        assert refused.status_code == 403 and "roll it out" in refused.json()["error"]
    assert httpx.get(f"{server.url}/v2/models/dermaops/ready").json()["ready"] is True


def test_version_paths_serve_the_served_version_and_name_it_otherwise(server: Server) -> None:
    served = httpx.get(f"{server.url}/v2/models/dermaops").json()["name"]
    body = {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                        "data": [_b64(_png(64, 48))]}]}  # fmt: skip
    version = httpx.post(f"{server.url}{V2}", json=body).json()["model_version"]
    assert served == "dermaops"
    infer = f"{server.url}/v2/models/dermaops/versions/{version}/infer"
    assert httpx.post(infer, json=body).status_code == 200
    ready = f"{server.url}/v2/models/dermaops/ready"
    assert httpx.get(ready, params={"model_version": version}).json()["ready"] is True
    other = httpx.get(f"{server.url}/v2/models/dermaops/versions/999/ready")
    assert other.status_code == 404 and f"serves version {version!r}" in other.json()["error"]
    assert httpx.get(ready, params={"model_version": "999"}).status_code == 404
    unknown = httpx.get(f"{server.url}/v2/models/nope/versions/{version}/ready")
    assert unknown.status_code == 404


def test_a_v2_shape_that_disagrees_with_its_data_is_refused(server: Server) -> None:
    image = _b64(_png(64, 48))
    body = {"inputs": [{"name": "image", "shape": [3], "datatype": "BYTES", "data": [image]}]}
    refused = httpx.post(f"{server.url}{V2}", json=body)
    assert refused.status_code == 400 and "send shape [1]" in refused.json()["error"]
    nested = {"inputs": [{"name": "image", "shape": [2, 1], "datatype": "BYTES",
                          "data": [[image], [image]]}]}  # fmt: skip
    answer = httpx.post(f"{server.url}{V2}", json=nested)
    assert answer.status_code == 200 and answer.json()["outputs"][0]["shape"] == [2, 7]


def test_the_openapi_document_declares_the_v1_bodies_the_answers_meet(server: Server) -> None:
    """Both ends of the v1 contract: the schema the predictor publishes, and its real answers
    (predict and explain, two images) validated against it by a JSON Schema validator; the
    document the docs render is the one published."""
    import jsonschema

    document = httpx.get(f"{server.url}/openapi.json", timeout=30).json()
    assert_published_as_documented(document, "predictor")
    components = document["components"]

    def schema(name: str) -> dict[str, object]:  # refs resolve against the whole components
        return {**components["schemas"][name], "components": components}

    request = _instances(_png(64, 48), _png(80, 60, noise=True))
    jsonschema.validate(request, schema("PredictRequest"))
    for verb, answer in (("predict", "PredictAnswer"), ("explain", "ExplainAnswer")):
        post = document["paths"][f"/v1/models/{{model_name}}:{verb}"]["post"]
        body = post["requestBody"]["content"]["application/json"]["schema"]
        assert body == {"$ref": "#/components/schemas/PredictRequest"}
        declared = post["responses"]["200"]["content"]["application/json"]["schema"]
        assert declared == {"$ref": f"#/components/schemas/{answer}"}
        answered = httpx.post(f"{server.url}/v1/models/dermaops:{verb}", json=request, timeout=60)
        assert answered.status_code == 200, answered.text
        jsonschema.validate(answered.json(), schema(answer))
        with pytest.raises(jsonschema.ValidationError):  # the schema can fail
            jsonschema.validate({**answered.json(), "model_version": 3}, schema(answer))
