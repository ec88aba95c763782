"""``dermaops evaluate``: clinical evaluation of a trained model on the test split.

Temperature and the melanoma threshold are fitted on validation, then applied once to test.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dermaops.calibration import apply_temperature, choose_threshold, fit_temperature, rates
from dermaops.data.prepared import PreparedSet
from dermaops.data.report import GENERATED_NOTICE
from dermaops.evaluate_report import plot_confusion, plot_reliability, write_markdown
from dermaops.labels import INDEX
from dermaops.metrics import confusion, expected_calibration_error, summary
from dermaops.model_dir import load_model_dir
from dermaops.stem import fit_short_side
from dermaops.train.loop import predict_probs, resolve_device

log = logging.getLogger(__name__)

MEL = INDEX["mel"]


def evaluate(
    prepared: Path,
    model_dir: Path,
    out: Path,
    target_sensitivity: float = 0.85,
    device: str = "auto",
    batch_size: int = 128,
) -> dict[str, Any]:
    """Write metrics.json, plots and report.md for ``model_dir`` on ``prepared``'s test split."""
    model, pre, meta = load_model_dir(model_dir)
    model.to(resolve_device(device))
    data = PreparedSet.open(prepared)
    probs: dict[str, np.ndarray] = {}
    labels: dict[str, np.ndarray] = {}
    for split in ("val", "test"):
        pixels, y, _ = data.split(split)
        resized = fit_short_side(torch.from_numpy(pixels), pre.image_size)
        probs[split], labels[split] = predict_probs(model, resized, pre, batch_size), y
    temperature = fit_temperature(probs["val"], labels["val"])
    calibrated = {k: apply_temperature(v, temperature) for k, v in probs.items()}
    point = choose_threshold(calibrated["val"][:, MEL], labels["val"] == MEL, target_sensitivity)
    sensitivity, specificity = rates(
        calibrated["test"][:, MEL], labels["test"] == MEL, point.threshold
    )
    counts = confusion(labels["test"], calibrated["test"].argmax(axis=1))
    metrics: dict[str, Any] = {
        **summary(labels["test"], calibrated["test"]),
        "melanoma": {
            **asdict(point),
            "test_sensitivity": sensitivity,
            "test_specificity": specificity,
            "test_support": int((labels["test"] == MEL).sum()),
        },
        "temperature": temperature,
        "ece_uncalibrated": expected_calibration_error(labels["test"], probs["test"]),
        "confusion_matrix": counts.tolist(),
        "split": "test",
        "images": len(labels["test"]),
        "model": {
            "arch": meta["arch"],
            "image_size": pre.image_size,
            "best_epoch": meta.get("best_epoch"),
        },
        "generated": data.generated,
        "notice": GENERATED_NOTICE if data.generated else "",
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    plot_confusion(counts, out / "confusion_matrix.png", data.generated)
    plot_reliability(labels["test"], probs["test"], calibrated["test"], out / "reliability.png")
    write_markdown(metrics, out / "report.md")
    log.info("test macro-F1 %.4f, melanoma sensitivity %.3f", metrics["f1_macro"], sensitivity)
    return metrics
