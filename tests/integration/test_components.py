"""Each component's function called directly, with KFP artifacts whose paths are in tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest
from kfp.dsl import (
    HTML,
    Artifact,
    ClassificationMetrics,
    Dataset,
    Markdown,
    Metrics,
    Model,
    PipelineTaskFinalStatus,
)

from dermaops.components.evaluate import evaluate
from dermaops.components.gate import gate
from dermaops.components.ingest import ingest
from dermaops.components.notify import notify
from dermaops.components.prepare import prepare
from dermaops.components.train import train
from dermaops.evaluation.gate import GateFailedError
from dermaops.registry import Registry
from tests.formats import metrics

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _status(state: str) -> PipelineTaskFinalStatus:
    message = "Task exit-handler-1 failed."  # what KFP's local runner says
    return PipelineTaskFinalStatus(state, "run", "exit-handler-1", None, message)


def test_ingest_then_prepare_fill_their_artifacts(tmp_path: Path) -> None:
    raw = Dataset(uri=str(tmp_path / "raw"))
    ingest(raw=raw, source="synthetic", n=40, seed=2)
    assert raw.metadata["images"] == 40 and raw.metadata["generated"] is True
    prepared = Dataset(uri=str(tmp_path / "prepared"))
    prepare(raw=raw, prepared=prepared, cache_height=64)
    assert prepared.metadata["images"] == 40 and prepared.metadata["reused"] is False
    assert (tmp_path / "prepared" / "split_info.csv").is_file()


def test_train_and_evaluate_feed_the_kfp_ui(prepared_small: Path, tmp_path: Path) -> None:
    data, model = Dataset(uri=str(prepared_small)), Model(uri=str(tmp_path / "run"))
    train(prepared=data, model=model, arch="resnet18", weights="none", epochs=1, image_size=32,
          batch_size=16, settings={"export_onnx": False})  # fmt: skip
    assert model.metadata["best_epoch"] == 1 and model.metadata["settings"]["export_onnx"] is False
    outputs = {
        "evaluation": Artifact(uri=str(tmp_path / "evaluation")),
        "metrics": Metrics(uri=str(tmp_path / "metrics")),
        "classification": ClassificationMetrics(uri=str(tmp_path / "classification")),
        "report_html": HTML(uri=str(tmp_path / "report.html")),
        "report_md": Markdown(uri=str(tmp_path / "report.md")),
    }
    evaluate(prepared=data, model=model, **outputs)
    ui = outputs["classification"].metadata
    assert len(ui["confusionMatrix"]["rows"]) == 7 and ui["confidenceMetrics"]
    assert 0.0 <= outputs["metrics"].metadata["f1_macro"] <= 1.0
    page = (tmp_path / "report.html").read_text()
    assert "data:image/png;base64," in page and "<table>" in page


def test_gate_passes_or_stops_with_every_reason(tmp_path: Path) -> None:
    evaluation = Artifact(uri=str(tmp_path))
    metrics(f1_macro=0.55, ece=0.2, melanoma_sensitivity=0.9).write(tmp_path)
    gate(evaluation=evaluation, min_f1_macro=0.5, max_ece=0.25)
    with pytest.raises(GateFailedError) as failed:
        gate(evaluation=evaluation, kfp_run_id="kfp-7")
    assert len(failed.value.reasons) == 2
    assert Registry().failure("kfp-7")[0] == "gate", "the failed stage is recorded for notify"


def test_notify_names_the_recorded_stage_and_posts_nothing_without_a_hook(tmp_path: Path) -> None:
    Registry().record_failure("kfp-8", "train", RuntimeError("CUDA out of memory"))
    summary = Markdown(uri=str(tmp_path / "summary.md"))
    notify(status=_status("FAILED"), summary=summary, kfp_run_id="kfp-8")
    text = (tmp_path / "summary.md").read_text()
    assert "Failed stage: **train**" in text and "CUDA out of memory" in text

    notify(status=_status("FAILED"), summary=summary, kfp_run_id="kfp-9")
    text = (tmp_path / "summary.md").read_text()
    assert "Failed stage: **unknown" in text and "Task exit-handler-1 failed." in text
