"""``bench rollout``: a worse challenger made from a scored test split, and how soon each way of
judging it catches it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from dermaops.cli.app import app
from dermaops.evaluation.result import EvaluationMetrics
from dermaops.rollout.power import MEL, bench_rollout, challenger_flags, flags_of
from tests.formats import FORMATS


@pytest.fixture
def evaluation(tmp_path: Path) -> Path:
    """A scored test split of 400 images, 100 melanomas, 90 of them flagged."""
    folder = tmp_path / "eval"
    folder.mkdir()
    shutil.copy(FORMATS / "metrics_evaluate.json", folder / "metrics.json")
    threshold = EvaluationMetrics.read(folder).melanoma.threshold
    labels = np.array([MEL] * 100 + [5] * 300)
    probs = np.full((400, 7), 0.01)
    probs[:90, MEL] = threshold + 0.3  # flagged melanomas
    probs[100:140, MEL] = threshold + 0.1  # flagged naevi
    probs[:, 5] = 1 - probs.sum(axis=1) + probs[:, 5]
    np.savez(folder / "test_predictions.npz", probs=probs, labels=labels)
    return folder


def test_the_challenger_loses_exactly_its_share_of_melanomas_and_differs_alike(
    evaluation: Path,
) -> None:
    stable, melanoma = flags_of(evaluation)
    assert (int(stable.sum()), int(melanoma.sum()), int((stable & melanoma).sum())) == (
        130,
        100,
        90,
    )
    rng = np.random.default_rng(1)
    quiet = challenger_flags(stable, melanoma, 0.10, 0.0, rng)
    assert int((stable & ~quiet).sum()) == 10 and not (~stable & quiet).any()
    assert int((stable & ~quiet & melanoma).sum()) == 10, "only flagged melanomas lose it"
    noisy = challenger_flags(stable, melanoma, 0.0, 0.05, rng)
    assert int((stable & ~noisy).sum()) == int((~stable & noisy).sum()) == 10
    with pytest.raises(ValueError, match="flags 90 melanomas; cannot lose 95"):
        challenger_flags(stable, melanoma, 0.95, 0.0, rng)


def test_paired_shadow_catches_a_worse_challenger_with_far_fewer_requests(
    evaluation: Path,
) -> None:
    result = bench_rollout(evaluation, drop=0.10, runs=60, requests=4000, seed=3)
    needed = result["requests_needed"]
    assert needed["shadow_paired"] is not None and needed["shadow_paired"] <= 1000
    canary = needed["canary_test_only"]
    assert canary is None or canary > 2 * needed["shadow_paired"]
    caught = result["caught"]["shadow_paired"]
    assert caught == sorted(caught), "a rollout caught stays caught as requests grow"
    for way in ("canary_check", "canary_test_only"):
        assert all(a <= b for a, b in zip(result["caught"][way], caught, strict=True))


def test_an_equal_challenger_is_rarely_caught(evaluation: Path) -> None:
    result = bench_rollout(evaluation, drop=0.0, noise=0.05, runs=100, requests=4000, seed=4)
    assert max(max(shares) for shares in result["caught"].values()) <= 0.08
    assert set(result["requests_needed"].values()) == {None}


def test_the_command_prints_each_way_and_keeps_the_result(evaluation: Path, tmp_path: Path) -> None:
    out = tmp_path / "rollout.json"
    args = ["bench", "rollout", "--evaluation", str(evaluation), "--runs", "20",
            "--requests", "2000", "--json", str(out)]  # fmt: skip
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    assert "shadow_paired: 80% of the rollouts caught by" in done.output
    assert "generated data, not clinical" in done.output
    saved = json.loads(out.read_text())
    assert saved["runs"] == 20 and len(saved["requests"]) == len(saved["caught"]["shadow_paired"])
    missing = CliRunner().invoke(
        app, ["bench", "rollout", "--evaluation", str(tmp_path)], env={"COLUMNS": "300"}
    )
    assert missing.exit_code == 2 and "test_predictions.npz" in missing.output
