"""baseline, train, evaluate, gate and bench train through the installed `dermaops` script."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from dermaops.data.prepare import PrepareSettings, prepare

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def prepared(synth_raw: Path, tmp_path: Path) -> Path:
    out = tmp_path / "prepared"
    prepare(synth_raw, out, PrepareSettings(workers=2, max_share_gap=0.5))
    return out


def test_train_evaluate_gate(cli: Cli, prepared: Path, tmp_path: Path) -> None:
    run, report = tmp_path / "run", tmp_path / "eval"
    trained = cli(
        "train", "--data", str(prepared), "--out", str(run), "--model", "resnet18",
        "--weights", "none", "--epochs", "2", "--image-size", "32", "--batch-size", "16",
    )  # fmt: skip
    assert "trained 2 epochs" in trained.stdout
    assert json.loads((run / "model" / "model.json").read_text())["onnx"]["file"] == "model.onnx"
    evaluated = cli("evaluate", "--data", str(prepared), "--run", str(run), "--out", str(report))
    assert "test macro-F1" in evaluated.stdout and "GENERATED DATA" in evaluated.stdout
    subgroups = json.loads((report / "metrics.json").read_text())["subgroups"]
    assert {"overall", "groups", "gaps"} <= set(subgroups)
    assert set(subgroups["groups"]) == {"sex", "age_band", "site"}
    assert "ci95" in subgroups["overall"] and "## Subgroups" in (report / "report.md").read_text()
    strict = cli("gate", "--metrics", str(report / "metrics.json"), check=False)
    assert strict.returncode == 1 and "gate failed: macro-F1" in strict.stderr
    lenient = tmp_path / "gate.yaml"
    lenient.write_text("min_f1_macro: 0\nmin_melanoma_sensitivity: 0\nmax_ece: 1\n")
    passed = cli("gate", "--metrics", str(report / "metrics.json"), "--config", str(lenient))
    assert passed.stdout.strip() == "gate passed"
    again = cli("train", "--data", str(prepared), "--out", str(run), check=False)
    assert again.returncode == 1 and "already holds a run" in again.stderr


def test_baseline_and_bench_train(cli: Cli, prepared: Path, tmp_path: Path) -> None:
    base = cli("baseline", "--data", str(prepared), "--out", str(tmp_path / "rf"), "--trees", "20")
    assert "baseline test macro-F1" in base.stdout
    out = tmp_path / "bench.json"
    cli("bench", "train", "--data", str(prepared), "--model", "resnet18", "--image-size", "32",
        "--batch-size", "8", "--steps", "2", "--json", str(out))  # fmt: skip
    result = json.loads(out.read_text())
    assert result["ratio"] > 0 and result["raw_images_per_s"] > 0 and result["device"] == "cpu"
