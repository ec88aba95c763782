"""Integration fixtures: real servers on loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dermaops.evaluation.run import evaluate
from dermaops.train.baseline import run_baseline
from dermaops.train.loop import train
from dermaops.train.settings import TrainSettings
from tests.fault_server import FaultyServer


@pytest.fixture
def http_server() -> Iterator[FaultyServer]:
    with FaultyServer() as server:
        yield server


@dataclass(frozen=True)
class Trained:
    prepared: Path
    run: Path
    evaluation: Path
    baseline: Path

    def metrics(self) -> dict[str, object]:
        loaded: dict[str, object] = json.loads((self.evaluation / "metrics.json").read_text())
        return loaded


@pytest.fixture(scope="session")
def trained(prepared_small: Path, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """A small model trained, evaluated and baselined: what the register stage is given."""
    root = tmp_path_factory.mktemp("trained")
    settings = TrainSettings(model="resnet18", weights="none", epochs=1, image_size=32,
                             batch_size=16, export_onnx=False)  # fmt: skip
    train(prepared_small, root / "run", settings)
    evaluate(prepared_small, root / "run" / "model", root / "evaluation")
    run_baseline(prepared_small, root / "baseline", trees=20)
    return Trained(prepared_small, root / "run", root / "evaluation", root / "baseline")
