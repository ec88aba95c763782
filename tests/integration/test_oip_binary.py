"""Every Open Inference Protocol client gets an answer: Triton's and KServe's, over REST and gRPC.

The real clients (tritonclient in .tools/client; KServe's own in the project's venv) against the
real predictor process, each sending the images in every form it can: binary tensors and base64
JSON over REST, ``raw_input_contents`` and ``contents.bytes_contents`` over gRPC. And KServe's own
decoder on the REST client's body, to see whether the binary workaround is still needed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from kserve import InferenceGRPCClient
from kserve.errors import InferenceError
from kserve.protocol.infer_type import InferInput, InferRequest, InferResponse

from dermaops.labels import CLASSES
from dermaops.serving.process import PredictorProcess
from tests.k8s.conftest import find_tool

pytestmark = [pytest.mark.integration, pytest.mark.slow]
# What the v2 answer holds for a model with its out-of-distribution guard.
OUTPUTS = ("probabilities", "label", "melanoma", "in_distribution", "ood_score")

CLIENT = Path(__file__).with_name("oip_client.py")
V1 = "/v1/models/dermaops:predict"


@pytest.fixture(scope="module")
def predictor(
    served_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PredictorProcess]:
    root = tmp_path_factory.mktemp("oip")
    with PredictorProcess(served_model, root / "home", root / "server.log", grpc=True) as server:
        yield server


@pytest.fixture(scope="module")
def url(predictor: PredictorProcess) -> str:
    return predictor.url


@pytest.fixture
def client() -> Callable[..., str]:
    python = find_tool("python", venv="client")

    def run(*args: str) -> str:
        command = [python, str(CLIENT), *args]
        done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    return run


@pytest.fixture
def jpegs(jpeg_bytes: Callable[..., bytes], tmp_path: Path) -> list[str]:
    paths = []
    for i, size in enumerate([(600, 450), (450, 600)]):
        path = tmp_path / f"{i}.jpg"
        path.write_bytes(jpeg_bytes(*size))
        paths.append(str(path))
    return paths


def v1_probabilities(url: str, paths: list[str]) -> np.ndarray:
    body = {"instances": [{"b64": base64.b64encode(Path(p).read_bytes()).decode()} for p in paths]}
    answer = httpx.post(f"{url}{V1}", json=body, timeout=30).json()
    return np.array([list(p["probabilities"].values()) for p in answer["predictions"]])


def test_binary_jpeg_in_binary_outputs_out(url: str, client: Callable[..., str],
                                           jpegs: list[str]) -> None:  # fmt: skip
    answer = json.loads(client("infer", url, "dermaops", *jpegs))
    assert sorted(answer["binary"]) == sorted(OUTPUTS)
    probabilities = np.array(answer["outputs"]["probabilities"])
    assert probabilities.shape == (2, len(CLASSES))
    assert np.abs(probabilities - v1_probabilities(url, jpegs)).max() < 1e-5
    assert answer["outputs"]["label"] == [CLASSES[i] for i in probabilities.argmax(axis=1)]
    assert len(answer["outputs"]["melanoma"]) == 2


def test_outputs_as_the_client_names_them_binary_or_json(
    url: str, client: Callable[..., str], jpegs: list[str]
) -> None:
    answer = json.loads(
        client("infer", url, "dermaops", *jpegs, "--outputs", "label:json,melanoma")
    )
    assert list(answer["outputs"]) == ["label", "melanoma"]
    assert answer["binary"] == ["melanoma"]
    assert all(label in CLASSES for label in answer["outputs"]["label"])


def test_a_body_whose_sizes_do_not_add_up_is_a_400_and_the_server_stays(
    url: str, client: Callable[..., str], jpegs: list[str], tmp_path: Path
) -> None:
    json_size = int(client("body", jpegs[0], str(tmp_path / "body")))
    body = (tmp_path / "body").read_bytes()
    infer = f"{url}/v2/models/dermaops/infer"
    cut = httpx.post(infer, content=body[:-10], timeout=30,
                     headers={"Inference-Header-Content-Length": str(json_size)})  # fmt: skip
    assert cut.status_code == 400 and "runs past the body" in cut.json()["error"]
    whole = httpx.post(infer, content=body, timeout=30,
                       headers={"Inference-Header-Content-Length": str(json_size)})  # fmt: skip
    assert whole.status_code == 200  # the client's body asks for every output in binary
    header = json.loads(whole.content[: int(whole.headers["inference-header-content-length"])])
    sizes = {o["name"]: o["parameters"]["binary_data_size"] for o in header["outputs"]}
    assert sizes["probabilities"] == 7 * 4 and sizes["melanoma"] == 1
    assert sizes["label"] - 4 in {len(c) for c in CLASSES}  # a length prefix and the code


def test_kserve_own_decoder_still_reads_binary_bytes_as_text(
    client: Callable[..., str], jpegs: list[str], tmp_path: Path
) -> None:
    """When this fails, KServe decodes binary BYTES itself: serving/binary.py can go."""
    json_size = int(client("body", jpegs[0], str(tmp_path / "body")))
    body = (tmp_path / "body").read_bytes()
    with pytest.raises(InferenceError, match="UTF-8"):
        InferRequest.from_bytes(body, json_size, "dermaops")


def test_json_base64_images_from_triton_client(url: str, client: Callable[..., str],
                                               jpegs: list[str]) -> None:  # fmt: skip
    answer = json.loads(client("infer", url, "dermaops", *jpegs, "--json"))
    probabilities = np.array(answer["outputs"]["probabilities"])
    assert np.abs(probabilities - v1_probabilities(url, jpegs)).max() < 1e-5


def test_grpc_raw_input_contents_from_triton_client(
    predictor: PredictorProcess, client: Callable[..., str], jpegs: list[str]
) -> None:
    answer = json.loads(client("grpc", predictor.grpc_target, "dermaops", *jpegs))
    assert "error" not in answer, answer
    assert list(answer["outputs"]) == list(OUTPUTS)
    assert answer["raw"] == len(OUTPUTS)  # every output raw, as Triton's server answers
    probabilities = np.array(answer["outputs"]["probabilities"])
    assert probabilities.shape == (2, len(CLASSES))
    assert np.abs(probabilities - v1_probabilities(predictor.url, jpegs)).max() < 1e-5
    assert answer["outputs"]["label"] == [CLASSES[i] for i in probabilities.argmax(axis=1)]
    assert all(isinstance(v, bool) for v in answer["outputs"]["in_distribution"])
    # KServe's gRPC parameters hold no doubles: the thresholds come as text
    threshold = float(answer["parameters"]["melanoma_threshold"]["string_param"])
    assert 0 < threshold < 1 and answer["parameters"]["ood_method"]["string_param"]


def test_grpc_outputs_as_the_client_names_them(
    predictor: PredictorProcess, client: Callable[..., str], jpegs: list[str]
) -> None:
    spec = "melanoma,label"
    answer = json.loads(
        client("grpc", predictor.grpc_target, "dermaops", *jpegs, "--outputs", spec)
    )
    assert list(answer["outputs"]) == ["melanoma", "label"] and answer["raw"] == 2
    assert all(label in CLASSES for label in answer["outputs"]["label"])


def test_grpc_metadata_stays_as_declared(
    predictor: PredictorProcess, client: Callable[..., str]
) -> None:
    metadata = json.loads(client("grpc-metadata", predictor.grpc_target, "dermaops"))
    assert metadata["platform"] == "onnxruntime:fp32"  # what answers: KServe leaves it empty
    assert metadata["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": ["-1"]}]
    assert [o["name"] for o in metadata["outputs"]] == list(OUTPUTS)


def test_grpc_bad_images_are_invalid_argument_and_the_server_stays(
    predictor: PredictorProcess, client: Callable[..., str], jpegs: list[str], tmp_path: Path
) -> None:
    text = tmp_path / "note.jpg"
    text.write_bytes(b"not an image at all")
    answer = json.loads(client("grpc", predictor.grpc_target, "dermaops", str(text)))
    assert answer["error"] == "StatusCode.INVALID_ARGUMENT"
    assert "image[0]" in answer["message"] and "JPEG or PNG" in answer["message"]
    assert "error" not in json.loads(client("grpc", predictor.grpc_target, "dermaops", jpegs[0]))


def _kserve_grpc(target: str, tensor: InferInput) -> InferResponse:
    async def infer() -> InferResponse:
        kserve_client = InferenceGRPCClient(target, timeout=60, retries=2)
        try:
            request = InferRequest(model_name="dermaops", infer_inputs=[tensor])
            return await kserve_client.infer(request)
        finally:
            await kserve_client.close()

    return asyncio.run(infer())


@pytest.mark.parametrize("form", ["contents", "raw"])
def test_grpc_from_kserve_client_in_both_forms(
    predictor: PredictorProcess, jpegs: list[str], form: str
) -> None:
    images = [Path(p).read_bytes() for p in jpegs]
    if form == "contents":  # a list of bytes goes into contents.bytes_contents
        tensor = InferInput("image", [len(images)], "BYTES", data=images)
    else:
        tensor = InferInput("image", [len(images)], "BYTES")
        tensor.set_data_from_numpy(np.array(images, dtype=np.object_), binary_data=True)
    response = _kserve_grpc(predictor.grpc_target, tensor)
    by_name = {o.name: o for o in response.outputs}
    probabilities = by_name["probabilities"].as_numpy()
    assert np.abs(probabilities - v1_probabilities(predictor.url, jpegs)).max() < 1e-5
    labels = [v.decode() for v in by_name["label"].as_numpy().tolist()]
    assert labels == [CLASSES[i] for i in probabilities.argmax(axis=1)]


def test_grpc_raw_contents_whose_lengths_run_past_are_invalid_argument(
    predictor: PredictorProcess, jpegs: list[str]
) -> None:
    import grpc

    image = Path(jpegs[0]).read_bytes()
    tensor = InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([image], dtype=np.object_), binary_data=True)
    tensor._raw_data = struct.pack("<I", len(image) + 10) + image  # a length past the end
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        _kserve_grpc(predictor.grpc_target, tensor)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "element 0 is cut" in str(refused.value.details())
