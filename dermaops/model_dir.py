"""The saved model directory: what training writes and evaluation and serving read.

model.json     architecture, classes, preprocessing (size, mean, std), provenance
weights.pt     the state dict
labels.json    class index -> code and full name
calibration.json  temperature and melanoma threshold fitted on validation   } added by
projection.json   the embedding projection fitted on validation            } assemble(), at
reference_stats.csv  the drift reference (statistics and model outputs)    } registration
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

import dermaops
from dermaops.errors import DermaOpsError
from dermaops.labels import CLASSES, FULL_NAMES
from dermaops.models import Preprocessing, build_model

WEIGHTS, META, LABELS = "weights.pt", "model.json", "labels.json"
CALIBRATION = "calibration.json"


class ModelDirError(DermaOpsError):
    """A model directory is missing a file or was written for other classes."""


def save_model_dir(
    folder: Path, model: nn.Module, arch: str, pre: Preprocessing, extra: dict[str, Any]
) -> None:
    """Write weights, model.json and labels.json into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, folder / WEIGHTS)
    meta = {
        "arch": arch,
        "classes": list(CLASSES),
        "preprocessing": pre.as_dict(),
        "dermaops_version": dermaops.__version__,
        **extra,
    }
    (folder / META).write_text(json.dumps(meta, indent=2) + "\n")
    labels = [{"index": i, "code": c, "name": FULL_NAMES[c]} for i, c in enumerate(CLASSES)]
    (folder / LABELS).write_text(json.dumps(labels, indent=2) + "\n")


def load_model_dir(folder: Path) -> tuple[nn.Module, Preprocessing, dict[str, Any]]:
    """The model (eval mode, CPU), its preprocessing, and model.json."""
    try:
        meta: dict[str, Any] = json.loads((folder / META).read_text())
    except (OSError, ValueError) as e:
        raise ModelDirError(f"{folder} is not a DermaOps model directory: {e}") from e
    if meta.get("classes") != list(CLASSES):
        raise ModelDirError(
            f"{folder} was trained for classes {meta.get('classes')}, not {CLASSES}"
        )
    model = build_model(meta["arch"], len(CLASSES), folder / WEIGHTS)
    return model.eval(), Preprocessing.from_dict(meta["preprocessing"]), meta


def write_calibration(folder: Path, metrics: dict[str, Any]) -> dict[str, float]:
    """Store the evaluation's temperature and melanoma operating threshold with the model."""
    try:
        calibration = {
            "temperature": float(metrics["temperature"]),
            "melanoma_threshold": float(metrics["melanoma"]["threshold"]),
        }
    except (KeyError, TypeError, ValueError) as e:
        raise ModelDirError(f"the evaluation metrics lack temperature or threshold: {e}") from e
    (folder / CALIBRATION).write_text(json.dumps(calibration, indent=2) + "\n")
    return calibration


def locate_model_dir(root: Path) -> Path:
    """The model directory at ``root`` or inside an MLflow model there (``artifacts/*/``)."""
    if (root / META).is_file():
        return root
    found = sorted(root.glob(f"artifacts/*/{META}"))
    if len(found) != 1:
        raise ModelDirError(f"{root} holds no DermaOps model ({META}) nor one MLflow model of it")
    return found[0].parent


def assemble(model_dir: Path, prepared: Path, eval_dir: Path, dest: Path) -> dict[str, float]:
    """Copy a trained ``model_dir`` to ``dest`` with what its evaluation learned: calibration,
    the embedding projection and the drift reference. What registration stores and serving loads.

    Returns:
        The calibration (temperature and melanoma threshold).
    """
    from dermaops.embedding import PROJECTION
    from dermaops.reference import OUTPUTS, REFERENCE, join_reference

    try:
        metrics = json.loads((eval_dir / "metrics.json").read_text())
    except (OSError, ValueError) as e:
        raise ModelDirError(f"{eval_dir} is not an evaluation folder: {e}") from e
    shutil.copytree(model_dir, dest)
    calibration = write_calibration(dest, metrics)
    shutil.copy2(eval_dir / PROJECTION, dest / PROJECTION)
    join_reference(prepared / REFERENCE, eval_dir / OUTPUTS, dest / REFERENCE)
    return calibration
