"""Augmentation of whole uint8 batches on the training device.

One ``affine_grid`` + ``grid_sample`` per batch gives every image its own random resized
crop, rotation and flips; colour jitter (brightness, contrast, saturation, hue) is a per-image
affine map of RGB. Nothing is decoded and nothing runs per image in Python, so on a GPU the
data path keeps up with the model.

The random numbers are drawn for a whole global batch (:func:`draw`) before any rank takes its
rows (:meth:`Draw.rows`): image ``i`` of a batch is transformed alike whatever the number of
ranks, so a data-parallel run trains on the same inputs as one process.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F  # noqa: N812

# RGB to YIQ: a hue shift is a rotation of the I/Q plane, a saturation change a scaling of it.
_TO_YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))


@dataclass(frozen=True)
class AugmentSettings:
    """Ranges of the random transforms; dermoscopy has no up or left, so rotation is full."""

    scale: tuple[float, float] = (0.35, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    degrees: float = 180.0
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.04


@dataclass(frozen=True)
class Draw:
    """The random transform of each image of a batch: crop/rotation/flip matrices and the
    colour jitter's factors, one row per image."""

    theta: torch.Tensor  # (N, 2, 3): output coordinates to normalised input coordinates
    brightness: torch.Tensor
    contrast: torch.Tensor
    saturation: torch.Tensor
    hue: torch.Tensor  # radians

    def rows(self, index: torch.Tensor) -> Draw:
        """The draws of some images of the batch (a rank's share)."""
        return Draw(*(getattr(self, f.name)[index] for f in fields(self)))


def draw(
    n: int, h: int, w: int, generator: torch.Generator, cfg: AugmentSettings = AugmentSettings()
) -> Draw:
    """Random transforms for ``n`` images of ``h`` x ``w`` pixels, on the generator's device."""
    device = generator.device
    theta = _crop_rotate_flip(n, h, w, cfg, generator, device)
    return Draw(
        theta=theta,
        brightness=_uniform(1 - cfg.brightness, 1 + cfg.brightness, n, generator, device),
        contrast=_uniform(1 - cfg.contrast, 1 + cfg.contrast, n, generator, device),
        saturation=_uniform(1 - cfg.saturation, 1 + cfg.saturation, n, generator, device),
        hue=_uniform(-cfg.hue, cfg.hue, n, generator, device) * (2 * math.pi),
    )


def augment(
    pixels: torch.Tensor,
    size: int,
    generator: torch.Generator,
    cfg: AugmentSettings = AugmentSettings(),
) -> torch.Tensor:
    """uint8 (N, H, W, 3) to float (N, 3, size, size) in 0..1, each image transformed anew."""
    n, h, w, _ = pixels.shape
    return apply(pixels, size, draw(n, h, w, generator, cfg))


def apply(pixels: torch.Tensor, size: int, d: Draw) -> torch.Tensor:
    """uint8 (N, H, W, 3) to float (N, 3, size, size) in 0..1 under the drawn transforms."""
    n = pixels.shape[0]
    x = pixels.permute(0, 3, 1, 2).float().div_(255)
    grid = F.affine_grid(d.theta, [n, 3, size, size], align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return _colour_jitter(x, d).clamp_(0, 1)


def _uniform(
    low: float, high: float, n: int, g: torch.Generator, device: torch.device
) -> torch.Tensor:
    return torch.rand(n, generator=g, device=device) * (high - low) + low


def _crop_rotate_flip(
    n: int, h: int, w: int, cfg: AugmentSettings, g: torch.Generator, device: torch.device
) -> torch.Tensor:
    """Per-image 2x3 matrices from output coordinates to normalised input coordinates."""
    area = _uniform(*cfg.scale, n, g, device) * (h * w)
    log_ratio = _uniform(math.log(cfg.ratio[0]), math.log(cfg.ratio[1]), n, g, device)
    crop_w = torch.sqrt(area * log_ratio.exp()).clamp(max=w)
    crop_h = torch.sqrt(area / log_ratio.exp()).clamp(max=h)
    centre_x = (torch.rand(n, generator=g, device=device) - 0.5) * (w - crop_w)
    centre_y = (torch.rand(n, generator=g, device=device) - 0.5) * (h - crop_h)
    angle = _uniform(-cfg.degrees, cfg.degrees, n, g, device) * (math.pi / 180)
    flip_x = torch.randint(0, 2, (n,), generator=g, device=device) * 2 - 1
    flip_y = torch.randint(0, 2, (n,), generator=g, device=device) * 2 - 1
    cos, sin = angle.cos(), angle.sin()
    # pixels = R(angle) @ diag(flip_x * crop_w / 2, flip_y * crop_h / 2) @ out + centre
    sx, sy = flip_x * crop_w / 2, flip_y * crop_h / 2
    theta = torch.stack(
        [
            torch.stack([cos * sx, -sin * sy, centre_x], dim=1) * (2 / w),
            torch.stack([sin * sx, cos * sy, centre_y], dim=1) * (2 / h),
        ],
        dim=1,
    )
    return theta


def _colour_jitter(x: torch.Tensor, d: Draw) -> torch.Tensor:
    n, device = x.shape[0], x.device
    brightness, contrast = d.brightness.view(n, 1, 1, 1), d.contrast.view(n, 1, 1, 1)
    saturation, hue = d.saturation, d.hue
    x = x * brightness
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * contrast + mean
    # Saturation scales I and Q, hue rotates them: one 3x3 matrix per image.
    cos, sin = hue.cos() * saturation, hue.sin() * saturation
    ones, zeros = torch.ones_like(cos), torch.zeros_like(cos)
    yiq = torch.stack(
        [
            torch.stack([ones, zeros, zeros], 1),
            torch.stack([zeros, cos, -sin], 1),
            torch.stack([zeros, sin, cos], 1),
        ],
        dim=1,
    )
    to_yiq = torch.tensor(_TO_YIQ, device=device)
    matrix = torch.linalg.inv(to_yiq) @ yiq @ to_yiq
    return torch.einsum("nij,njhw->nihw", matrix, x)
