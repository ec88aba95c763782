"""Per-image statistics, computed the same way for the training reference and live traffic.

Drift monitoring compares these between the prepared training set and what the predictor
sees, so both sides must call :func:`image_stats` on the same kind of input: the decoded,
resized uint8 RGB array of the cache.
"""

from __future__ import annotations

from typing import Final

import numpy as np

STAT_NAMES: Final = (
    "brightness",
    "contrast",
    "saturation",
    "hue_mean",
    "hue_spread",
    "sharpness",
    "width",
    "height",
    "aspect",
)


def image_stats(pixels: np.ndarray, original_size: tuple[int, int]) -> dict[str, float]:
    """Colour, texture and size statistics of one image.

    Args:
        pixels: (height, width, 3) uint8 RGB.
        original_size: (width, height) of the file before any resizing.

    Returns:
        ``brightness`` and ``contrast`` (mean and std of luma, 0..1), ``saturation`` (mean HSV
        saturation, 0..1), ``hue_mean`` (circular mean hue in degrees, weighted by saturation),
        ``hue_spread`` (1 - mean resultant length, 0..1), ``sharpness`` (variance of the
        Laplacian of luma at half resolution, 0..1 scale), and the original ``width``, ``height`` and ``aspect``.
    """
    # Every second pixel of every second row: a quarter of the work, the same statistics
    # for reference and live traffic alike. Planar float32 copies, because numpy reductions
    # over a size-3 last axis are slow.
    r, g, b = np.moveaxis(pixels[::2, ::2], -1, 0).astype(np.float32) * np.float32(1 / 255)
    luma = 0.299 * r + 0.587 * g + 0.114 * b
    high, low = np.maximum(np.maximum(r, g), b), np.minimum(np.minimum(r, g), b)
    chroma = high - low
    saturation = np.divide(chroma, high, out=np.zeros_like(chroma), where=high > 0)
    hue = _hue_radians(r, g, b, high, chroma)
    weight = float(saturation.sum())
    mean_vector = (
        complex(float((saturation * np.cos(hue)).sum()), float((saturation * np.sin(hue)).sum()))
        / weight
        if weight > 0
        else 0j
    )
    width, height = original_size
    return {
        "brightness": float(luma.mean()),
        "contrast": float(luma.std()),
        "saturation": float(saturation.mean()),
        "hue_mean": float(np.degrees(np.angle(mean_vector)) % 360.0),
        "hue_spread": float(1.0 - abs(mean_vector)),
        "sharpness": float(_laplacian(luma).var()),
        "width": float(width),
        "height": float(height),
        "aspect": float(width / height) if height else 0.0,
    }


def _hue_radians(
    r: np.ndarray, g: np.ndarray, b: np.ndarray, high: np.ndarray, chroma: np.ndarray
) -> np.ndarray:
    """HSV hue in radians (0 where the pixel is gray)."""
    safe = np.where(chroma > 0, chroma, np.float32(1))
    sector = np.where(
        high == r, (g - b) / safe, np.where(high == g, (b - r) / safe + 2, (r - g) / safe + 4)
    )
    hue: np.ndarray = np.where(chroma > 0, sector % 6, 0) * np.float32(np.pi / 3)
    return hue


def _laplacian(gray: np.ndarray) -> np.ndarray:
    """The 4-neighbour Laplacian of the interior pixels."""
    centre = gray[1:-1, 1:-1]
    result: np.ndarray = gray[:-2, 1:-1] + gray[2:, 1:-1] + gray[1:-1, :-2] + gray[1:-1, 2:]
    return result - 4.0 * centre
