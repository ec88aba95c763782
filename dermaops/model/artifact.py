"""The saved model directory, and :class:`ModelArtifact`, the one reader of a registered one.

model.json     architecture, classes, preprocessing (size, mean, std), provenance
weights.pt     the state dict
labels.json    class index -> code and full name
calibration.json  temperature, melanoma threshold, class bias (validation)  } added by
projection.json   the embedding projection fitted on validation            } assemble(), at
guard.npz         the out-of-distribution guard and its threshold          } registration
reference_stats.csv  the drift reference (statistics and model outputs)    }
precision.json    the INT8 decision; model.int8.onnx where it was kept     }
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

import dermaops
from dermaops.errors import DermaOpsError
from dermaops.evaluation.calibration import apply_temperature
from dermaops.imaging import resize_cover, to_array
from dermaops.labels import CLASSES, FULL_NAMES, INDEX
from dermaops.model.guard import GUARD, OodGuard
from dermaops.model.projection import PROJECTION, Projection

if TYPE_CHECKING:  # torch is imported by the functions that need it, never by serving's reads
    from torch import nn

log = logging.getLogger(__name__)

WEIGHTS, META, LABELS = "weights.pt", "model.json", "labels.json"
CALIBRATION = "calibration.json"
CLASS_BIAS = "class_bias"  # calibration.json's key: {class: bias}, read by the estimates
ONNX = "model.onnx"  # the serving graph: cache pixels in, what the predictor answers with out
INT8 = "model.int8.onnx"  # that graph quantized, where it kept the model's quality
PRECISION = "precision.json"  # which of the two serves, and why (dermaops.model.quantize)
GRAPH_INPUT = "pixels"  # uint8 (N, H, W, 3) at cache_size, as cache_pixels makes them
GRAPH_OUTPUTS = ("logits", "embedding", "image", "cams")  # cams: only for pooled-linear heads
REFERENCE = "reference_stats.csv"  # the drift reference (dermaops.model.reference writes it)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MEL = INDEX["mel"]


class ModelDirError(DermaOpsError):
    """A model directory is missing a file or was written for other classes."""


@dataclass(frozen=True)
class Preprocessing:
    """What serving must do to an image before the model sees it (saved with the weights).

    An image is scaled to cover ``cache_size`` (as prepare does), then its short side to
    ``image_size``, then centre-cropped square and normalised with ``mean`` and ``std``.
    """

    image_size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    cache_size: tuple[int, int] = (300, 225)

    def cache_pixels(self, image: Image.Image) -> np.ndarray:
        """The first step of the stem, done where the image is decoded (no torch): what
        ``prepare`` would store for ``image``, uint8 (H, W, 3) covering ``cache_size``."""
        return to_array(resize_cover(image, self.cache_size))

    def seen_box(self, size: tuple[int, int]) -> tuple[float, float, float, float]:
        """The square of an upright ``size`` (width, height) image the model sees, as (left,
        top, right, bottom) fractions of its width and height: the centre square of the part
        that covers ``cache_size``, whose side is the short side of that part."""
        w, h = size
        scale = max(self.cache_size[0] / w, self.cache_size[1] / h)
        side = min(self.cache_size) / scale
        left, top = (w - side) / 2 / w, (h - side) / 2 / h
        return left, top, 1 - left, 1 - top

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        return cls(
            image_size=int(data["image_size"]),
            mean=_triple(data["mean"]),
            std=_triple(data["std"]),
            cache_size=(int(data["cache_size"][0]), int(data["cache_size"][1])),
        )


def _triple(values: Any) -> tuple[float, float, float]:
    a, b, c = (float(v) for v in values)
    return a, b, c


@dataclass(frozen=True)
class ModelArtifact:
    """A model folder as registration stores it, read once: what serving, the monitor, the
    pyfunc model and the benches know of a model. Torch is loaded only by :meth:`torch_model`.
    """

    folder: Path
    meta: dict[str, Any] = field(repr=False)
    preprocessing: Preprocessing
    temperature: float = 1.0
    melanoma_threshold: float = 0.5

    @classmethod
    def load(cls, root: Path) -> ModelArtifact:
        """The model at ``root``: a model folder, or an MLflow model holding one.

        Raises:
            ModelDirError: no model there, or one trained for other classes.
        """
        folder = locate_model_dir(root)
        try:
            meta: dict[str, Any] = json.loads((folder / META).read_text())
            preprocessing = Preprocessing.from_dict(meta["preprocessing"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ModelDirError(f"{folder} is not a DermaOps model directory: {e}") from e
        if meta.get("classes") != list(CLASSES):
            raise ModelDirError(
                f"{folder} was trained for classes {meta.get('classes')}, not {CLASSES}"
            )
        return cls(folder, meta, preprocessing, *_calibration(folder))

    @property
    def arch(self) -> str:
        return str(self.meta["arch"])

    @property
    def onnx_path(self) -> Path | None:
        path = self.folder / ONNX
        return path if path.is_file() else None

    @property
    def int8_path(self) -> Path | None:
        """The INT8 serving graph, registered only where it kept the model's quality."""
        path = self.folder / INT8
        return path if path.is_file() else None

    @cached_property
    def precision(self) -> dict[str, Any]:
        """The INT8 decision (``precision.json``); empty for models registered without one."""
        path = self.folder / PRECISION
        if not path.is_file():
            return {}
        try:
            decision: dict[str, Any] = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ModelDirError(f"{path} is not a precision decision: {e}") from e
        return decision

    @property
    def reference_path(self) -> Path:
        """The drift reference registered with the model (``reference_stats.csv``)."""
        return self.folder / REFERENCE

    @cached_property
    def projection(self) -> Projection | None:
        """The embedding projection registered with the model, if it has one."""
        path = self.folder / PROJECTION
        if not path.is_file():
            log.warning("%s has no %s: no embedding features for the monitor", self.folder,
                        PROJECTION)  # fmt: skip
            return None
        return Projection.load(path)

    @cached_property
    def guard(self) -> OodGuard | None:
        """The out-of-distribution guard registered with the model, if it has one."""
        path = self.folder / GUARD
        if not path.is_file():
            log.warning("%s has no %s: images are not checked for being dermoscopy and every "
                        "answer's in_distribution is null (dermaops evaluate fits the guard and "
                        "writes it into the model folder)", self.folder, GUARD)  # fmt: skip
            return None
        return OodGuard.load(path)

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated class probabilities (N, 7) from the model's logits."""
        return apply_temperature(np.asarray(logits, np.float64), self.temperature, already_log=True)

    def melanoma_flags(self, probabilities: np.ndarray) -> np.ndarray:
        """Whether each image is flagged for melanoma at the registered operating point."""
        flags: np.ndarray = probabilities[:, MEL] >= self.melanoma_threshold
        return flags

    def torch_model(self) -> nn.Module:
        """The weights in their torchvision model (eval mode, CPU)."""
        from dermaops.model.factory import build_model

        return build_model(self.arch, len(CLASSES), self.folder / WEIGHTS).eval()


