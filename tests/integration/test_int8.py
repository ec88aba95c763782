"""The INT8 serving graph from evaluation to the predictor: quantized on training images, judged
on the test split beside fp32, registered with its decision, served and named in the metadata."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest

from dermaops.data.prepared import PreparedSet
from dermaops.errors import ConfigError
from dermaops.evaluation.card import Lineage, card_markdown
from dermaops.evaluation.precision import choose_precision
from dermaops.evaluation.result import EvaluationMetrics
from dermaops.model.artifact import INT8, ONNX, PRECISION, ModelArtifact
from dermaops.model.quantize import GRAPH_INPUT, RECIPES, PrecisionDecision, Recipe, Tolerance
from dermaops.serving.backends import choose_backend
from dermaops.serving.model import DermaOpsModel
from dermaops.serving.process import PredictorProcess
from dermaops.serving.settings import ServingSettings
from dermaops.settings import Home

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEEP = Tolerance(f1_macro=100, melanoma_sensitivity=100, ece=100, cam_correlation=-1)
REJECT = Tolerance(f1_macro=-100, melanoma_sensitivity=-100, ece=-100)


def _decide(model: Path, prepared: Path, tolerance: Tolerance, dest: Path) -> PrecisionDecision:
    """A copy of ``model`` with the INT8 decision ``tolerance`` makes, as assemble() leaves it."""
    shutil.copytree(model, dest)
    (dest / PRECISION).unlink(missing_ok=True)
    artifact = ModelArtifact.load(dest)
    return choose_precision(
        artifact.onnx_path, PreparedSet.open(prepared), dest, artifact.temperature,
        artifact.melanoma_threshold, artifact.preprocessing.image_size, tolerance,
        recipes=RECIPES[:1], require_faster=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def int8_model(served_model: Path, prepared_small: Path, tmp_path_factory: pytest.TempPathFactory
               ) -> Path:  # fmt: skip
    dest = tmp_path_factory.mktemp("int8") / "model"
    decision = _decide(served_model, prepared_small, KEEP, dest)
    assert decision.serve == "int8" and decision.explain == "int8", decision
    return dest


def test_the_kept_graph_is_quantized_and_its_decision_says_how_and_by_how_much(
    int8_model: Path,
) -> None:
    import onnx

    ops = {node.op_type for node in onnx.load(str(int8_model / INT8)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ U8S8, the recipe asked for
    decision = PrecisionDecision.read(int8_model / PRECISION)
    assert decision.recipe == "QDQ U8S8"
    assert set(decision.timings_ms) == {"fp32", "QDQ U8S8"}
    assert set(decision.deltas_points) == {"f1_macro", "melanoma_sensitivity", "ece"}
    for key, delta in decision.deltas_points.items():
        assert delta == pytest.approx(100 * (decision.int8[key] - decision.fp32[key]), abs=0.01)
    assert decision.cam_correlation is not None and -1 <= decision.cam_correlation <= 1
    assert "model" in decision.cpu and isinstance(decision.cpu["flags"], list)


def test_a_graph_outside_the_tolerance_is_not_registered_and_the_card_says_why(
    served_model: Path, prepared_small: Path, tmp_path: Path
) -> None:
    decision = _decide(served_model, prepared_small, REJECT, tmp_path / "model")
    assert decision.serve == "fp32" and not (tmp_path / "model" / INT8).exists()
    assert "macro-F1 fell" in decision.reason and "melanoma sensitivity fell" in decision.reason
    artifact = ModelArtifact.load(tmp_path / "model")
    assert choose_backend(artifact, "onnx", precision="auto").precision == "fp32"
    with pytest.raises(ConfigError, match="its registration kept fp32: macro-F1 fell"):
        choose_backend(artifact, "onnx", precision="int8")
    metrics = EvaluationMetrics.read(served_model.parent / "evaluation")
    metrics = metrics.model_copy(update={"precision": decision})
    card = card_markdown(
        metrics, artifact.meta, prepared_small, Lineage("dermaops", "3", "r", "", "", "now")
    )
    assert "## Serving graph (INT8 or fp32)" in card
    assert "Serves **fp32**: macro-F1 fell" in card and "| macro-F1 |" in card


def test_auto_serves_the_kept_graph_whose_answers_stay_near_fp32(int8_model: Path) -> None:
    artifact = ModelArtifact.load(int8_model)
    int8 = choose_backend(artifact, "auto", precision="auto")
    fp32 = choose_backend(artifact, "onnx", precision="fp32")
    assert (int8.name, int8.precision, fp32.name) == ("onnxruntime-int8", "int8", "onnxruntime")
    pixels = np.random.default_rng(0).integers(0, 256, (4, 225, 300, 3), np.uint8)
    a, b = artifact.probabilities(fp32(pixels)[0]), artifact.probabilities(int8(pixels)[0])
    assert np.abs(a - b).max() < 0.2  # the same model, in 8 bits
    explained = int8.explain(pixels[:2])
    assert explained.heatmaps.shape == (2, 32, 32) and explained.images.dtype == np.uint8
    with pytest.raises(ConfigError, match="not --backend torch"):
        choose_backend(artifact, "torch", precision="int8")
    with pytest.raises(ConfigError, match="choose auto, fp32 or int8"):
        choose_backend(artifact, "onnx", precision="int4")


def test_explanations_come_from_fp32_where_the_heatmaps_differ(int8_model: Path,
                                                               tmp_path: Path) -> None:  # fmt: skip
    folder = tmp_path / "model"
    shutil.copytree(int8_model, folder)
    decision = json.loads((folder / PRECISION).read_text())
    (folder / PRECISION).write_text(json.dumps({**decision, "explain": "fp32"}))
    backend = choose_backend(ModelArtifact.load(folder), "onnx", precision="int8")
    assert backend.explainer is not backend.session  # the fp32 graph, opened at load
    assert [i.name for i in backend.explainer.get_inputs()] == [GRAPH_INPUT]
    pixels = np.random.default_rng(1).integers(0, 256, (8, 225, 300, 3), np.uint8)
    explained = backend.explain(pixels)
    int8_logits, _ = backend(pixels)
    # the heatmap of the class the INT8 graph answered, drawn by the fp32 graph
    assert explained.logits.argmax(axis=1).tolist() == int8_logits.argmax(axis=1).tolist()
    assert explained.heatmaps.shape == (8, 32, 32)


def test_auto_serves_fp32_on_a_cpu_without_the_int8_units_it_was_judged_with(
    int8_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dermaops.serving import backends

    artifact = ModelArtifact.load(int8_model)
    judged = {**artifact.precision, "cpu": {"model": "x", "flags": ["avx2", "avx512_vnni"]}}
    folder = tmp_path / "model"
    shutil.copytree(int8_model, folder)
    (folder / PRECISION).write_text(json.dumps(judged))
    monkeypatch.setattr(backends, "cpu_description", lambda: {"model": "y", "flags": ["avx2"]})
    assert choose_backend(ModelArtifact.load(folder), "onnx", precision="auto").precision == "fp32"
    assert choose_backend(ModelArtifact.load(folder), "onnx", precision="int8").precision == "int8"
    monkeypatch.setattr(backends, "cpu_description", lambda: {"model": "z", "flags": ["avx_vnni"]})
    assert choose_backend(ModelArtifact.load(folder), "onnx", precision="auto").precision == "int8"


def test_the_predictor_names_the_graph_that_answers_in_its_v2_metadata(
    int8_model: Path, tmp_path: Path, jpeg_bytes: Callable[..., bytes]
) -> None:
    home, log = tmp_path / "home", tmp_path / "log"
    with PredictorProcess(int8_model, home, log, ["--model_version", "7"]) as server:
        url = server.url
        metadata = httpx.get(f"{url}/v2/models/dermaops", timeout=30).json()
        assert metadata["platform"] == "onnxruntime-int8:int8"
        body = {
            "instances": [{"image_bytes": {"b64": base64.b64encode(jpeg_bytes(600, 450)).decode()}}]
        }
        answer = httpx.post(f"{url}/v1/models/dermaops:predict", json=body, timeout=30)
        assert answer.status_code == 200, answer.text
        assert metadata["versions"] == ["7"]
    settings = ServingSettings(model_uri=str(int8_model), precision="fp32", inference_log=False)
    fp32 = DermaOpsModel("dermaops", settings, Home(tmp_path))
    fp32.load()
    assert fp32.platform == "onnxruntime:fp32"
    fp32.stop()


def test_every_recipe_quantizes_the_serving_graph(served_model: Path, tmp_path: Path) -> None:
    from dermaops.model.quantize import quantize_graph

    pixels = np.random.default_rng(2).integers(0, 256, (4, 225, 300, 3), np.uint8)
    for recipe in (*RECIPES, Recipe("QOperator", "int8")):
        out = tmp_path / f"{recipe.format}-{recipe.activations}.onnx"
        quantize_graph(served_model / ONNX, out, pixels, recipe)
        assert out.stat().st_size < (served_model / ONNX).stat().st_size / 2, recipe.name


def test_bench_compares_the_two_graphs_served_side_by_side(int8_model: Path, tmp_path: Path
                                                           ) -> None:  # fmt: skip
    from dermaops.serving.bench import bench_precision

    result = bench_precision(str(int8_model), Home(tmp_path), requests=10, images=4, rounds=2)
    assert result["errors"] == 0 and result["recipe"] == "QDQ U8S8"
    ratio = result["served_int8"]["p50_ms"] / result["served_fp32"]["p50_ms"]
    assert result["ratio_int8_vs_fp32_served_p50"] == pytest.approx(ratio, abs=1e-3)
    decision = PrecisionDecision.read(int8_model / PRECISION)
    assert result["accuracy_deltas_points"] == decision.deltas_points
