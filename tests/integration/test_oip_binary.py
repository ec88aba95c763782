"""Every Open Inference Protocol client gets an answer: Triton's, sending a raw JPEG as binary.

The real client (tritonclient, in .tools/client) against the real predictor process; and KServe's
own decoder on the same client's body, to see whether the workaround is still needed.
"""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from kserve.errors import InferenceError
from kserve.protocol.infer_type import InferRequest

from dermaops.labels import CLASSES
from dermaops.serving.process import predictor_process
from tests.k8s.conftest import find_tool

pytestmark = [pytest.mark.integration, pytest.mark.slow]
# What the v2 answer holds for a model with its out-of-distribution guard.
OUTPUTS = ("probabilities", "label", "melanoma", "in_distribution", "ood_score")

CLIENT = Path(__file__).with_name("oip_client.py")
V1 = "/v1/models/dermaops:predict"


@pytest.fixture(scope="module")
def url(served_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("oip")
    with predictor_process(served_model, root / "home", root / "server.log", []) as url:
        yield url


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