def _calibration(folder: Path) -> tuple[float, float]:
    """(temperature, melanoma threshold) registered with the model; uncalibrated defaults."""
    path = folder / CALIBRATION
    if not path.is_file():
        log.warning("%s has no %s: temperature 1 and melanoma threshold 0.5", folder, CALIBRATION)
        return 1.0, 0.5
    try:
        calibration = json.loads(path.read_text())
        return float(calibration["temperature"]), float(calibration["melanoma_threshold"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelDirError(f"{path} is not a calibration: {e}") from e


def save_model_dir(
    folder: Path, model: nn.Module, arch: str, pre: Preprocessing, extra: dict[str, Any]
) -> None:
    """Write weights, model.json and labels.json into ``folder``."""
    import torch

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


def write_calibration(
    folder: Path, temperature: float, melanoma_threshold: float,
    class_bias: dict[str, float] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Store the evaluation's temperature, melanoma operating threshold and, where it was fitted,
    the class bias the label-free estimates read (:data:`CLASS_BIAS`) with the model."""
    calibration: dict[str, Any] = {"temperature": temperature,
                                   "melanoma_threshold": melanoma_threshold}  # fmt: skip
    if class_bias is not None:
        calibration[CLASS_BIAS] = class_bias
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


def assemble(model_dir: Path, prepared: Path, eval_dir: Path, dest: Path) -> dict[str, Any]:
    """Copy a trained ``model_dir`` to ``dest`` with what its evaluation learned: calibration,
    the embedding projection, the out-of-distribution guard and the drift reference. What
    registration stores and serving loads.

    Returns:
        The calibration (temperature, melanoma threshold and class bias).
    """
    from dermaops.evaluation.result import EvaluationMetrics, MetricsFileError
    from dermaops.model.reference import OUTPUTS, join_reference

    try:
        metrics = EvaluationMetrics.read(eval_dir)
    except MetricsFileError as e:
        raise ModelDirError(f"{eval_dir} is not an evaluation folder: {e}") from e
    shutil.copytree(model_dir, dest)
    calibration = write_calibration(
        dest, metrics.temperature, metrics.melanoma.threshold, metrics.class_bias
    )
    shutil.copy2(eval_dir / PROJECTION, dest / PROJECTION)
    shutil.copy2(eval_dir / GUARD, dest / GUARD)
    for decided in (PRECISION, INT8):  # the INT8 graph is there only where it was kept
        if (eval_dir / decided).is_file():
            shutil.copy2(eval_dir / decided, dest / decided)
    join_reference(prepared / REFERENCE, eval_dir / OUTPUTS, dest / REFERENCE)
    return calibration
