"""The predictor's HTTP API under generated requests: never a 5xx, never a hang, ready after.

Two property-based tools, bounded here (``DERMAOPS_FUZZ_EXAMPLES`` raises the count for a
longer run): Schemathesis over the OpenAPI document the server itself publishes (every route,
KServe's and ours), and Hypothesis over v1 and v2 bodies built from real, damaged and random
image bytes, which the document cannot describe (v1 bodies are free-form JSON there).
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from dermaops.serving.process import predictor_process

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EXAMPLES = int(os.environ.get("DERMAOPS_FUZZ_EXAMPLES", "0"))
CONFIG = Path(__file__).with_name("schemathesis.toml")


@pytest.fixture(scope="module")
def predictor(served_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("fuzz")
    with predictor_process(served_model, root / "home", root / "predictor.log") as url:
        yield url


def assert_ready(url: str) -> None:
    for path in ("/v2/health/ready", "/v2/models/dermaops/ready"):
        assert httpx.get(url + path, timeout=10).status_code == 200, path


def test_openapi_document_fuzzed_without_server_errors(predictor: str, tmp_path: Path) -> None:
    """Every operation of /openapi.json: examples, boundary values, random and stateful
    sequences; any 5xx or an answer slower than 10 s fails the run. One worker: Hypothesis's
    lambda descriptions parse source, which CPython 3.11's parser cannot do in two threads."""
    st_cli = Path(sys.executable).with_name("st")
    examples = (
        ["--max-examples", str(EXAMPLES)] if EXAMPLES else ["--max-examples", "30", "--seed", "1"]
    )
    command = [str(st_cli), "--config-file", str(CONFIG), "run", f"{predictor}/openapi.json",
               "--checks", "not_a_server_error", "--max-response-time", "10",
               "--request-timeout", "30", "--workers", "1", "--warnings", "off", "--no-color",
               *examples]  # fmt: skip
    run = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False
    )  # in tmp_path: Schemathesis keeps its cache in the working folder
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "passed" in run.stdout and "16 selected" in run.stdout, run.stdout[-3000:]
    assert_ready(predictor)


def _encoded(pixels: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, fmt)
    return buf.getvalue()


@st.composite
def image_bytes(draw: st.DrawFn) -> bytes:
    """A real image, a damaged one (bytes flipped, cut short) or bytes that are none."""
    width, height = draw(st.integers(1, 320)), draw(st.integers(1, 320))
    seed = draw(st.integers(0, 2**16))
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    real = _encoded(pixels, draw(st.sampled_from(["JPEG", "PNG"])))
    kind = draw(st.sampled_from(["real", "flipped", "cut", "random"]))
    if kind == "flipped":
        damaged = bytearray(real)
        flips = st.tuples(st.integers(0, len(real) - 1), st.integers(0, 255))
        for position, value in draw(st.lists(flips, max_size=8)):
            damaged[position] = value
        return bytes(damaged)
    if kind == "cut":
        return real[: draw(st.integers(0, len(real)))]
    if kind == "random":
        return draw(st.binary(max_size=512))
    return real


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _containers(inner: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    return st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8), _containers, max_leaves=6
)


def _pil_reads(data: bytes) -> bool:
    """Whether PIL itself decodes the bytes whole (the oracle: what no decoder reads must be
    refused, never answered)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
    except Exception:  # PIL raises many kinds for damaged files
        return False
    return True


@st.composite
def bodies(draw: st.DrawFn) -> tuple[str, dict[str, object], list[bytes]]:
    """A v1 or v2 request of 1-3 images, sometimes with fields the protocol does not have; and
    the images' bytes."""
    raw = draw(st.lists(image_bytes(), min_size=1, max_size=3))
    images = [_b64(i) for i in raw]
    keys = st.sampled_from(["parameters", "id", "x", "outputs"])
    extra = draw(st.dictionaries(keys, json_values, max_size=2))
    if draw(st.booleans()):
        bare = draw(st.booleans())
        instances = [{"b64": b} if bare else {"image_bytes": {"b64": b}} for b in images]
        return "/v1/models/dermaops:predict", {"instances": instances, **extra}, raw
    shape = draw(st.sampled_from([[len(images)], [len(images), 1], [1], [len(images) + 1]]))
    tensor = {"name": "image", "shape": shape, "datatype": "BYTES", "data": images}
    return "/v2/models/dermaops/infer", {"inputs": [tensor], **extra}, raw


@settings(
    max_examples=EXAMPLES or 200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(request=bodies())
def test_image_bodies_answered_or_refused(
    predictor: str, request: tuple[str, dict[str, object], list[bytes]]
) -> None:
    """An answer, or a 4xx that says what is wrong (KServe's 422 for fields of the wrong type);
    a body with bytes PIL cannot decode is never answered."""
    path, body, raw = request
    headers = {"content-type": "application/json"}
    response = httpx.post(predictor + path, content=json.dumps(body), headers=headers, timeout=30)
    assert response.status_code == 200 or 400 <= response.status_code < 500, response.text[:500]
    if not all(_pil_reads(data) for data in raw):
        assert 400 <= response.status_code < 500, "answered an image no decoder reads"
    if response.status_code != 200:
        problem = response.json()
        assert problem.get("error") or problem.get("detail"), "a refusal says what to fix"


def test_ready_after_the_generated_bodies(predictor: str) -> None:
    assert_ready(predictor)
