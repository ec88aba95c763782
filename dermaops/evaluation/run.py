"""``dermaops evaluate``: clinical evaluation on the test split, the same for every model.

Temperature and the melanoma threshold are fitted on validation, then applied once to test.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from dermaops.data.fingerprint import file_sha256
from dermaops.data.prepared import PreparedSet
from dermaops.data.report import GENERATED_NOTICE
from dermaops.evaluation.calibration import (
    apply_temperature,
    choose_threshold,
    fit_class_bias,
    fit_temperature,
    rates,
)
from dermaops.evaluation.metrics import (
    Roc,
    confusion,
    expected_calibration_error,
    roc_points,
    summary,
)
from dermaops.evaluation.ood import GuardData, fit_and_measure
from dermaops.evaluation.ood import markdown as ood_markdown
from dermaops.evaluation.precision import choose_precision
from dermaops.evaluation.precision import markdown as precision_markdown
from dermaops.evaluation.report import (
    plot_confusion,
    plot_gradcam_grid,
    plot_reliability,
    write_markdown,
)
from dermaops.evaluation.result import EvaluationMetrics
from dermaops.evaluation.subgroups import SubgroupSettings, evaluate_subgroups
from dermaops.evaluation.subgroups import markdown as subgroup_markdown
from dermaops.evaluation.subgroups import scores as subgroup_scores
from dermaops.labels import CLASSES, INDEX
from dermaops.model.artifact import WEIGHTS, ModelArtifact, Preprocessing
from dermaops.model.cam import heatmaps
from dermaops.model.embedding import WithEmbedding
from dermaops.model.guard import METHODS, OodGuardError
from dermaops.model.heatmap import overlay
from dermaops.model.inference import predict_with_embeddings, resolve_device, split_tensors
from dermaops.model.projection import PROJECTION, Projection
from dermaops.model.quantize import Tolerance
from dermaops.model.reference import OUTPUTS, write_outputs
from dermaops.model.stem import centre_crop, eval_batch, fit_short_side

log = logging.getLogger(__name__)

MEL = INDEX["mel"]
PREDICTIONS = "test_predictions.npz"  # calibrated test probabilities and labels, for ROC curves
GUARD_TRAIN_IMAGES = 4000  # training images the guard is fitted on, at most (a random sample)


@dataclass(frozen=True)
class Predictions:
    """Class probabilities and true labels of the validation and test splits, the test
    images' metadata (sex, age, site) for the subgroup figures, and the class shares of the
    training and validation images (the class bias's target for classes validation holds too
    few of; None: the others' mean bias)."""

    val_probs: np.ndarray
    val_labels: np.ndarray
    test_probs: np.ndarray
    test_labels: np.ndarray
    test_meta: pd.DataFrame | None = None
    shares: np.ndarray | None = None


def evaluate(
    prepared: Path,
    model_dir: Path,
    out: Path,
    target_sensitivity: float = 0.85,
    device: str = "auto",
    batch_size: int = 128,
    subgroups: SubgroupSettings | None = None,
    leave_out: frozenset[str] = frozenset(),
    guard: str = "mahalanobis",
    int8: bool = True,
    int8_tolerance: Tolerance | None = None,
) -> EvaluationMetrics:
    """Write metrics.json, plots and report.md for ``model_dir`` on ``prepared``'s test split,
    without the test images of the lesions in ``leave_out``; fit the out-of-distribution
    ``guard`` (:mod:`dermaops.evaluation.ood`) and measure it; with ``int8``, quantize the
    serving graph and decide which graph serves (:mod:`dermaops.evaluation.precision`)."""
    if guard not in METHODS:  # before minutes of inference, not after
        raise OodGuardError(f"unknown guard {guard!r}: choose one of {', '.join(METHODS)}")
    artifact = ModelArtifact.load(model_dir)
    model, pre, arch = artifact.torch_model(), artifact.preprocessing, artifact.arch
    model.to(resolve_device(device))
    data = PreparedSet.open(prepared).leaving_out(leave_out)
    cpu = torch.device("cpu")
    val, test = (split_tensors(data, name, pre.image_size, cpu) for name in ("val", "test"))
    with_embedding = WithEmbedding(model, arch)
    val_probs, val_embedding = predict_with_embeddings(with_embedding, val.pixels, pre, batch_size)
    test_probs, test_embedding = predict_with_embeddings(
        with_embedding, test.pixels, pre, batch_size
    )
    test_meta = data.index[data.index["split"] == "test"].sort_values("row")
    predictions = Predictions(
        val_probs, val.labels.numpy(), test_probs, test.labels.numpy(), test_meta, data.shares()
    )
    described = {
        "arch": arch,
        "image_size": pre.image_size,
        "best_epoch": artifact.meta.get("best_epoch"),
        "weights_sha256": file_sha256(artifact.folder / WEIGHTS),
    }
    out.mkdir(parents=True, exist_ok=True)
    ood = _guard(with_embedding, data, pre, batch_size, (val_embedding, test_embedding), out, guard)
    del with_embedding
    metrics = score(predictions, out, described, data.generated, target_sensitivity, subgroups, ood)
    _reference_outputs(out, data, predictions, metrics.temperature, (val_embedding, test_embedding))
    if int8:
        decision = choose_precision(
            artifact.onnx_path, data, out, metrics.temperature,
            metrics.melanoma.threshold, pre.image_size, int8_tolerance,
        )  # fmt: skip
        metrics = metrics.model_copy(update={"precision": decision})
        metrics.write(out)
        with (out / "report.md").open("a") as report:
            report.write("\n" + precision_markdown(decision))
    grid = out / "gradcam_melanoma.png"
    _melanoma_gradcam(model, arch, pre, test.pixels, predictions, grid, data.generated)
    if grid.is_file():
        with (out / "report.md").open("a") as report:
            report.write(f"## Grad-CAM on test melanomas\n\n![Grad-CAM]({grid.name})\n")
    return metrics


def _guard(
    model: WithEmbedding, data: PreparedSet, pre: Preprocessing, batch_size: int,
    embeddings: tuple[np.ndarray, np.ndarray], out: Path, method: str,
) -> dict[str, Any]:  # fmt: skip
    """Fit the out-of-distribution guards on a sample of the training split, their threshold on
    validation; save ``method``'s and return every method's figures."""
    device = next(model.parameters()).device

    @torch.no_grad()
    def logits(embedding: np.ndarray) -> np.ndarray:
        found: np.ndarray = model.head(torch.from_numpy(embedding).to(device)).float().cpu().numpy()
        return found

    def outputs(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        resized = fit_short_side(torch.from_numpy(pixels), pre.image_size)
        _, embedding = predict_with_embeddings(model, resized, pre, batch_size)
        return logits(embedding), embedding

    train_pixels, train_labels, _ = data.split("train", sample=GUARD_TRAIN_IMAGES)
    val_embedding, test_embedding = embeddings
    guard_data = GuardData(
        train=outputs(train_pixels),
        train_labels=train_labels,
        val=(logits(val_embedding), val_embedding),
        test=(logits(test_embedding), test_embedding),
        test_pixels=data.split("test")[0],
    )
    return fit_and_measure(guard_data, outputs, pre, out, method)


def _reference_outputs(
    out: Path,
    data: PreparedSet,
    predictions: Predictions,
    temperature: float,
    embeddings: tuple[np.ndarray, np.ndarray],
) -> None:
    """The projection fitted on validation embeddings, and the drift reference's model columns.

    Written as the predictor will log traffic: calibrated probabilities, the same projection.
    """
    projection = Projection.fit(embeddings[0])
    projection.save(out / PROJECTION)
    ids = [
        image_id
        for split in ("val", "test")
        for image_id in data.index[data.index["split"] == split].sort_values("row")["image_id"]
    ]
    probs = apply_temperature(
        np.concatenate([predictions.val_probs, predictions.test_probs]), temperature
    )
    write_outputs(out / OUTPUTS, ids, probs, projection(np.concatenate(embeddings)))
    log.info(
        "embedding projection: %s of the variance", [round(v, 3) for v in projection.explained]
    )


def _melanoma_gradcam(
    model: torch.nn.Module, arch: str, pre: Preprocessing, test_pixels: torch.Tensor,
    predictions: Predictions, path: Path, generated: bool, cases: int = 8,
) -> None:  # fmt: skip
    """Grad-CAM for P(mel) on the test melanomas the model was surest of, and least sure."""
    mel = np.flatnonzero(predictions.test_labels == MEL)
    if len(mel) == 0:
        log.warning("no melanoma in the test split: no Grad-CAM grid")
        return
    ranked = mel[np.argsort(-predictions.test_probs[mel, MEL])]
    chosen = np.unique(np.concatenate([ranked[: cases // 2], ranked[-(cases // 2) :]]))
    crops = centre_crop(test_pixels[chosen], pre.image_size)
    device = next(model.parameters()).device
    maps = heatmaps(model, arch, eval_batch(crops, pre).to(device), [MEL] * len(chosen))
    images = crops.numpy()
    captions = [f"P(mel) {predictions.test_probs[i, MEL]:.2f}" for i in chosen]
    overlays = [overlay(img, heat) for img, heat in zip(images, maps, strict=True)]
    plot_gradcam_grid(images, overlays, captions, path, generated)


def score(
    predictions: Predictions,
    out: Path,
    model: dict[str, Any],
    generated: bool,
    target_sensitivity: float = 0.85,
    subgroups: SubgroupSettings | None = None,
    ood: dict[str, Any] | None = None,
) -> EvaluationMetrics:
    """Calibrate on validation, score test; write metrics.json, the plots and report.md.

    With the test images' metadata, the metrics' ``subgroups`` hold the per-group figures with
    bootstrap intervals and the flagged gaps (:mod:`dermaops.evaluation.subgroups`); ``ood``,
    the guard's figures (:func:`dermaops.evaluation.ood.fit_and_measure`), is kept as is.
    """
    p = predictions
    temperature = fit_temperature(p.val_probs, p.val_labels)
    val, test = (
        apply_temperature(p.val_probs, temperature),
        apply_temperature(p.test_probs, temperature),
    )
    class_bias = fit_class_bias(val, p.val_labels, shares=p.shares)
    point = choose_threshold(val[:, MEL], p.val_labels == MEL, target_sensitivity)
    sensitivity, specificity = rates(test[:, MEL], p.test_labels == MEL, point.threshold)
    counts = confusion(p.test_labels, test.argmax(axis=1))
    figures: dict[str, Any] = {
        **summary(p.test_labels, test),
        "melanoma": {
            **asdict(point),
            "test_sensitivity": sensitivity,
            "test_specificity": specificity,
            "test_support": int((p.test_labels == MEL).sum()),
        },
        "temperature": temperature,
        "class_bias": {c: round(float(b), 6) for c, b in zip(CLASSES, class_bias, strict=True)},
        "ece_uncalibrated": expected_calibration_error(p.test_labels, p.test_probs),
        "confusion_matrix": counts.tolist(),
        "split": "test",
        "images": len(p.test_labels),
        "model": model,
        "generated": generated,
        "notice": GENERATED_NOTICE if generated else "",
    }
    if ood is not None:
        figures["ood"] = ood
    if p.test_meta is not None:
        judged = subgroup_scores(p.test_labels, test, point.threshold)
        figures["subgroups"] = evaluate_subgroups(p.test_meta, judged, subgroups)
    metrics = EvaluationMetrics.parse(figures, "the evaluation")
    metrics.write(out)
    np.savez_compressed(out / PREDICTIONS, probs=test, labels=p.test_labels)
    plot_confusion(counts, out / "confusion_matrix.png", generated)
    plot_reliability(p.test_labels, p.test_probs, test, out / "reliability.png")
    write_markdown(metrics, out / "report.md")
    if metrics.subgroups is not None:
        with (out / "report.md").open("a") as report:
            report.write("\n" + subgroup_markdown(metrics.subgroups) + "\n")
    if metrics.ood is not None:
        with (out / "report.md").open("a") as report:
            report.write("\n" + ood_markdown(metrics.ood))
    log.info("test macro-F1 %.4f, melanoma sensitivity %.3f", metrics.f1_macro, sensitivity)
    return metrics


def melanoma_roc(out: Path) -> Roc:
    """Melanoma-vs-rest ROC of an evaluation folder, from its saved test predictions."""
    saved = np.load(out / PREDICTIONS)
    return roc_points(saved["labels"] == MEL, saved["probs"][:, MEL])
