"""The model split at its head: logits and the embedding the head reads.

The embedding's principal components (:mod:`dermaops.model.projection`) are what drift
monitoring compares.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from dermaops.model.factory import ARCHS


class WithEmbedding(nn.Module):
    """A classifier split at its head: ``forward`` returns (logits, embedding).

    The body is a copy of the model whose head is the identity, so the original model is left
    as it was (Grad-CAM and training still use it), and the exported ONNX graph has two plain
    outputs with no hooks.
    """

    def __init__(self, model: nn.Module, arch: str):
        super().__init__()
        path = ARCHS[arch].head
        self.body = copy.deepcopy(model)
        self.head = self.body.get_submodule(path)
        parent, _, attr = path.rpartition(".")
        self.body.get_submodule(parent).add_module(attr, nn.Identity())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.body(x)
        return self.head(embedding), embedding
