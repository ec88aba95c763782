"""The predictor's model class called directly: load, readiness, batching, model resolution."""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from kserve.errors import InvalidInput

from dermaops.deploy import write_pointer
from dermaops.errors import ConfigError
from dermaops.serving.batching import MicroBatcher
from dermaops.serving.model import DermaOpsModel
from dermaops.serving.resolve import resolve_model
from dermaops.serving.settings import ServingSettings
from dermaops.settings import Home
from dermaops.train.loop import train
from dermaops.train.settings import TrainSettings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def model_dir(prepared_small: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("direct")
    settings = TrainSettings(model="resnet18", weights="none", epochs=1, image_size=32,
                             batch_size=16)  # fmt: skip
    train(prepared_small, root / "run", settings)
    return root / "run" / "model"


def _payload(*images: bytes) -> dict[str, object]:
    return {"instances": [{"image_bytes": {"b64": base64.b64encode(i).decode()}} for i in images]}


def test_ready_only_after_load_and_same_answer_on_both_backends(
    model_dir: Path, tmp_path: Path, jpeg_bytes: Callable[..., bytes]
) -> None:
    answers = {}
    for backend in ("onnx", "torch"):
        settings = ServingSettings(model_uri=str(model_dir), backend=backend, inference_log=False)
        model = DermaOpsModel("dermaops", settings, Home(tmp_path))
        assert not model.ready
        assert model.load() and model.ready
        assert model.backend.name == ("onnxruntime" if backend == "onnx" else "torch-cpu")
        result, _ = asyncio.run(model(_payload(jpeg_bytes(600, 450))))
        answers[backend] = result["predictions"][0]["probabilities"]
        assert (model.temperature, model.threshold) == (1.0, 0.5), "no calibration.json here"
        model.stop()
    onnx, torch_ = (np.array(list(answers[b].values())) for b in ("onnx", "torch"))
    assert np.abs(onnx - torch_).max() < 1e-4


def test_a_missing_model_never_becomes_ready(tmp_path: Path) -> None:
    model = DermaOpsModel("dermaops", ServingSettings(model_uri=str(tmp_path / "gone")))
    with pytest.raises(ConfigError, match="does not exist"):
        model.load()
    assert not model.ready
    with pytest.raises(ConfigError, match="no deployed model"):
        resolve_model("", Home(tmp_path))
    with pytest.raises(ConfigError, match="s3://"):
        resolve_model("s3://bucket/model", Home(tmp_path))


def test_the_local_pointer_names_what_to_serve(model_dir: Path, tmp_path: Path) -> None:
    home = Home(tmp_path)
    write_pointer(home.serving, model_dir.as_uri(), "dermaops", "7")
    assert resolve_model("", home) == (model_dir, "7")
    (home.serving / "current.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not a deployment pointer"):
        resolve_model("", home)


def test_bad_requests_are_invalid_input(model_dir: Path, tmp_path: Path) -> None:
    model = DermaOpsModel("dermaops", ServingSettings(model_uri=str(model_dir)), Home(tmp_path))
    model.load()
    with pytest.raises(InvalidInput, match=r"instances\[0\]: not valid base64"):
        asyncio.run(model({"instances": [{"b64": "%%"}]}))
    model.stop()


def test_micro_batcher_joins_concurrent_requests_and_splits_answers() -> None:
    calls: list[int] = []
    lock = threading.Lock()

    def forward(x: torch.Tensor) -> np.ndarray:
        with lock:
            calls.append(len(x))
        return x.reshape(len(x), -1).numpy()[:, :1] * 10

    async def many() -> list[np.ndarray]:
        batcher = MicroBatcher(forward, max_batch=8, max_wait_ms=50, executor=pool)
        inputs = [torch.full((n, 1), float(i)) for i, n in enumerate([1, 2, 1, 3])]
        return await asyncio.gather(*(batcher(x) for x in inputs))

    with ThreadPoolExecutor(2) as pool:
        results = asyncio.run(many())
    assert sum(calls) == 7 and len(calls) < 4, f"batched into {calls}"
    assert [r.ravel().tolist() for r in results] == [[0.0], [10.0, 10.0], [20.0], [30.0] * 3]
