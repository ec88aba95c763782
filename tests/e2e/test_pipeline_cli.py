"""The KFP pipelines run locally through `dermaops pipeline run --local`, with MLflow on sqlite."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
Cli = Callable[..., subprocess.CompletedProcess[str]]

TINY = [
    "--n", "120", "--epochs", "1", "--param", "image_size=32", "--param", "batch_size=16",
    "--param", "min_f1_macro=0", "--param", "min_melanoma_sensitivity=0", "--param", "max_ece=1",
]  # fmt: skip


def _versions(cli: Cli) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = json.loads(cli("registry", "list", "--json").stdout)
    return rows


def _runs(home: Path, kind: str) -> list[Path]:
    return sorted((home / "pipelines").glob(f"dermaops-{kind}-*"))


@pytest.mark.timeout(600)  # three pipeline runs, each quantizing and judging an INT8 graph
def test_train_rerun_rollback_and_retrain_with_feedback(
    cli: Cli, dermaops_home: Path, tmp_path: Path, jpeg_bytes: Callable[..., bytes]
) -> None:
    first = cli("pipeline", "run", "--local", *TINY)
    assert "MLflow run:" in first.stdout and "champion:        version 1" in first.stdout
    assert "dermaops registry card 1" in first.stdout
    card = cli("registry", "card", "1").stdout
    assert card.startswith("# Model card: dermaops version 1") and "## Subgroups" in card
    kfp_card = _runs(dermaops_home, "training")[-1] / "register" / "card"
    assert card == kfp_card.read_text() + "\n", "the KFP output and MLflow hold one card"
    pointer = json.loads((dermaops_home / "serving" / "current.json").read_text())
    assert pointer["version"] == "1" and pointer["model_uri"].startswith("file://")

    cli("pipeline", "run", "--local", *TINY)
    second_run = _runs(dermaops_home, "training")[-1]
    tasks = {p.name for p in second_run.iterdir()}
    assert {"train", "register"} <= tasks
    assert not {"ingest", "prepare"} & tasks, "a rerun with the same inputs skips them"
    rows = _versions(cli)
    assert [(r["version"], r["aliases"]) for r in rows] == [
        ("2", ["champion"]),
        ("1", ["previous"]),
    ]
    served = str(rows[0]["last_event"])  # the deploy stage's reconcile, named by its run
    assert served.startswith("served on the local predictor")
    assert "(by KFP run " in served and "of the training pipeline" in served

    rolled = cli("registry", "rollback", "--reason", "drift in clinic")
    assert "from version 2 to version 1" in rolled.stdout
    assert "the local predictor: pointed" in rolled.stdout, "the champion is served after it"
    pointer = json.loads((dermaops_home / "serving" / "current.json").read_text())
    assert pointer["version"] == "1"
    rows = _versions(cli)
    assert rows[1]["aliases"] == ["champion"] and "drift in clinic" in str(rows[0]["last_event"])
    assert "version 1 is served" in cli("registry", "reconcile").stdout

    feedback = tmp_path / "feedback"
    (feedback / "images").mkdir(parents=True)
    (feedback / "images" / "f1.jpg").write_bytes(jpeg_bytes(600, 450))
    pd.DataFrame({"feedback_id": ["f1"], "image_file": ["images/f1.jpg"], "dx": ["mel"]}).to_csv(
        feedback / "feedback.csv", index=False
    )
    cli("pipeline", "run", "--local", "--kind", "retraining", "--feedback", str(feedback), *TINY)
    retrain = _runs(dermaops_home, "retraining")[-1]
    ingested = json.loads((retrain / "ingest" / "executor_output.json").read_text())
    metadata = ingested["artifacts"]["raw"]["artifacts"][0]["metadata"]
    assert metadata["feedback_images"] == 1 and metadata["kept_champion_split"] is True
    split = pd.read_csv(next(retrain.glob("prepare/prepared/split_info.csv")))
    first_run = _runs(dermaops_home, "training")[0]
    first_split = pd.read_csv(next(first_run.glob("prepare/*/split_info.csv")))
    test_ids = set(first_split.loc[first_split["split"] == "test", "image_id"])
    assert set(split.loc[split["split"] == "test", "image_id"]) == test_ids
    assert split.set_index("image_id").loc["FB_f1", "split"] in ("train", "val")


def test_failing_gate_stops_before_register_runs_once_and_is_named(
    cli: Cli, dermaops_home: Path
) -> None:
    failed = cli("pipeline", "run", "--local", *TINY, "--param", "min_f1_macro=1.0", check=False)
    output = failed.stdout + failed.stderr
    assert failed.returncode == 3 and "Inner task failed: 'gate'" in failed.stderr
    assert output.count("stage gate failed") == 1, "no retry around the gate"
    run = _runs(dermaops_home, "training")[-1]
    assert not (run / "register").exists() and not (run / "promote").exists()
    summary = (run / "notify" / "summary").read_text()
    assert "Failed stage: **gate**" in summary and "macro-F1" in summary
    assert _versions(cli) == []


@pytest.mark.timeout(600)
def test_the_demos_rollout_promotes_the_new_version_on_paired_answers(
    cli: Cli, dermaops_home: Path
) -> None:
    """``make demo``'s rollout (scripts/demo_rollout.sh): the run registered again by hand,
    promoted, served in shadow beside version 1, judged on 60 paired images, promoted."""
    import os
    import sys

    from dermaops.net import free_port

    cli("pipeline", "run", "--local", *TINY)
    lenient = {"DERMAOPS_GATE_MIN_F1_MACRO": "0", "DERMAOPS_GATE_MIN_MELANOMA_SENSITIVITY": "0",
               "DERMAOPS_GATE_MAX_ECE": "1"}  # the gate TINY's pipeline ran with  # fmt: skip
    script = Path(__file__).parents[2] / "scripts" / "demo_rollout.sh"
    done = subprocess.run(
        [str(script), str(Path(sys.executable).parent), str(free_port()), str(free_port())],
        env=os.environ | lenient | {"DERMAOPS_HOME": str(dermaops_home)},
        capture_output=True, text=True, timeout=500, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "rollout started in shadow" in done.stderr + out
    assert "promote: promoted in full (every check passed)" in out
    assert "melanoma_flips (critical)" in out and "0 flags lost, 0 gained" in out
    pointer = json.loads((dermaops_home / "serving" / "current.json").read_text())
    assert pointer["version"] == "2"
    rows = _versions(cli)
    assert rows[0]["version"] == "2" and "rollout promoted version 2" in str(rows[0]["last_event"])
