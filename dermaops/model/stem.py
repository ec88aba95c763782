"""The one preprocessing stem, shared by training, evaluation and serving.

Every image reaches a model the same way: decoded and scaled to cover the cache size (what
``prepare`` stores), its short side scaled to ``image_size`` with antialiasing, centre-cropped
square, and normalised with the mean and std saved beside the weights. Training replaces the
centre crop with random augmentation (:mod:`dermaops.train.augment`) and nothing else. The CPU
predictor runs all but the decode inside its ONNX graph (:class:`Stem`, exported with the model).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from PIL import Image
from torch import nn

from dermaops.model.artifact import Preprocessing


def short_side_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """(height, width) of an image whose short side is scaled to ``size``, aspect kept."""
    scale = size / min(height, width)
    return round(height * scale), round(width * scale)


def scale_to(x: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Float (N, 3, H, W) grey levels to ``shape``: antialiased bilinear, rounded to whole ones."""
    x = F.interpolate(x, size=shape, mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255)


def fit_short_side(pixels: torch.Tensor, size: int, chunk: int = 256) -> torch.Tensor:
    """Scale uint8 (N, H, W, 3) images so the short side is ``size``, keeping the aspect."""
    n, h, w, _ = pixels.shape
    shape = short_side_shape(h, w, size)
    if shape == (h, w):
        return pixels
    parts = []
    for start in range(0, n, chunk):
        x = scale_to(pixels[start : start + chunk].permute(0, 3, 1, 2).float(), shape)
        parts.append(x.to(torch.uint8).permute(0, 2, 3, 1))
    return torch.cat(parts).contiguous()


def centre_crop(pixels: torch.Tensor, size: int) -> torch.Tensor:
    """The centre ``size`` x ``size`` square of uint8 (N, H, W, 3) images."""
    _, h, w, _ = pixels.shape
    top, left = (h - size) // 2, (w - size) // 2
    return pixels[:, top : top + size, left : left + size]


def normalise(images: torch.Tensor, pre: Preprocessing) -> torch.Tensor:
    """Float (N, 3, S, S) in 0..1 to the model's input distribution."""
    mean = torch.tensor(pre.mean, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(pre.std, device=images.device).view(1, 3, 1, 1)
    return (images - mean) / std


def eval_batch(pixels: torch.Tensor, pre: Preprocessing) -> torch.Tensor:
    """uint8 (N, H, W, 3) with short side ``image_size`` to normalised (N, 3, S, S) floats."""
    square = centre_crop(pixels, pre.image_size).permute(0, 3, 1, 2).float().div_(255)
    return normalise(square, pre)


def images_to_batch(images: list[Image.Image], pre: Preprocessing) -> torch.Tensor:
    """Decoded RGB images (e.g. from a request) to the model's normalised input batch."""
    return pixels_to_batch([pre.cache_pixels(img) for img in images], pre)


def pixels_to_batch(pixels: np.ndarray | Sequence[np.ndarray], pre: Preprocessing) -> torch.Tensor:
    """Cache pixels (:meth:`Preprocessing.cache_pixels`) to the model's normalised input batch."""
    array = pixels if isinstance(pixels, np.ndarray) else np.stack(pixels)
    if not array.flags.writeable:  # a view of a decoded image: torch wants memory it may write
        array = array.copy()
    stacked = torch.from_numpy(array)
    return eval_batch(fit_short_side(stacked, pre.image_size), pre)


class Stem(nn.Module):
    """The stem as one traceable module, for the exported serving graph.

    uint8 cache pixels (N, H, W, 3) in; the normalised batch (N, 3, S, S) and the square the model
    sees, as uint8 (N, S, S, 3), out. The steps of :func:`pixels_to_batch`, without the chunking
    (a graph gets a whole batch).
    """

    def __init__(self, pre: Preprocessing):
        super().__init__()
        self.pre = pre
        self.shape = short_side_shape(pre.cache_size[1], pre.cache_size[0], pre.image_size)

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.shape != tuple(pixels.shape[1:3]):
            scaled = scale_to(pixels.permute(0, 3, 1, 2).float(), self.shape)
            pixels = scaled.to(torch.uint8).permute(0, 2, 3, 1)
        seen = centre_crop(pixels, self.pre.image_size)
        return eval_batch(seen, self.pre), seen
