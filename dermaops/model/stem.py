"""The one preprocessing stem, shared by training, evaluation and serving.

Every image reaches a model the same way: decoded and scaled to cover the cache size (what
``prepare`` stores), its short side scaled to ``image_size`` with antialiasing, centre-cropped
square, and normalised with the mean and std saved beside the weights. Training replaces the
centre crop with random augmentation (:mod:`dermaops.train.augment`) and nothing else.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from PIL import Image

from dermaops.imaging import resize_cover, to_array
from dermaops.model.artifact import Preprocessing


def fit_short_side(pixels: torch.Tensor, size: int, chunk: int = 256) -> torch.Tensor:
    """Scale uint8 (N, H, W, 3) images so the short side is ``size``, keeping the aspect."""
    n, h, w, _ = pixels.shape
    scale = size / min(h, w)
    out_h, out_w = round(h * scale), round(w * scale)
    if (out_h, out_w) == (h, w):
        return pixels
    parts = []
    for start in range(0, n, chunk):
        x = pixels[start : start + chunk].permute(0, 3, 1, 2).float()
        x = F.interpolate(
            x, size=(out_h, out_w), mode="bilinear", antialias=True, align_corners=False
        )
        parts.append(x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1))
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


def cache_pixels(image: Image.Image, pre: Preprocessing) -> np.ndarray:
    """What ``prepare`` would store for this image: uint8 (H, W, 3) covering ``cache_size``."""
    return to_array(resize_cover(image, pre.cache_size))


def images_to_batch(images: list[Image.Image], pre: Preprocessing) -> torch.Tensor:
    """Decoded RGB images (e.g. from a request) to the model's normalised input batch."""
    return pixels_to_batch([cache_pixels(img, pre) for img in images], pre)


def pixels_to_batch(pixels: list[np.ndarray], pre: Preprocessing) -> torch.Tensor:
    """Cache pixels (from :func:`cache_pixels`) to the model's normalised input batch."""
    stacked = torch.from_numpy(np.stack(pixels))
    return eval_batch(fit_short_side(stacked, pre.image_size), pre)
