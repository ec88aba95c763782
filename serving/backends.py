"""Where the forward pass runs: ONNX Runtime on CPU, or torch (fp16, channels_last) on CUDA."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from dermaops.errors import ConfigError
from dermaops.export import ONNX_FILE
from dermaops.model_dir import load_model_dir

log = logging.getLogger(__name__)


class Backend(Protocol):
    name: str

    def __call__(self, batch: torch.Tensor) -> np.ndarray:
        """Logits (N, 7) as float32 for a normalised batch (N, 3, S, S)."""
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

    def __call__(self, batch: torch.Tensor) -> np.ndarray:
        logits = self.session.run(None, {self.input: batch.numpy()})[0]
        return np.asarray(logits, dtype=np.float32)


class TorchBackend:
    """The torch model; on CUDA in fp16 and channels_last, optionally compiled."""

    def __init__(self, model: torch.nn.Module, device: torch.device, compile: bool = False):
        self.device = device
        self.half = device.type == "cuda"
        model = model.to(device).eval()
        if self.half:
            model = model.half().to(memory_format=torch.channels_last)
        self.model = torch.compile(model) if compile else model
        self.name = f"torch-{device.type}" + ("-fp16" if self.half else "")

    @torch.inference_mode()
    def __call__(self, batch: torch.Tensor) -> np.ndarray:
        x = batch.to(self.device, non_blocking=True)
        if self.half:
            x = x.half().contiguous(memory_format=torch.channels_last)
        return self.model(x).float().cpu().numpy()


def choose_backend(folder: Path, choice: str, compile: bool = False) -> Backend:
    """``auto``: torch on CUDA when there is a GPU, else ONNX Runtime when the model has ONNX.

    Raises:
        ConfigError: ``onnx`` asked for a model without model.onnx, or ``cuda`` without a GPU.
    """
    onnx = folder / ONNX_FILE
    cuda = torch.cuda.is_available()
    if choice == "auto":
        choice = "cuda" if cuda else ("onnx" if onnx.is_file() else "torch")
    if choice == "onnx":
        if not onnx.is_file():
            raise ConfigError(f"--backend onnx: {folder} has no {ONNX_FILE}")
        return OnnxBackend(onnx)
    if choice == "cuda" and not cuda:
        raise ConfigError("--backend cuda: CUDA is not available here")
    if choice not in ("cuda", "torch"):
        raise ConfigError(f"--backend {choice!r}: choose auto, onnx, torch or cuda")
    model, _, _ = load_model_dir(folder)
    return TorchBackend(model, torch.device("cuda" if choice == "cuda" else "cpu"), compile)
