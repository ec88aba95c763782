"""ONNX export for CPU serving, with a parity check against the torch model."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dermaops.errors import DermaOpsError
from dermaops.model.artifact import Preprocessing
from dermaops.model.embedding import WithEmbedding

log = logging.getLogger(__name__)

OUTPUTS = ("logits", "embedding")
PARITY_TOLERANCE = 1e-4


class ExportError(DermaOpsError):
    """The ONNX file disagrees with the torch model, or could not be written."""


def export_onnx(model: nn.Module, arch: str, pre: Preprocessing, path: Path) -> float:
    """Write ``model`` as one ONNX file (dynamic batch); return the parity gap it passed.

    The graph has two outputs: ``logits`` and ``embedding`` (the head's input, for drift).

    Raises:
        ExportError: export failed, or probabilities differ by more than 1e-4 on a check batch.
    """
    split = WithEmbedding(model.eval().cpu(), arch).eval()
    example = torch.zeros(1, 3, pre.image_size, pre.image_size)
    try:
        torch.onnx.export(
            split, (example,), str(path), input_names=["input"], output_names=list(OUTPUTS),
            dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024)},), dynamo=True,
            external_data=False,
        )  # fmt: skip
    except Exception as e:  # the exporter raises many types; all mean the same to a user
        raise ExportError(f"ONNX export of {type(model).__name__} failed: {e}") from e
    gap = onnx_parity(split, path, pre)
    if gap > PARITY_TOLERANCE:
        path.unlink(missing_ok=True)
        raise ExportError(
            f"ONNX probabilities differ from torch by {gap:.2e} (> {PARITY_TOLERANCE})"
        )
    log.info("exported %s (parity: max |dp| = %.2e)", path, gap)
    return gap


def onnx_parity(model: WithEmbedding, path: Path, pre: Preprocessing, batch: int = 8) -> float:
    """Max absolute difference of softmax probabilities, torch vs ONNX Runtime, on one batch."""
    import onnxruntime as ort

    x = torch.randn(
        batch, 3, pre.image_size, pre.image_size, generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        expected = torch.softmax(model.eval().cpu()(x)[0], dim=1).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits, _ = session.run(None, {"input": x.numpy()})
    got = torch.softmax(torch.from_numpy(np.asarray(logits)), dim=1).numpy()
    return float(np.abs(got - expected).max())
