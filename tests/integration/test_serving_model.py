"""The predictor's model class called directly: load, readiness, batching, model resolution."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from kserve.errors import InvalidInput

from dermaops.deploy import write_pointer
from dermaops.errors import ConfigError
from dermaops.model.uri import resolve_model
from dermaops.serving.batching import MicroBatcher
from dermaops.serving.model import DermaOpsModel
from dermaops.serving.settings import ServingSettings
from dermaops.settings import Home

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def model_dir(served_model: Path) -> Path:
    return served_model


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
        calibration = json.loads((model_dir / "calibration.json").read_text())
        artifact = model.artifact
        assert artifact.temperature == calibration["temperature"]
        assert artifact.melanoma_threshold == calibration["melanoma_threshold"]
        assert artifact.projection is not None and artifact.projection.components.shape == (3, 512)
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


def test_micro_batched_on_cpu_answers_as_one_at_a_time_and_refuses_a_bad_image(
    model_dir: Path, tmp_path: Path, jpeg_bytes: Callable[..., bytes]
) -> None:
    """``max_batch`` on the CPU: decoded in a hop of their own, forwarded together, each answer
    its own image's; a bad image among them is a 400, not an inference failure."""
    images = [jpeg_bytes(*size) for size in ((600, 450), (450, 600), (800, 300), (300, 300))]
    answers: dict[int, list[float]] = {}
    for max_batch in (0, 4):
        settings = ServingSettings(model_uri=str(model_dir), backend="onnx", inference_log=False,
                                   max_batch=max_batch, max_wait_ms=20)  # fmt: skip
        model = DermaOpsModel("dermaops", settings, Home(tmp_path / str(max_batch)))
        model.load()

        async def together(m: DermaOpsModel = model) -> list[object]:
            calls = [m(_payload(image)) for image in images]
            return await asyncio.gather(*calls, m({"instances": [{"b64": "%%"}]}),
                                        return_exceptions=True)  # fmt: skip

        *answered, refused = asyncio.run(together())
        assert isinstance(refused, InvalidInput) and "not valid base64" in str(refused)
        answers[max_batch] = [
            p for result, _ in answered for p in result["predictions"][0]["probabilities"].values()
        ]
        model.stop()
    assert np.abs(np.array(answers[0]) - np.array(answers[4])).max() < 1e-5
    assert len({round(p, 4) for p in answers[4][::7]}) == 4  # four images, four answers


def test_micro_batcher_joins_concurrent_requests_and_splits_answers() -> None:
    calls: list[int] = []
    lock = threading.Lock()

    def forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with lock:
            calls.append(len(x))
        values = x.reshape(len(x), -1)[:, :1]
        return values * 10, values + 1

    async def many() -> list[tuple[np.ndarray, ...]]:
        batcher = MicroBatcher(forward, max_batch=8, max_wait_ms=50, executor=pool)
        inputs = [np.full((n, 1), float(i), np.float32) for i, n in enumerate([1, 2, 1, 3])]
        return await asyncio.gather(*(batcher(x) for x in inputs))

    with ThreadPoolExecutor(2) as pool:
        results = asyncio.run(many())
    assert sum(calls) == 7 and len(calls) < 4, f"batched into {calls}"
    assert [r[0].ravel().tolist() for r in results] == [[0.0], [10.0, 10.0], [20.0], [30.0] * 3]
    assert [r[1].ravel().tolist() for r in results] == [[1.0], [2.0, 2.0], [3.0], [4.0] * 3]


def test_images_are_kept_only_when_asked_and_then_without_metadata(
    model_dir: Path, tmp_path: Path
) -> None:
    from dermaops.data.privacy import has_metadata
    from tests.unit.test_privacy import _photo

    photo = _photo(size=(600, 450))
    for retain in (False, True):
        settings = ServingSettings(model_uri=str(model_dir), inference_log=False,
                                   retain_images=retain)  # fmt: skip
        model = DermaOpsModel("dermaops", settings, Home(tmp_path / str(retain)))
        model.load()
        asyncio.run(model(_payload(photo, photo)))
        model.stop()
        kept = sorted((tmp_path / str(retain) / "retained").rglob("*.jpg"))
        assert len(kept) == (2 if retain else 0)
        for path in kept:
            assert not has_metadata(path.read_bytes()) and b"SN-0042" not in path.read_bytes()


def test_forwarding_to_a_monitor_needs_its_token(model_dir: Path, tmp_path: Path) -> None:
    settings = ServingSettings(model_uri=str(model_dir), monitor_url="http://127.0.0.1:9")
    model = DermaOpsModel("dermaops", settings, Home(tmp_path))
    with pytest.raises(ConfigError, match="DERMAOPS_MONITOR_TOKEN"):
        model.load()
