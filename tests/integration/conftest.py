"""Integration fixtures: real servers on loopback, and a model trained like the demo's."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from dermaops.data.prepare import PrepareSettings, prepare
from dermaops.data.synth import SynthSettings, synthesize
from tests.fault_server import FaultyServer

if TYPE_CHECKING:  # torch and the evaluation load with the fixture that trains, not here
    from dermaops.evaluation.result import EvaluationMetrics
    from dermaops.train.loop import TrainResult


@pytest.fixture
def http_server() -> Iterator[FaultyServer]:
    with FaultyServer() as server:
        yield server


@pytest.fixture(scope="session")
def raw_1000(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated set of 1,000 images (seed 11) in the Kaggle layout (read-only)."""
    out = tmp_path_factory.mktemp("raw-1000") / "raw"
    synthesize(out, SynthSettings(n=1000, seed=11, workers=2))
    return out


@pytest.fixture(scope="session")
def prepared_1000(raw_1000: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 1,000 images prepared (read-only)."""
    out = tmp_path_factory.mktemp("prepared-1000") / "prepared"
    prepare(raw_1000, out, PrepareSettings(workers=2))
    return out


@dataclass(frozen=True)
class DemoLike:
    """A ResNet-18 trained from scratch like the demo's, evaluated (which fits its
    out-of-distribution guard) and assembled as registration stores it (read-only)."""

    raw: Path
    prepared: Path
    run: Path
    evaluation: Path
    model: Path  # the folder registration stores
    trained: TrainResult
    metrics: EvaluationMetrics  # what evaluate() returned


@pytest.fixture(scope="session")
def demo_like(
    raw_1000: Path, prepared_1000: Path, tmp_path_factory: pytest.TempPathFactory
) -> DemoLike:
    """Ten epochs at 64 px on the 1,000 images (about two minutes on two cores): one training
    that the learning test and the guard's tests share."""
    from dermaops.evaluation.run import evaluate
    from dermaops.model.artifact import assemble
    from dermaops.train.loop import train
    from dermaops.train.settings import TrainSettings

    root = tmp_path_factory.mktemp("demo-like")
    settings = TrainSettings(model="resnet18", weights="none", epochs=10, image_size=64,
                             batch_size=32)  # fmt: skip
    trained = train(prepared_1000, root / "run", settings)
    metrics = evaluate(prepared_1000, root / "run" / "model", root / "evaluation")
    assemble(root / "run" / "model", prepared_1000, root / "evaluation", root / "model")
    return DemoLike(raw_1000, prepared_1000, root / "run", root / "evaluation", root / "model",
                    trained, metrics)  # fmt: skip
