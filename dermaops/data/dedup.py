"""The same photograph sent twice: an exact and a perceptual fingerprint of an image's pixels.

Clinicians send back images the model has seen: a test image of an earlier split, returned as
feedback, would otherwise become a new lesion in train or val and leak the test split.
``prepare`` compares each feedback image with every other image of the set by their cached
pixels (decoded upright and scaled to cover ``cache_size`` like every image), so a copy without
metadata, re-encoded or resized is found:

- exact: the SHA-256 of the cached pixels (any re-encoding that decodes to the same pixels);
- near: the correlation of 16 x 16 colour thumbnails (zero mean, unit norm) at least ``NEAR``.

``NEAR`` was measured on 300 generated images of 229 lesions (``tests/unit/test_dedup.py``
keeps it true on a sample): copies re-encoded at JPEG quality 60, halved or brightened by 8 %
correlate at 0.9944 or more with their original; two images of different lesions at 0.9894 at
most (64-bit perceptual hashes could not tell them apart: generated lesions are drawn alike, as
dermoscopic images are, a dark blob on skin). A copy cropped by 3 % a side correlates at about
0.89 and is not found.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
from PIL import Image

NEAR = 0.992  # thumbnail correlation from which two images are one photograph
THUMB = 16  # thumbnail side


def pixel_digest(pixels: np.ndarray) -> str:
    """The exact fingerprint: SHA-256 of uint8 (H, W, 3) pixels and their shape."""
    digest = hashlib.sha256(str(pixels.shape).encode())
    digest.update(np.ascontiguousarray(pixels).tobytes())
    return digest.hexdigest()


def thumbnail(pixels: np.ndarray) -> np.ndarray:
    """The perceptual fingerprint: a THUMB x THUMB colour thumbnail of uint8 (H, W, 3) pixels,
    flattened, zero mean and unit norm (float32), so a dot product is a correlation."""
    small = Image.fromarray(pixels).resize((THUMB, THUMB), Image.Resampling.LANCZOS)
    values = np.asarray(small, dtype=np.float64).flatten()
    values -= values.mean()
    norm = float(np.linalg.norm(values))
    return (values / norm if norm else values).astype(np.float32)


@dataclass(frozen=True)
class Match:
    """The earlier image an image duplicates."""

    image_id: str
    lesion_id: str
    correlation: float  # 1.0 for a pixel-identical copy
    exact: bool


def find_copies(
    candidates: pd.DataFrame, candidate_pixels: list[np.ndarray],
    earlier: pd.DataFrame, earlier_pixels: list[np.ndarray],
) -> dict[str, Match]:  # fmt: skip
    """For each candidate image (rows with ``image_id``, and its pixels) that duplicates an
    ``earlier`` one (rows with ``image_id`` and ``lesion_id``): the closest such image."""
    if earlier.empty or candidates.empty:
        return {}
    ids, lesions = earlier["image_id"].tolist(), earlier["lesion_id"].tolist()
    by_digest = {pixel_digest(p): i for i, p in enumerate(earlier_pixels)}
    thumbs = np.stack([thumbnail(p) for p in earlier_pixels])
    found: dict[str, Match] = {}
    for image_id, pixels in zip(candidates["image_id"], candidate_pixels, strict=True):
        same = by_digest.get(pixel_digest(pixels))
        if same is not None:
            found[image_id] = Match(ids[same], lesions[same], 1.0, True)
            continue
        scores = thumbs @ thumbnail(pixels)
        closest = int(scores.argmax())
        if scores[closest] >= NEAR:
            found[image_id] = Match(ids[closest], lesions[closest], float(scores[closest]), False)
    return found
