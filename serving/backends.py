"""Where the forward pass runs: ONNX Runtime on CPU, or torch (fp16, channels_last) on CUDA."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from dermaops.errors import ConfigError
from dermaops.model.artifact import ONNX, ModelArtifact
from dermaops.model.embedding import WithEmbedding

log = logging.getLogger(__name__)


Outputs = tuple[np.ndarray, np.ndarray]  # logits (N, 7) and embedding (N, D), float32


class Backend(Protocol):
    name: str

    def __call__(self, batch: torch.Tensor) -> Outputs:
        """Logits and embeddings for a normalised batch (N, 3, S, S).

        A model exported before embeddings were part of the graph gives an (N, 0) embedding.
        """
        ...


class OnnxBackend:
    """ONNX Runtime's CPU provider, one session, all cores unless told otherwise."""

    name = "onnxruntime"

    def __init__(self, path: Path, threads: int = 0):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or (os.cpu_count() or 1)
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle threads sleep instead of spinning: the event loop and decoding need the cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def __call__(self, batch: torch.Tensor) -> Outputs:
        logits, *embedding = self.session.run(None, {self.input: batch.numpy()})
        logits = np.asarray(logits, dtype=np.float32)
        if not embedding:
            return logits, np.zeros((len(logits), 0), np.float32)
        return logits, np.asarray(embedding[0], dtype=np.float32)


class TorchBackend:
    """The torch model; on CUDA in fp16 and channels_last, optionally compiled."""

    def __init__(self, model: WithEmbedding, device: torch.device, compile: bool = False):
        self.device = device
        self.half = device.type == "cuda"
        model = model.to(device).eval()
        if self.half:
            model = model.half().to(memory_format=torch.channels_last)
        self.model = torch.compile(model) if compile else model
        self.name = f"torch-{device.type}" + ("-fp16" if self.half else "")

    @torch.inference_mode()
    def __call__(self, batch: torch.Tensor) -> Outputs:
        x = batch.to(self.device, non_blocking=True)
        if self.half:
            x = x.half().contiguous(memory_format=torch.channels_last)
        logits, embedding = self.model(x)
        return logits.float().cpu().numpy(), embedding.float().cpu().numpy()


def choose_backend(artifact: ModelArtifact, choice: str, compile: bool = False) -> Backend:
    """``auto``: torch on CUDA when there is a GPU, else ONNX Runtime when the model has ONNX.

    Raises:
        ConfigError: ``onnx`` asked for a model without model.onnx, or ``cuda`` without a GPU.
    """
    folder, onnx = artifact.folder, artifact.folder / ONNX
    cuda = torch.cuda.is_available()
    if choice == "auto":
        choice = "cuda" if cuda else ("onnx" if onnx.is_file() else "torch")
    if choice == "onnx":
        if not onnx.is_file():
            raise ConfigError(f"--backend onnx: {folder} has no {ONNX}")
        return OnnxBackend(onnx)
    if choice == "cuda" and not cuda:
        raise ConfigError("--backend cuda: CUDA is not available here")
    if choice not in ("cuda", "torch"):
        raise ConfigError(f"--backend {choice!r}: choose auto, onnx, torch or cuda")
    device = torch.device("cuda" if choice == "cuda" else "cpu")
    return TorchBackend(WithEmbedding(artifact.torch_model(), artifact.arch), device, compile)
