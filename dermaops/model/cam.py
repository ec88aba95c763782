"""Grad-CAM heatmaps for any model of the factory, for evaluation reports and the GPU predictor.

The ``grad-cam`` package does the work (Grad-CAM, Grad-CAM++ and others); this module picks the
layer for each architecture. The CPU predictor gets the same maps from the serving graph without
torch (:mod:`dermaops.model.heatmap`, which also colours them into overlays).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus
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
