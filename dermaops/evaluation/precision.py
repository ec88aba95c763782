"""Whether the INT8 serving graph serves: quantize, time, and judge it on the test split.

Both graphs are scored exactly alike: their logits on the same test images, the temperature and
melanoma threshold fitted on validation (the ones registered), then macro-F1, melanoma sensitivity
at that threshold and ECE. :mod:`dermaops.model.quantize` holds the mechanics and the gate.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from dermaops.cpus import cpu_budget
from dermaops.data.prepared import PreparedSet
from dermaops.evaluation.calibration import apply_temperature, rates
from dermaops.evaluation.metrics import expected_calibration_error, macro_f1
from dermaops.labels import INDEX
from dermaops.model.artifact import INT8
from dermaops.model.quantize import (
    RECIPES,
    PrecisionDecision,
    QuantizationError,
    Recipe,
    Scores,
    Tolerance,
    cam_correlation,
    cpu_description,
    fastest,
    judge,
    run_graph,
)

log = logging.getLogger(__name__)

MEL = INDEX["mel"]
CALIBRATION_IMAGES = 64  # training images the activation ranges are calibrated on


def choose_precision(
    fp32: Path | None,
    data: PreparedSet,
    out: Path,
    temperature: float,
    threshold: float,
    image_size: int,
    tolerance: Tolerance | None = None,
    recipes: Sequence[Recipe] = RECIPES,
    require_faster: bool = True,
) -> PrecisionDecision:
    """Quantize ``fp32`` (the model's serving graph) on ``data``'s training images by the
    fastest of ``recipes`` here, judge it on the test split and write ``out/precision.json``,
    and ``out/model.int8.onnx`` if it is kept (within ``tolerance``, and faster than fp32 unless
    not ``require_faster``)."""
    tolerance = tolerance or Tolerance()
    cpu = cpu_description()
    if fp32 is None:
        decision = PrecisionDecision("fp32", "no ONNX serving graph to quantize", cpu=cpu)
        decision.write(out)
        return decision
    threads = cpu_budget().threads
    calibration, _, _ = data.split("train", sample=CALIBRATION_IMAGES)
    int8_path = out / INT8
    int8_path.unlink(missing_ok=True)  # an earlier run's graph is not this run's decision
    try:
        recipe, timings = fastest(fp32, int8_path, calibration, threads, recipes)
    except QuantizationError as e:
        decision = PrecisionDecision("fp32", str(e), cpu=cpu)
        decision.write(out)
        return decision
    pixels, labels, _ = data.split("test")
    before = run_graph(fp32, pixels, threads)
    try:
        after = run_graph(int8_path, pixels, threads)
    except Exception as e:  # ONNX Runtime's errors have no common type worth naming
        int8_path.unlink(missing_ok=True)
        decision = PrecisionDecision("fp32", f"the {recipe.name} graph failed on the test "
                                     f"split: {e}", recipe.name, cpu, timings)  # fmt: skip
        decision.write(out)
        return decision
    fp32_scores = _scores(before.logits, labels, temperature, threshold)
    int8_scores = _scores(after.logits, labels, temperature, threshold)
    correlation = None
    if before.cams is not None and after.cams is not None:
        top = before.logits.argmax(axis=1).tolist()
        correlation = cam_correlation(before.cams, after.cams, top, image_size)
    keep, reason, deltas = judge(fp32_scores, int8_scores, tolerance, correlation)
    if keep and require_faster and timings[recipe.name] >= timings["fp32"]:
        keep, reason = (
            False,
            (
                f"{recipe.name} ran at {timings[recipe.name]:.2f} ms, no faster than fp32's "
                f"{timings['fp32']:.2f} ms on this CPU"
            ),
        )
    if not keep:
        int8_path.unlink(missing_ok=True)
    explains = correlation is not None and correlation >= tolerance.cam_correlation
    decision = PrecisionDecision(
        "int8" if keep else "fp32", reason, recipe.name, cpu, timings,
        asdict(fp32_scores), asdict(int8_scores), deltas, correlation,
        "int8" if keep and explains else "fp32",
    )  # fmt: skip
    decision.write(out)
    log.info("serving graph: %s (%s)", decision.serve, reason)
    return decision


def _scores(logits: np.ndarray, labels: np.ndarray, temperature: float, threshold: float) -> Scores:
    probs = apply_temperature(logits.astype(np.float64), temperature, already_log=True)
    sensitivity, _ = rates(probs[:, MEL], labels == MEL, threshold)
    return Scores(
        f1_macro=float(macro_f1(labels, probs.argmax(axis=1))),
        melanoma_sensitivity=float(np.nan_to_num(sensitivity, nan=0.0)),
        ece=float(expected_calibration_error(labels, probs)),
    )


def markdown(decision: PrecisionDecision) -> str:
    """The decision as a report or model card section."""
    lines = ["## Serving graph (INT8 or fp32)", "",
             f"Serves **{decision.serve}**: {decision.reason}."]  # fmt: skip
    if decision.recipe:
        cpu = decision.cpu
        flags = ", ".join(cpu.get("flags", [])) or "none of them"
        timings = ", ".join(f"{k} {v:.2f} ms" for k, v in decision.timings_ms.items())
        lines += [
            "",
            f"Quantized statically ({decision.recipe}, per-channel weights, calibrated on "
            f"{CALIBRATION_IMAGES} training images), the fastest recipe measured on "
            f"{cpu.get('model', 'unknown')} (INT8 flags: {flags}); p50 at batch 1: {timings}.",
        ]
    if decision.deltas_points:
        lines += ["", "| test split | fp32 | INT8 | change (points) |", "|---|---|---|---|"]
        names = {"f1_macro": "macro-F1", "melanoma_sensitivity": "melanoma sensitivity",
                 "ece": "ECE"}  # fmt: skip
        for key, name in names.items():
            lines.append(f"| {name} | {decision.fp32[key]:.4f} | {decision.int8[key]:.4f} | "
                         f"{decision.deltas_points[key]:+.2f} |")  # fmt: skip
    if decision.cam_correlation is not None:
        lines += ["", f"Heatmaps of the INT8 graph against fp32: mean r = "
                      f"{decision.cam_correlation:.3f}; explanations come from the "
                      f"{decision.explain} graph."]  # fmt: skip
    return "\n".join(lines) + "\n"
