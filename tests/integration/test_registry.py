"""The MLflow registry on sqlite: register, promote through the gate, roll back, load."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import mlflow.pyfunc
import pandas as pd
import pytest

from dermaops.data.prepare import PrepareSettings, prepare
from dermaops.errors import ConfigError
from dermaops.evaluation.gate import GateThresholds
from dermaops.labels import CLASSES
from dermaops.net import free_port, wait_until_ready
from dermaops.registry import Registry
from dermaops.registry.card import fetch_card
from dermaops.registry.client import RegistryError
from dermaops.registry.locks import promotion_lock
from dermaops.registry.model import download, log_training_run
from dermaops.registry.promotion import (
    alias_version,
    promote_challenger,
    promote_stored,
    rollback,
    versions,
)
from dermaops.registry.tags import AUDIT_PREFIX
from tests.conftest import Trained

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LENIENT = GateThresholds(min_f1_macro=0.0, min_melanoma_sensitivity=0.0, max_ece=1.0)


def _register(reg: Registry, t: Trained, kfp_run_id: str) -> str:
    run = reg.pipeline_run(kfp_run_id, "training")
    return log_training_run(reg, run.info.run_id, t.prepared, t.run, t.evaluation, t.baseline,
                            thresholds=LENIENT)  # fmt: skip


def _audit(reg: Registry, version: str) -> list[str]:
    tags = reg.client.get_model_version(reg.model_name, version).tags
    return [tags[k] for k in sorted(tags) if k.startswith(AUDIT_PREFIX)]


def test_register_promote_and_roll_back(
    trained: Trained, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DERMAOPS_ACTOR", "test-suite")
    reg = Registry()
    first = _register(reg, trained, "kfp-1")
    assert alias_version(reg, "challenger") == first
    run = reg.client.get_run(reg.pipeline_run("kfp-1").info.run_id)
    assert run.data.params["train.model"] == "resnet18" and "f1_macro" in run.data.metrics
    assert {"ood_auroc", "ood_caught", "ood_auroc.plain_skin"} <= set(run.data.metrics)
    logged = {a.path for a in reg.client.list_artifacts(run.info.run_id, "data")}
    assert "data/split_info.csv" in logged
    history = json.loads((trained.run / "history.json").read_text())
    for key in ("train_loss", "val_f1_macro"):  # learning curves in the MLflow UI
        curve = reg.client.get_metric_history(run.info.run_id, key)
        assert [(m.step, m.value) for m in sorted(curve, key=lambda m: m.step)] == [
            (r["epoch"], pytest.approx(r[key])) for r in history
        ], key

    result = promote_challenger(reg, first, trained.metrics(), trained.prepared, LENIENT, False)
    assert result.promoted and alias_version(reg, "champion") == first
    assert alias_version(reg, "challenger") is None

    second = _register(reg, trained, "kfp-2")
    # Same data, same seed: the champion re-scored on this split ties, and must_beat refuses it.
    refused = promote_challenger(reg, second, trained.metrics(), trained.prepared, LENIENT, True)
    assert not refused.promoted and "does not beat the champion" in refused.reasons[0]
    assert "not promoted" in _audit(reg, second)[-1]
    tie = promote_challenger(reg, second, trained.metrics(), trained.prepared, LENIENT, False)
    assert tie.promoted and tie.champion_before == first

    cards = tmp_path / "cards"
    first_card = fetch_card(reg, first, cards / "1").read_text()
    second_card = fetch_card(reg, second, cards / "2").read_text()
    assert "Champion when registered: none (first)" in first_card
    assert f"Champion when registered: version {first}" in second_card
    assert "pipeline run: kfp-2" in second_card and "GENERATED" in second_card
    for section in ("## Model", "## Data", "## Intended use", "## Performance (test split)",
                    "## The melanoma operating point", "## Calibration", "## Subgroups",
                    "## Known limitations", "## Lineage"):  # fmt: skip
        assert section in second_card, section
    assert (cards / "2").rglob("model_card.html")
    with pytest.raises(RegistryError, match="no version 99"):
        fetch_card(reg, "99", cards / "x")
    assert alias_version(reg, "previous") == first

    assert rollback(reg, "bad calibration in clinic") == (second, first)
    assert alias_version(reg, "champion") == first and alias_version(reg, "previous") is None
    assert "rolled back" in _audit(reg, second)[-1] and "test-suite" in _audit(reg, second)[-1]
    assert "champion again after rollback" in _audit(reg, first)[-1]
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        rollback(reg)
    rows = versions(reg)
    assert [r["version"] for r in rows] == [second, first]
    assert rows[1]["aliases"] == ["champion"]


def test_gate_refuses_and_by_hand_promotion_uses_the_same_gate(trained: Trained) -> None:
    reg = Registry()
    version = _register(reg, trained, "kfp-3")
    strict = GateThresholds(min_f1_macro=1.0)
    result = promote_challenger(reg, version, trained.metrics(), trained.prepared, strict, False)
    assert not result.promoted and result.reasons[0].startswith("macro-F1")
    assert alias_version(reg, "champion") is None
    assert not promote_stored(reg, version, strict, False).promoted
    assert promote_stored(reg, version, LENIENT, False).promoted
    with pytest.raises(RegistryError, match="has no version '99'"):
        promote_stored(reg, "99", LENIENT, False)


def test_registered_model_serves_through_pyfunc_and_downloads_for_kserve(
    trained: Trained, tmp_path: Path, jpeg_bytes: Callable[..., bytes]
) -> None:
    reg = Registry()
    version = _register(reg, trained, "kfp-4")
    folder = download(reg, version, tmp_path / "dl")
    assert {"weights.pt", "model.json", "calibration.json", "reference_stats.csv",
            "projection.json", "guard.npz"} <= {p.name for p in folder.iterdir()}  # fmt: skip
    reference = pd.read_csv(folder / "reference_stats.csv")
    scored = reference[reference["split"].isin(["val", "test"])]
    assert scored["prediction"].isin(CLASSES).all() and scored["confidence"].between(0, 1).all()
    assert scored[["embedding_pc1", "embedding_pc2", "embedding_pc3"]].notna().all().all()
    assert reference.loc[reference["split"] == "train", "prediction"].isna().all()
    mlflow.set_tracking_uri(reg.uri)
    try:
        model = mlflow.pyfunc.load_model(f"models:/{reg.model_name}/{version}")
    finally:  # it sets MLFLOW_TRACKING_URI too, which every later test's Registry() would use
        mlflow.set_tracking_uri(None)
    out = model.predict(pd.DataFrame({"image": [jpeg_bytes(120, 90), jpeg_bytes(60, 80)]}))
    assert list(out.columns) == [*CLASSES, "melanoma"] and len(out) == 2
    assert out[list(CLASSES)].sum(axis=1).round(5).eq(1.0).all()
    source = reg.client.get_model_version_download_uri(reg.model_name, version)
    assert source.startswith("file://") and not source.startswith("models:/")
    shutil.rmtree(tmp_path / "dl")


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    """A real `mlflow server` on loopback; artifacts go straight to the store, as with S3."""
    port = free_port()
    command = [
        str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1",
        "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
        "--no-serve-artifacts", "--default-artifact-root", (tmp_path / "store").as_uri(),
    ]  # fmt: skip
    log = tmp_path / "mlflow.log"
    with log.open("w") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(f"{url}/health", 90, server, log)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_tracking_server_from_the_environment_is_used(
    trained: Trained, mlflow_server: str, monkeypatch: pytest.MonkeyPatch, dermaops_home: Path
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    reg = Registry()
    assert reg.uri == mlflow_server and not reg.local
    version = _register(reg, trained, "kfp-5")
    assert promote_challenger(reg, version, trained.metrics(), trained.prepared, LENIENT, False)
    assert alias_version(reg, "champion") == version
    source = reg.client.get_model_version_download_uri(reg.model_name, version)
    assert source.startswith("file://"), "KServe gets the store's URI, never models:/"
    assert not (dermaops_home / "mlflow").exists(), "nothing went to the local sqlite default"


def test_the_predictor_loads_an_alias_from_the_registry(
    trained: Trained, dermaops_home: Path, jpeg_bytes: Callable[..., bytes]
) -> None:
    import asyncio

    from dermaops.serving.model import DermaOpsModel
    from dermaops.serving.settings import ServingSettings
    from dermaops.settings import Home

    reg = Registry()
    version = _register(reg, trained, "kfp-6")
    settings = ServingSettings(model_uri="models:/dermaops@challenger", inference_log=False)
    model = DermaOpsModel("dermaops", settings, Home(dermaops_home))
    assert model.load() and model.version == version
    assert model.artifact.melanoma_threshold == pytest.approx(trained.metrics().melanoma.threshold)
    body = {"instances": [{"b64": base64.b64encode(jpeg_bytes(600, 450)).decode()}]}
    answer, _ = asyncio.run(model(body))
    assert answer["model_version"] == version
    model.stop()
    with pytest.raises(ConfigError, match="no alias 'champion'"):
        DermaOpsModel("dermaops", ServingSettings(model_uri="models:/dermaops@champion")).load()


def test_the_monitor_follows_traffic_to_the_reference_of_its_version(
    trained: Trained, tmp_path: Path, dermaops_home: Path
) -> None:
    from dermaops.monitoring.drift import DriftSettings
    from dermaops.monitoring.service import Monitor, MonitorSettings

    reg = Registry()
    version = _register(reg, trained, "kfp-7")
    served = download(reg, version, tmp_path / "served") / "reference_stats.csv"
    rows = pd.read_csv(served)
    rows = rows[rows["split"] == "val"].drop(columns=["split"])
    traffic = tmp_path / "traffic"
    traffic.mkdir()

    def serve(model_version: str) -> None:
        lines = [json.dumps(r | {"model_version": model_version})
                 for r in rows.to_dict(orient="records")]  # fmt: skip
        (traffic / "predictions.jsonl").write_text("\n".join(lines * 3) + "\n")

    settings = MonitorSettings(
        reference=str(trained.prepared / "reference_stats.csv"), reference_version="0",
        registry_model=reg.model_name, inference_log=str(traffic), out=str(tmp_path / "out"),
        token="t", drift=DriftSettings(min_rows=10),
    )  # fmt: skip
    monitor = Monitor(settings)
    watch = monitor.drift
    serve("99")  # a version the registry does not have: image statistics only, and retried later
    summary = watch.run()
    assert watch.reference_version == "0" and "99" in watch.unfetchable
    assert "image statistics only" in summary.note and "confidence" not in summary.columns
    assert monitor.registry.get_sample_value("dermaops_drift_model_outputs_compared") == 0

    serve(version)  # the predictors moved to a registered version: its reference is fetched
    summary = watch.run()
    assert watch.reference_version == version and summary.reference_version == version
    assert Path(watch.reference).is_dir() and not summary.note
    assert {"confidence", "prediction", "embedding_pc1"} <= set(summary.columns)
    assert not summary.drifted, "the version's own validation rows against its reference"
    assert monitor.registry.get_sample_value("dermaops_drift_model_outputs_compared") == 1


PROMOTE = """
import json, logging, sys
from dermaops.evaluation.gate import GateThresholds
from dermaops.registry import Registry
from dermaops.registry.promotion import promote_stored
logging.basicConfig(level=logging.INFO)
lenient = GateThresholds(min_f1_macro=0.0, min_melanoma_sensitivity=0.0, max_ece=1.0)
result = promote_stored(Registry(), sys.argv[1], lenient, False)
print(json.dumps({"version": result.version, "promoted": result.promoted,
                  "before": result.champion_before, "reasons": result.reasons}))
