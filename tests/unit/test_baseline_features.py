"""Hand-made features of the Random Forest baseline."""

from __future__ import annotations

import numpy as np

from dermaops.train.baseline import handcrafted_features


def test_shape_and_histograms_sum_to_one() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (4, 90, 120, 3), dtype=np.uint8)
    features = handcrafted_features(pixels)
    assert features.shape == (4, 45) and features.dtype == np.float32
    hue, gray, lbp = features[:, 10:22], features[:, 22:30], features[:, 30:40]
    for hist in (hue, gray, lbp):
        assert np.allclose(hist.sum(axis=1), 1.0, atol=1e-5)


def test_features_separate_a_dark_centre_from_a_flat_image() -> None:
    flat = np.full((1, 90, 120, 3), 200, np.uint8)
    lesion = flat.copy()
    lesion[:, 30:60, 40:80] = 60
    f_flat, f_lesion = handcrafted_features(flat)[0], handcrafted_features(lesion)[0]
    assert abs(f_flat[-1]) < 1e-6 and f_lesion[-1] > 0.2  # border minus centre brightness
    assert f_lesion[40] > f_flat[40] == 0.0  # mean gradient magnitude
