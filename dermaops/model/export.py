"""The serving graph: one ONNX file that takes cache pixels and gives all the CPU predictor needs.

The graph holds the stem after decoding (short side to the input size, centre crop, normalise:
:class:`~dermaops.model.stem.Stem`) and the model, and has up to four outputs: ``logits``,
``embedding`` (the head's input, for drift), ``image`` (the square the model saw, for overlays)
and, where the head is global pooling then one linear layer, ``cams``: each class's activation map
of the last block, which is what Grad-CAM computes for such a head. So the CPU predictor needs
ONNX Runtime and NumPy, not torch.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dermaops.errors import DermaOpsError
from dermaops.model.artifact import GRAPH_INPUT, GRAPH_OUTPUTS, Preprocessing
from dermaops.model.embedding import WithEmbedding
from dermaops.model.factory import ARCHS
from dermaops.model.stem import Stem, pixels_to_batch

log = logging.getLogger(__name__)

PARITY_TOLERANCE = 1e-4


class ExportError(DermaOpsError):
    """The ONNX file disagrees with the torch model, or could not be written."""


class ServingGraph(nn.Module):
    """Cache pixels (N, H, W, 3) uint8 to logits, embedding, the seen image and (maybe) cams."""

    def __init__(self, model: nn.Module, arch: str, pre: Preprocessing):
        super().__init__()
        from torchvision.models.feature_extraction import create_feature_extractor

        spec = ARCHS[arch]
        self.stem = Stem(pre)
        self.explains = spec.pooled_linear
        model = model.eval().cpu()
        if self.explains:
            self.maps = create_feature_extractor(model, {spec.cam_layer: "maps"})
            self.head = model.get_submodule(spec.head)
        else:
            self.split = WithEmbedding(model, arch)

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x, image = self.stem(pixels)
        if not self.explains:
            logits, embedding = self.split(x)
            return logits, embedding, image
        maps = self.maps(x)["maps"]
        embedding = maps.mean(dim=(2, 3))  # the head's global average pooling
        cams = torch.einsum("kc,nchw->nkhw", self.head.weight, maps)
        return self.head(embedding), embedding, image, cams


def export_onnx(model: nn.Module, arch: str, pre: Preprocessing, path: Path) -> float:
    """Write the serving graph of ``model`` as one ONNX file (dynamic batch); return its parity gap.

    Raises:
        ExportError: export failed, or probabilities differ by more than 1e-4 on a check batch.
    """
    graph = ServingGraph(model, arch, pre).eval()
    outputs = list(GRAPH_OUTPUTS if graph.explains else GRAPH_OUTPUTS[:3])
    width, height = pre.cache_size
    example = torch.zeros(2, height, width, 3, dtype=torch.uint8)
    try:
        torch.onnx.export(
            graph, (example,), str(path), input_names=[GRAPH_INPUT], output_names=outputs,
            dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024)},), dynamo=True,
            external_data=False, opset_version=18, verbose=False,
        )  # fmt: skip
    except Exception as e:  # the exporter raises many types; all mean the same to a user
        raise ExportError(f"ONNX export of {type(model).__name__} failed: {e}") from e
    gap = onnx_parity(model, path, pre)
    if gap > PARITY_TOLERANCE:
        path.unlink(missing_ok=True)
        raise ExportError(
            f"ONNX probabilities differ from torch by {gap:.2e} (> {PARITY_TOLERANCE})"
        )
    log.info("exported %s (parity: max |dp| = %.2e; explains: %s)", path, gap, graph.explains)
    return gap


def onnx_parity(model: nn.Module, path: Path, pre: Preprocessing, batch: int = 8) -> float:
    """Max absolute difference of softmax probabilities, the torch stem and model vs the graph.

    The check batch is smooth random images (noise averaged over blocks), so the antialiased
    resize sees edges and flats as photographs have them.
    """
    import onnxruntime as ort

    width, height = pre.cache_size
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, (batch, height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    pixels = np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2)[:, :height, :width]
    pixels = np.ascontiguousarray(pixels)
    with torch.no_grad():
        expected = torch.softmax(model.eval().cpu()(pixels_to_batch(list(pixels), pre)), dim=1)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run([GRAPH_OUTPUTS[0]], {GRAPH_INPUT: pixels})
    got = torch.softmax(torch.from_numpy(np.asarray(logits)), dim=1)
    return float((got - expected).abs().max())