"""


def test_two_promotions_at_once_leave_one_champion_and_both_audited(
    trained: Trained, tmp_path: Path
) -> None:
    """Two processes promote versions 2 and 3 over champion 1 at the same moment: both compare
    with version 1, then queue on the promotion lock (held here until both wait). The first to
    move the alias wins; the second finds the champion changed and is refused, with a message."""
    reg = Registry()
    first = _register(reg, trained, "kfp-1")
    assert promote_challenger(
        reg, first, trained.metrics(), trained.prepared, LENIENT, False
    ).promoted
    contenders = [_register(reg, trained, f"kfp-{i}") for i in (2, 3)]
    logs = [tmp_path / f"promote-{v}.log" for v in contenders]
    with promotion_lock(reg):
        processes = []
        for version, log in zip(contenders, logs, strict=True):
            with log.open("w") as err:
                processes.append(subprocess.Popen([sys.executable, "-c", PROMOTE, version],
                                                  stdout=subprocess.PIPE, stderr=err))  # fmt: skip
        deadline = time.monotonic() + 120
        while not all("waiting for the promotion lock" in log.read_text() for log in logs):
            assert time.monotonic() < deadline, [log.read_text()[-2000:] for log in logs]
            assert all(p.poll() is None for p in processes), [log.read_text() for log in logs]
            time.sleep(0.1)
    results = [json.loads(p.communicate(timeout=120)[0]) for p in processes]
    won = [r for r in results if r["promoted"]]
    lost = [r for r in results if not r["promoted"]]
    assert len(won) == 1 and len(lost) == 1, results
    assert won[0]["before"] == first and alias_version(reg, "champion") == won[0]["version"]
    assert alias_version(reg, "previous") == first
    assert f"changed from version {first} to version {won[0]['version']}" in lost[0]["reasons"][-1]
    assert _audit(reg, won[0]["version"])[-1].startswith(f"promoted to champion (was {first})")
    assert _audit(reg, lost[0]["version"])[-1].startswith("not promoted: the champion changed")


def test_a_champion_is_compared_only_on_test_lesions_it_never_trained_or_validated_on(
    trained: Trained, synth_raw: Path, tmp_path: Path
) -> None:
    """A challenger judged on a split made apart from the champion's (the same images, another
    seed): some of its test lesions are lesions the champion trained or validated on. Both
    models are scored without them, and the audit says on how many lesions and how many were
    left out."""
    reg = Registry()
    first = _register(reg, trained, "kfp-l1")
    assert promote_stored(reg, first, None, False).promoted
    resplit = tmp_path / "resplit"
    prepare(synth_raw, resplit, PrepareSettings(workers=2, max_share_gap=0.5, seed=1))

    def lesions(prepared: Path, *splits: str) -> set[str]:
        info = pd.read_csv(prepared / "split_info.csv", dtype=str)
        return set(info.loc[info["split"].isin(splits), "lesion_id"])

    tests = lesions(resplit, "test")
    touched = tests & lesions(trained.prepared, "train", "val")
    assert touched, "the two splits must overlap for this test to mean anything"
    run = reg.pipeline_run("kfp-l2", "training")
    second = log_training_run(reg, run.info.run_id, resplit, trained.run, trained.evaluation,
                              trained.baseline, thresholds=LENIENT)  # fmt: skip
    result = promote_challenger(reg, second, trained.metrics(), resplit, LENIENT, False)
    assert result.promoted, result.reasons
    event = _audit(reg, second)[-1]
    compared = len(tests - touched)
    assert f"on the {compared} test lesions neither model trained or validated on" in event
    assert f"({len(touched)} test lesions the champion trained or validated on left out)" in event


def test_a_run_trained_and_evaluated_by_hand_is_registered_after_the_gate(
    trained: Trained, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``dermaops registry register``: the pipeline's gate, then its register stage's logging,
    in a run of its own; a run the gate stops, or an evaluation of other weights (by their
    sha256, or for older files by architecture, size and epoch), leaves the registry as it was."""
    from typer.testing import CliRunner

    from dermaops.cli.app import app
    from dermaops.registry.model import BY_HAND, EvaluationOfAnotherModelError
    from dermaops.registry.tags import GATE_TAG_PREFIX, PIPELINE_TAG

    reg = Registry()
    before = len(versions(reg))
    args = ["registry", "register", "--run", str(trained.run), "--eval",
            str(trained.evaluation), "--data", str(trained.prepared)]  # fmt: skip
    measured = json.loads((trained.evaluation / "metrics.json").read_text())
    assert len(measured["model"]["weights_sha256"]) == 64
    monkeypatch.setenv("DERMAOPS_GATE_MIN_F1_MACRO", "1.0")  # no model here reaches it
    cases = (("other-weights", {"weights_sha256": "0" * 64}, True),
             ("older-file", {"weights_sha256": None, "best_epoch": 99}, True),
             ("older-file-of-it", {"weights_sha256": None, "best_epoch": None}, False))  # fmt: skip
    for name, model, other in cases:
        folder = tmp_path / name
        shutil.copytree(trained.evaluation, folder)
        changed = {**measured, "model": {**measured["model"], **model}}
        changed["model"] = {k: v for k, v in changed["model"].items() if v is not None}
        (folder / "metrics.json").write_text(json.dumps(changed))
        done = CliRunner().invoke(app, [*args[:4], "--eval", str(folder), *args[6:]])
        if other:
            assert isinstance(done.exception, EvaluationOfAnotherModelError), done.output
            assert "evaluate this run's model" in str(done.exception)
        else:  # fields a file of its day lacks are not held against it: the gate decides
            assert done.exit_code == 3 and "gate failed" in done.output, done.output
    assert len(versions(reg)) == before, "nothing registered"
    stopped = CliRunner().invoke(app, args, env={"COLUMNS": "300"})
    assert stopped.exit_code == 3 and "gate failed: macro-F1" in stopped.output, stopped.output
    assert len(versions(reg)) == before, "nothing registered"

    for name, value in LENIENT.model_dump().items():
        monkeypatch.setenv(f"DERMAOPS_GATE_{name.upper()}", str(value))
    done = CliRunner().invoke(app, [*args, "--baseline", str(trained.baseline)],
                              env={"COLUMNS": "300"})  # fmt: skip
    assert done.exit_code == 0, done.output
    version = done.output.split("version ", 1)[1].split()[0]
    assert f"dermaops registry promote {version}" in done.output
    assert alias_version(reg, "challenger") == version
    tags = reg.client.get_model_version(reg.model_name, version).tags
    assert float(tags[f"{GATE_TAG_PREFIX}min_f1_macro"]) == 0.0, "its gate, for promotion"
    run = reg.client.get_run(reg.client.get_model_version(reg.model_name, version).run_id)
    assert run.data.tags[PIPELINE_TAG] == BY_HAND
    assert {"f1_macro", "baseline_f1_macro"} <= set(run.data.metrics)
