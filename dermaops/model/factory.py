"""The model factory: torchvision backbones with a 7-class head, and the preprocessing that
travels with their weights."""

from __future__ import annotations

import logging
import pickle
import urllib.error
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torchvision import models as tvm

from dermaops.errors import DermaOpsError

log = logging.getLogger(__name__)


class WeightsUnavailableError(DermaOpsError):
    """Pretrained weights are neither cached nor downloadable."""


@dataclass(frozen=True)
class Arch:
    """Where a torchvision model keeps its classifier, its last feature block, and the layer
    Grad-CAM reads (the last one with spatial feature maps).

    ``pooled_linear``: the head is global average pooling of ``cam_layer``'s maps then one linear
    layer, so Grad-CAM equals the class activation map and the serving graph can output it.
    """

    head: str
    last_block: tuple[str, ...]
    cam_layer: str
    pooled_linear: bool = False


ARCHS: dict[str, Arch] = {
    "resnet18": Arch("fc", ("layer4",), "layer4", pooled_linear=True),
    "resnet50": Arch("fc", ("layer4",), "layer4", pooled_linear=True),
    "efficientnet_b0": Arch(
        "classifier.1", ("features.7", "features.8"), "features.8", pooled_linear=True
    ),
    "convnext_tiny": Arch("classifier.2", ("features.7",), "features.7"),
    "mobilenet_v3_large": Arch(
        "classifier.3", ("features.14", "features.15", "features.16"), "features.16"
    ),
}


def build_model(name: str, num_classes: int, weights: str | Path = "none") -> nn.Module:
    """A torchvision ``name`` with a ``num_classes`` head.

    Args:
        name: one of :data:`ARCHS`.
        num_classes: outputs of the new head.
        weights: ``none`` (random init), ``imagenet`` (torchvision's cache; downloaded if it
            can be), or the path of a state dict saved from a model of the same ``name``.

    Raises:
        ValueError: unknown model name.
        WeightsUnavailableError: ``imagenet`` weights not cached and not downloadable, or a
            weights file that cannot be read.
    """
    if name not in ARCHS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(ARCHS)}")
    model: nn.Module = tvm.get_model(name, weights=None)
    if str(weights) == "imagenet":
        model.load_state_dict(_imagenet_state(name))
    _replace_head(model, ARCHS[name].head, num_classes)
    if str(weights) not in ("imagenet", "none"):
        _load_file(model, Path(weights))
    return model


def head_parameters(model: nn.Module, name: str) -> list[nn.Parameter]:
    """Parameters of the classifier head."""
    return list(model.get_submodule(ARCHS[name].head).parameters())


def last_block_parameters(model: nn.Module, name: str) -> list[nn.Parameter]:
    """Parameters of the last feature block (what phase 2 unfreezes)."""
    return [p for block in ARCHS[name].last_block for p in model.get_submodule(block).parameters()]


def _replace_head(model: nn.Module, path: str, num_classes: int) -> None:
    old = model.get_submodule(path)
    if not isinstance(old, nn.Linear):
        raise TypeError(f"{path} is {type(old).__name__}, expected Linear")
    parent_path, _, attr = path.rpartition(".")
    # add_module replaces a child in place, for attributes and Sequential indices alike.
    model.get_submodule(parent_path).add_module(attr, nn.Linear(old.in_features, num_classes))


def _imagenet_state(name: str) -> dict[str, torch.Tensor]:
    weights = tvm.get_model_weights(name).DEFAULT
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    try:
        state: dict[str, torch.Tensor] = weights.get_state_dict(progress=True, check_hash=True)
    except (urllib.error.URLError, OSError, RuntimeError) as e:
        raise WeightsUnavailableError(
            f"ImageNet weights for {name} are not in torchvision's cache ({cached}) and cannot "
            f"be downloaded ({e}). Copy {Path(weights.url).name} from {weights.url} there, "
            "or train with --weights none"
        ) from e
    return state


def _load_file(model: nn.Module, path: Path) -> None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except (OSError, RuntimeError, KeyError, ValueError, pickle.UnpicklingError) as e:
        raise WeightsUnavailableError(f"cannot load weights from {path}: {e}") from e
