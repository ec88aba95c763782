"""Running a model on prepared pixels: device choice, autocast, batched probabilities.

Shared by training (validation), evaluation and, later, serving.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from dermaops.data.prepared import PreparedSet
from dermaops.errors import DermaOpsError
from dermaops.model.artifact import Preprocessing
from dermaops.model.embedding import WithEmbedding
from dermaops.model.stem import eval_batch, fit_short_side


@dataclass
class SplitTensors:
    """One split of a prepared set, ready for a model of input size ``image_size``."""

    pixels: torch.Tensor  # uint8 (N, S, W, 3), short side = image size
    labels: torch.Tensor  # int64 (N,)


def split_tensors(
    data: PreparedSet, split: str, image_size: int, device: torch.device
) -> SplitTensors:
    """A split from the cache, its short side scaled to ``image_size``, on ``device``."""
    pixels, labels, _ = data.split(split)
    resized = fit_short_side(torch.from_numpy(pixels), image_size)
    return SplitTensors(resized.to(device), torch.from_numpy(labels).to(device))


def resolve_device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise DermaOpsError("--device cuda was asked for but CUDA is not available here")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """bf16 where the GPU has it, fp16 otherwise; full precision on CPU."""
    if device.type != "cuda" or precision == "fp32":
        return None
    if precision == "fp16" or (precision == "auto" and not torch.cuda.is_bf16_supported()):
        return torch.float16
    return torch.bfloat16


def predict_probs(
    model: nn.Module, pixels: torch.Tensor, pre: Preprocessing, batch: int
) -> np.ndarray:
    """Softmax probabilities (N, 7) for uint8 images whose short side is ``image_size``."""
    return torch.cat(
        [torch.softmax(logits, dim=1) for logits in _forward(model, pixels, pre, batch)]
    ).numpy()


def predict_with_embeddings(
    model: WithEmbedding, pixels: torch.Tensor, pre: Preprocessing, batch: int
) -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities (N, 7) and the head's input (N, D) for the same images."""
    probs, embeddings = [], []
    for logits, embedding in _forward(model, pixels, pre, batch):
        probs.append(torch.softmax(logits, dim=1))
        embeddings.append(embedding)
    return torch.cat(probs).numpy(), torch.cat(embeddings).numpy()


@torch.no_grad()
def _forward(
    model: nn.Module, pixels: torch.Tensor, pre: Preprocessing, batch: int
) -> Iterator[Any]:
    """The model's outputs, batch by batch, as float32 on the CPU; eval mode while it runs."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    dtype = autocast_dtype(device, "auto")
    try:
        for start in range(0, len(pixels), batch):
            x = eval_batch(pixels[start : start + batch].to(device), pre)
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=dtype) if dtype else nullcontext():
                out = model(x)
            if isinstance(out, tuple):
                yield tuple(o.float().cpu() for o in out)
            else:
                yield out.float().cpu()
    finally:
        model.train(was_training)
