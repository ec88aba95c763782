"""Training and evaluation for real, on small generated sets, on the CPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dermaops.evaluation.result import EvaluationMetrics
from dermaops.model.factory import build_model
from dermaops.train.loop import CHECKPOINT, RunFolderError, plan_phases, train
from dermaops.train.settings import TrainSettings
from tests.integration.conftest import DemoLike

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TINY = TrainSettings(
    model="resnet18",
    weights="none",
    epochs=3,
    image_size=32,
    batch_size=16,
    seed=5,
    export_onnx=False,
)


def test_overfits_one_batch() -> None:
    """The model, loss and optimiser can drive 16 fixed images to (almost) zero loss."""
    torch.manual_seed(0)
    model = build_model("resnet18", 7)
    x, y = torch.randn(16, 3, 32, 32), torch.arange(16) % 7
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(60):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    assert loss.item() < 0.05


def test_learns_well_above_chance_and_evaluates(demo_like: DemoLike) -> None:
    """Ten epochs from scratch on 1,000 generated images at 64 px (the training the guard's
    tests share), then evaluated on the test split."""
    metrics, run, evaluation = demo_like.metrics, demo_like.run, demo_like.evaluation
    # Chance is 1/7 balanced accuracy; a class-prior guess has macro-F1 about 0.12.
    assert metrics.balanced_accuracy > 0.3
    assert metrics.f1_macro > 0.25
    assert demo_like.trained.best_val_f1 > 0.25
    written = EvaluationMetrics.read(evaluation)  # what was written reads back
    assert written.model_dump(mode="json") == metrics.model_dump(mode="json")
    for name in ("confusion_matrix.png", "reliability.png", "gradcam_melanoma.png", "report.md"):
        assert (evaluation / name).stat().st_size > 0
    for name in (
        "history.json",
        "curves.png",
        "model/weights.pt",
        "model/model.json",
        "model/labels.json",
        "model/model.onnx",
    ):
        assert (run / name).is_file()
    meta = json.loads((run / "model" / "model.json").read_text())
    assert meta["onnx"]["parity_max_abs_diff"] <= 1e-4
    assert meta["preprocessing"]["image_size"] == 64 and meta["data"]["generated"] is True
    assert "GENERATED DATA" in (evaluation / "report.md").read_text()


def test_baseline_is_scored_like_the_cnn(prepared_1000: Path, tmp_path: Path) -> None:
    from dermaops.train.baseline import run_baseline

    metrics = run_baseline(prepared_1000, tmp_path / "rf", trees=50)
    assert metrics.f1_macro > 0.2 and metrics.model.arch.startswith("random_forest")
    assert EvaluationMetrics.read(tmp_path / "rf") == metrics and metrics.ood is None
    assert (tmp_path / "rf" / "random_forest.joblib").is_file()
    assert (tmp_path / "rf" / "report.md").read_text().startswith("# Evaluation report")


def test_sigkill_then_resume_ends_where_an_uninterrupted_run_ends(
    prepared_small: Path, tmp_path: Path
) -> None:
    whole = train(prepared_small, tmp_path / "whole", TINY)

    killed = tmp_path / "killed"
    dermaops = str(Path(sys.executable).with_name("dermaops"))
    cmd = [dermaops, "train", "--data", str(prepared_small), "--out", str(killed),
           "--model", "resnet18", "--weights", "none", "--epochs", "3", "--image-size", "32",
           "--batch-size", "16", "--seed", "5", "--no-export-onnx"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while (
        not (killed / CHECKPOINT).exists() and time.monotonic() < deadline and proc.poll() is None
    ):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = torch.load(killed / CHECKPOINT, weights_only=False)["epoch"]
    assert 1 <= done < 3, "the kill must land between the first checkpoint and the end"

    resumed = train(prepared_small, killed, TINY, resume=True)
    assert resumed.best_val_f1 == whole.best_val_f1 and resumed.best_epoch == whole.best_epoch
    history = [
        json.loads((folder / "history.json").read_text()) for folder in (tmp_path / "whole", killed)
    ]
    strip = [[{k: v for k, v in h.items() if k != "seconds"} for h in run] for run in history]
    assert strip[0] == strip[1]
    a, b = (torch.load(f / "model" / "weights.pt") for f in (tmp_path / "whole", killed))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_run_folder_guards(prepared_small: Path, tmp_path: Path) -> None:
    with pytest.raises(RunFolderError, match="nothing to resume"):
        train(prepared_small, tmp_path / "new", TINY, resume=True)
    one = TINY.model_copy(update={"epochs": 1})
    train(prepared_small, tmp_path / "run", one)
    with pytest.raises(RunFolderError, match="already holds a run"):
        train(prepared_small, tmp_path / "run", one)
    with pytest.raises(RunFolderError, match="other settings"):
        train(prepared_small, tmp_path / "run", one.model_copy(update={"seed": 9}), resume=True)


def test_phase_plan() -> None:
    pretrained = plan_phases(TrainSettings(epochs=10, weights="imagenet"))
    assert [(p.name, p.epochs) for p in pretrained] == [("head", 3), ("finetune", 7)]
    assert pretrained[1].lr < pretrained[0].lr
    assert [(p.name, p.epochs) for p in plan_phases(TINY)] == [("full", 3)]
    model = build_model("resnet18", 7)
    head, finetune = (len(p.trainable(model)) for p in pretrained)
    assert head == 2 and finetune > head


def test_class_weighted_loss_and_label_smoothing_each_reach_the_loss(
    prepared_small: Path, tmp_path: Path
) -> None:
    """The same shuffled batches plain, plain again, with the class weights, and with label
    smoothing: the repeat ends with the plain run's weights, and each setting alone moves them
    (here the weights 4.4 %, the smoothing 0.9 %; a loss that ignored one would leave its run
    equal to the plain one, and the class weights' divisor alone moves them 0.4 %)."""
    runs = {}
    for name, extra in (("plain", {}), ("again", {}), ("weighted", {"balance": "loss"}),
                        ("smoothed", {"label_smoothing": 0.1})):  # fmt: skip
        settings = TINY.model_copy(update={"epochs": 1, "balance": "none", **extra})
        assert train(prepared_small, tmp_path / name, settings).epochs_run == 1
        runs[name] = torch.load(tmp_path / name / CHECKPOINT, weights_only=False)["model"]
    keys = [k for k, v in runs["plain"].items() if v.dtype.is_floating_point]
    size = sum(float(runs["plain"][k].norm() ** 2) for k in keys) ** 0.5

    def moved(name: str) -> float:
        return sum(float((runs[name][k] - runs["plain"][k]).norm() ** 2) for k in keys) ** 0.5

    assert moved("again") / size < 1e-5, "the comparison needs a deterministic run"
    assert moved("weighted") / size > 0.01, "the class weights do not reach the loss"
    assert moved("smoothed") / size > 0.002, "label smoothing does not reach the loss"
