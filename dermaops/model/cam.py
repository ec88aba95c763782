"""Grad-CAM heatmaps for any model of the factory, for evaluation reports and serving.

The ``grad-cam`` package does the work (Grad-CAM, Grad-CAM++ and others); this module picks
the layer for each architecture and turns maps into overlays.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from dermaops.model.factory import ARCHS

Method = Literal["gradcam", "gradcam++"]
_METHODS = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus}


def heatmaps(
    model: nn.Module,
    arch: str,
    inputs: torch.Tensor,
    classes: list[int],
    method: Method = "gradcam",
) -> np.ndarray:
    """Class-activation maps (N, S, S) in 0..1 for normalised ``inputs`` (N, 3, S, S).

    Args:
        model: a model from :func:`~dermaops.model.factory.build_model`.
        arch: its architecture name (chooses the layer).
        inputs: what the model sees, from the stem.
        classes: the class to explain for each input.
        method: gradcam or gradcam++.
    """
    layer = model.get_submodule(ARCHS[arch].cam_layer)
    was_training = model.training
    model.eval()
    with _METHODS[method](model=model, target_layers=[layer]) as cam:
        maps = cam(input_tensor=inputs, targets=[ClassifierOutputTarget(c) for c in classes])
    model.train(was_training)
    return np.asarray(maps, dtype=np.float32)


def overlay(image: np.ndarray, heatmap: np.ndarray, weight: float = 0.55) -> np.ndarray:
    """A heatmap (S, S) in 0..1 blended over an RGB uint8 image (S, S, 3)."""
    blended: np.ndarray = show_cam_on_image(
        image.astype(np.float32) / 255.0, heatmap, use_rgb=True, image_weight=weight
    )
    return blended
