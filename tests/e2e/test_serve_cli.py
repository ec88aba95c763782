"""serve, predict and bench serve through the installed `dermaops` command."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from unittest.mock import ANY

import pytest

from dermaops.cpus import cpu_budget
from dermaops.deploy import write_pointer
from dermaops.net import free_port
from dermaops.settings import Home
from dermaops.train.loop import train
from dermaops.train.settings import TrainSettings
from tests.e2e.conftest import DERMAOPS

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def deployed(prepared_small: Path, dermaops_home: Path, tmp_path: Path) -> Path:
    """A small model, deployed the way the pipeline's deploy stage does it locally."""
    settings = TrainSettings(model="resnet18", weights="none", epochs=1, image_size=32,
                             batch_size=16)  # fmt: skip
    train(prepared_small, tmp_path / "run", settings)
    model = tmp_path / "run" / "model"
    write_pointer(Home(dermaops_home).serving, model.as_uri(), "dermaops", "3")
    return model


def test_serve_the_deployed_model_and_predict(
    cli: Cli, deployed: Path, dermaops_home: Path, jpeg_bytes: Callable[..., bytes], tmp_path: Path
) -> None:
    port = free_port()
    env = os.environ | {"DERMAOPS_HOME": str(dermaops_home)}
    server = subprocess.Popen(
        [str(DERMAOPS), "serve", "--http-port", str(port)], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        image = tmp_path / "lesion.jpg"
        image.write_bytes(jpeg_bytes(600, 450))
        url = f"http://127.0.0.1:{port}"
        table = cli("predict", str(image), "--url", url, "--wait", "120")
        assert "model dermaops version 3" in table.stdout and "lesion.jpg:" in table.stdout
        answer = json.loads(cli("predict", str(image), "--url", url, "--json").stdout)
        assert len(answer["predictions"]) == 1
        refused = cli("predict", str(tmp_path / "lesion.jpg"), "--url", url, "--model-name", "x",
                      check=False)  # fmt: skip
        assert refused.returncode == 1 and "refused the request (404)" in refused.stderr
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_bench_serve_prints_a_ratio_and_writes_json(
    cli: Cli, deployed: Path, dermaops_home: Path
) -> None:
    cores = sorted(os.sched_getaffinity(0))
    client = 1 if len(cores) > 1 else 0  # a core of the client's own, where there are two
    result = cli("bench", "serve", "--requests", "10", "--concurrency", "1,4", "--profile",
                 "--client-cores", str(client))  # fmt: skip
    assert "x the in-process decode + forward" in result.stdout and "0 errors" in result.stdout
    saved = json.loads((dermaops_home / "bench" / "serve.json").read_text())
    # The predictor and the reference ran on the cores the client left, and sized by them (or
    # by a CPU limit over this whole test, where that is less)
    measured = min(len(cores) - client, cpu_budget().threads)
    assert saved["predictor_threads"] == measured and saved["in_process"]["threads"] == measured
    if client:
        assert saved["cores"] == {"shared": False, "client": cores[:1], "measured": cores[1:],
                                  "quota": cpu_budget().source, "described": ANY}  # fmt: skip
        assert f"client on cores {cores[0]}; predictor and in-process reference" in result.stdout
    assert f"sized its worker threads for {measured} CPU" in result.stdout
    assert " ms more; 0 errors" in result.stdout
    # py-spy sampled the real predictor: every step of the request path shows, with its share
    sampled = saved["profile"]
    assert sampled["requests"] == 1000 and sampled["p50_ms_sampled"] > 0
    assert {"decode", "forward", "scoring", "answer", "statistics", "event loop"} \
        <= set(sampled["ms_per_request"])  # fmt: skip
    assert sum(sampled["share"].values()) == pytest.approx(1, abs=0.01)
    assert "work per request, sampled by py-spy over 1000 requests" in result.stdout
    assert [level["concurrency"] for level in saved["served"]] == [1, 4]
    assert saved["ratio_p50_vs_in_process"] > 0 and saved["in_process"]["p50_ms"] > 0
    assert saved["precision"] == "fp32"  # no INT8 graph registered with it
    assert set(saved["server_phases_ms"]) == {"preprocess", "predict", "postprocess"}
    assert "inside the predictor (mean ms): preprocess" in result.stdout
    too_many = cli("bench", "serve", "--client-cores", "999", check=False)
    assert too_many.returncode == 1 and "999 cores for the client: choose 0 (shared) to" \
        in too_many.stderr  # fmt: skip
    if client:
        own = cli("bench", "serve", "--backend", "torch", "--client-cores", "1", check=False)
        assert own.returncode == 1 and "torch-cpu sizes its own" in own.stderr, own.stderr
    refused = cli("bench", "serve", "--precision", "compare", check=False)
    assert refused.returncode == 1, refused.stderr
    assert "has no INT8 graph to compare: it was registered without a precision decision" \
        in refused.stderr  # fmt: skip


def test_bench_soak_holds_and_writes_the_figures(
    cli: Cli, deployed: Path, dermaops_home: Path, tmp_path: Path
) -> None:
    """A short soak of the deployed model: every kind of bad payload tried and refused with a
    4xx, every good one answered, figures over time, ready afterwards."""
    out = tmp_path / "soak.json"
    result = cli("bench", "soak", "--requests", "600", "--concurrency", "4", "--bad-share", "0.3",
                 "--warmup", "50", "--json", str(out))  # fmt: skip
    assert "0 good-request errors, 0 bad requests not 4xx, 0 connection errors" in result.stdout
    figures = json.loads(out.read_text())
    for key in ("requests", "good_errors", "bad_not_4xx", "connection_errors", "p50_ms",
                "p99_ms", "rss_growth"):  # fmt: skip
        assert key in figures, key
    assert figures["requests"] == 600 and figures["held"] and figures["ready_after"]
    assert len(figures["windows"]) == 10 and figures["version"] == "3"
    bad_kinds = set(figures["kinds"]) - {"v1", "v1-two-images", "v2"}
    assert len(bad_kinds) == 13  # each kind of bad payload was sent at least once
