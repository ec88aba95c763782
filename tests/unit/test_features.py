"""Per-image statistics used as the drift reference."""

from __future__ import annotations

import colorsys
import math

import numpy as np
import pytest

from dermaops.data.features import STAT_NAMES, image_stats


def _solid(rgb: tuple[int, int, int]) -> np.ndarray:
    return np.broadcast_to(np.asarray(rgb, np.uint8), (40, 60, 3)).copy()


def test_all_names_are_returned_as_floats() -> None:
    stats = image_stats(_solid((10, 20, 30)), (600, 450))
    assert tuple(stats) == STAT_NAMES
    assert all(isinstance(v, float) for v in stats.values())
    assert stats["aspect"] == pytest.approx(600 / 450)


def test_brightness_contrast_and_saturation() -> None:
    black, white = (
        image_stats(_solid((0, 0, 0)), (1, 1)),
        image_stats(_solid((255, 255, 255)), (1, 1)),
    )
    assert black["brightness"] == 0.0 and white["brightness"] == pytest.approx(1.0)
    assert black["contrast"] == 0.0 and white["saturation"] == 0.0
    half = np.zeros((40, 60, 3), np.uint8)
    half[:, 30:] = 255
    assert image_stats(half, (1, 1))["contrast"] == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize(
    ("rgb", "hue"), [((255, 0, 0), 0.0), ((0, 255, 0), 120.0), ((0, 0, 255), 240.0)]
)
def test_hue_is_circular_mean_in_degrees(rgb: tuple[int, int, int], hue: float) -> None:
    stats = image_stats(_solid(rgb), (1, 1))
    assert stats["hue_mean"] == pytest.approx(hue, abs=0.5)
    assert stats["hue_spread"] == pytest.approx(0.0, abs=1e-6)
    assert stats["saturation"] == pytest.approx(1.0)


def test_sharpness_separates_flat_from_textured() -> None:
    checker = (np.indices((80, 80)).sum(axis=0) % 4 < 2).astype(np.uint8)[..., None] * 255
    assert image_stats(_solid((90, 90, 90)), (1, 1))["sharpness"] == 0.0
    assert image_stats(np.repeat(checker, 3, axis=2), (1, 1))["sharpness"] > 0.1


def test_statistics_match_their_definitions_pixel_by_pixel() -> None:
    """The vectorised, in-place arithmetic against each statistic written out per pixel."""
    pixels = np.random.default_rng(3).integers(0, 256, (24, 30, 3), np.uint8)
    seen = pixels[::2, ::2].reshape(-1, 3).astype(float) / 255  # every second pixel and row
    luma = seen @ [0.299, 0.587, 0.114]
    saturation = [colorsys.rgb_to_hsv(*p)[1] for p in seen]
    vectors = [(r - (g + b) / 2, math.sqrt(3) / 2 * (g - b)) for r, g, b in seen]
    mean = np.mean(vectors, axis=0)
    lengths = [math.hypot(*v) for v in vectors]
    grey = luma.reshape(12, 15)
    laplacian = [
        grey[i - 1, j] + grey[i + 1, j] + grey[i, j - 1] + grey[i, j + 1] - 4 * grey[i, j]
        for i in range(1, 11)
        for j in range(1, 14)
    ]
    stats = image_stats(pixels, (600, 450))
    expected = {
        "brightness": luma.mean(),
        "contrast": luma.std(),
        "saturation": np.mean(saturation),
        "hue_mean": math.degrees(math.atan2(mean[1], mean[0])) % 360,
        "hue_spread": 1 - math.hypot(*mean) / np.mean(lengths),
        "sharpness": np.var(laplacian),
    }
    for name, value in expected.items():
        assert stats[name] == pytest.approx(value, rel=1e-4, abs=1e-6), name
