"""KFP's retry policies, run by the local runner: a transient ingest failure, a preempted train."""

# No ``from __future__ import annotations``: KFP reads the test pipeline's annotations as types.
import json
import shutil
import threading
import time
from pathlib import Path

import psutil
import pytest
import torch
from kfp import dsl, local

from dermaops.components.build import build
from dermaops.data.loaders import load_raw
from dermaops.pipelines import PipelineSettings
from dermaops.pipelines.training import _configure
from dermaops.train.loop import CHECKPOINT, train
from dermaops.train.settings import TrainSettings
from tests.fault_server import FaultyServer
from tests.integration.mirrors import mirror_dataverse

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_transient_ingest_failure_is_retried(
    http_server: FaultyServer, synth_raw: Path, tmp_path: Path
) -> None:
    mirror_dataverse(http_server, synth_raw, faults={12: ["503"]})
    ingest = build().ingest
    settings = PipelineSettings(ingest_backoff="1s")

    @dsl.pipeline(name="ingest-only")
    def ingest_only(base_url: str) -> None:
        # One download attempt per task: only KFP's retry can get past the 503.
        task = ingest(source="dataverse", base_url=base_url, download_attempts=1)
        _configure(task, "ingest", settings, cached=False)

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path))
    ingest_only(base_url=http_server.url)  # tasks inherit this test's DERMAOPS_HOME
    assert len(http_server.hits("/api/access/datafile/12")) == 2, "failed once, then retried"
    raw = next(tmp_path.glob("ingest-only-*/ingest/raw"))
    assert len(load_raw(raw).records) == 80


def test_a_retried_train_in_a_new_pod_resumes_from_the_checkpoint_volume(
    prepared_small: Path, tmp_path: Path
) -> None:
    """The first attempt is SIGKILLed after an epoch (a preempted node); its output folder is
    emptied before the retry, as a new pod would find it; the retry resumes from the checkpoint
    volume and ends where an uninterrupted run ends."""
    chosen = {"model": "resnet18", "weights": "none", "epochs": 3, "image_size": 32,
              "batch_size": 16, "seed": 5, "export_onnx": False}  # fmt: skip
    whole = tmp_path / "whole"
    train(prepared_small, whole, TrainSettings(**chosen))
    train_op, volume = build().train, tmp_path / "volume"
    settings = PipelineSettings(train_backoff="4s")

    @dsl.pipeline(name="train-only")
    def train_only(checkpoints: str) -> None:
        data = dsl.importer(artifact_uri=str(prepared_small), artifact_class=dsl.Dataset)
        run_id = dsl.PIPELINE_JOB_ID_PLACEHOLDER
        task = train_op(prepared=data.output, arch="resnet18", weights="none", epochs=3,
                        image_size=32, batch_size=16, settings={"seed": 5, "export_onnx": False},
                        checkpoints=checkpoints, kfp_run_id=run_id)  # fmt: skip
        _configure(task, "train", settings)

    preempted: list[dict[str, object]] = []  # the history the killed attempt checkpointed

    def preempt() -> None:
        """Kill the first attempt once it has a checkpoint, and empty its output folder."""
        deadline = time.monotonic() + 240
        while not list(volume.rglob(CHECKPOINT)) and time.monotonic() < deadline:
            time.sleep(0.05)
        # The component's interpreter, not the runner's shell around it: the shell is this
        # process's child, and reaping it here would hide its exit status from the runner.
        (executor,) = [p for p in psutil.Process().children(recursive=True)
                       if p.cmdline()[1:3] == ["-m", "kfp.dsl.executor_main"]]  # fmt: skip
        preempted.extend(torch.load(next(volume.rglob(CHECKPOINT)), weights_only=False)["history"])
        executor.kill()
        executor.wait(timeout=30)
        for folder in tmp_path.glob("train-only-*/train/model"):
            shutil.rmtree(folder)
            folder.mkdir()

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path))
    killer = threading.Thread(target=preempt)
    killer.start()
    train_only(checkpoints=str(volume))
    killer.join()

    assert 1 <= len(preempted) < 3, "killed between the first checkpoint and the end"
    (resumed,) = tmp_path.glob("train-only-*/train/model")
    history = [json.loads((f / "history.json").read_text()) for f in (whole, resumed)]
    assert history[1][: len(preempted)] == preempted, "resumed (its timings kept), not restarted"
    strip = [[{k: v for k, v in h.items() if k != "seconds"} for h in run] for run in history]
    assert strip[0] == strip[1]
    a, b = (torch.load(f / "model" / "weights.pt") for f in (whole, resumed))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not list(volume.rglob(CHECKPOINT)), "the finished run frees the shared volume"
    assert not any(volume.iterdir()), "its folder too"
