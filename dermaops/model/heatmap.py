"""Class activation maps made into pictures: a class's heatmap, and the overlay a clinician sees.

NumPy only, so the CPU predictor explains without torch. For a head that is global average pooling
then one linear layer (resnet18/50, efficientnet_b0), the gradient of a class's logit with respect
to the last block's maps is the head's weight for that class over every position alike, so
Grad-CAM's map is the class activation map ``sum_c w[k, c] * A[c]`` (CAM, Zhou et al. 2016); the
exported serving graph outputs those maps, and :func:`class_heatmaps` finishes them the way
``pytorch-grad-cam`` does (ReLU, scaled to 0..1, resized bilinearly, scaled again).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

EPS = 1e-7  # pytorch-grad-cam's, so that a flat map stays 0 rather than dividing by zero


def class_heatmaps(cams: np.ndarray, classes: Sequence[int], size: int) -> np.ndarray:
    """Heatmaps (N, size, size) in 0..1 of one class per image, from class maps (N, K, h, w)."""
    if cams.ndim != 4 or len(cams) != len(classes):
        raise ValueError(f"class maps {cams.shape} for {len(classes)} classes")
    chosen = cams[np.arange(len(classes)), np.asarray(classes, dtype=np.int64)]
    maps = unit_range(np.maximum(chosen.astype(np.float32), 0))
    return unit_range(resize_bilinear(maps, (size, size)))


def unit_range(maps: np.ndarray) -> np.ndarray:
    """Each map (N, H, W) shifted to start at 0 and scaled to end at (almost) 1."""
    low = maps.min(axis=(1, 2), keepdims=True)
    shifted = maps - low
    scaled: np.ndarray = shifted / (EPS + shifted.max(axis=(1, 2), keepdims=True))
    return scaled.astype(np.float32)


def resize_bilinear(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Maps (N, h, w) to (N, height, width): pixel centres aligned, edges repeated, no smoothing.

    The sampling of OpenCV's ``INTER_LINEAR`` (and torch's ``align_corners=False``), which is what
    ``pytorch-grad-cam`` resizes with.
    """
    rows, row_w = _taps(maps.shape[1], size[0])
    cols, col_w = _taps(maps.shape[2], size[1])
    x = maps.astype(np.float32)
    x = x[:, rows[0]] * (1 - row_w)[None, :, None] + x[:, rows[1]] * row_w[None, :, None]
    out: np.ndarray = x[:, :, cols[0]] * (1 - col_w) + x[:, :, cols[1]] * col_w
    return out.astype(np.float32)


def _taps(n_in: int, n_out: int) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
    """For each output position: the two input positions it reads and the second one's weight."""
    where = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
    low = np.floor(where).astype(np.int64)
    high = np.minimum(low + 1, n_in - 1)
    return (low, high), (where - low).astype(np.float32)


def jet(values: np.ndarray) -> np.ndarray:
    """The jet colour map: values in 0..1 (any shape) to RGB in 0..1 (shape + (3,))."""
    x = np.clip(values, 0, 1)[..., None] * 4
    centres = np.array([3.0, 2.0, 1.0], dtype=np.float32)  # red, green, blue
    colours: np.ndarray = np.clip(1.5 - np.abs(x - centres), 0, 1)
    return colours.astype(np.float32)


def overlay(image: np.ndarray, heatmap: np.ndarray, weight: float = 0.55) -> np.ndarray:
    """A heatmap (S, S) in 0..1, coloured, blended over an RGB uint8 image (S, S, 3).

    ``weight`` is the image's share; the blend is scaled so its brightest channel is 255.
    """
    if not 0 <= weight <= 1:
        raise ValueError(f"weight must be in 0..1, got {weight}")
    colour = jet(np.round(heatmap * 255) / 255)
    blended = (1 - weight) * colour + weight * (image.astype(np.float32) / 255)
    result: np.ndarray = np.round(255 * blended / max(float(blended.max()), EPS))
    return result.astype(np.uint8)
