"""The one preprocessing stem and the batched augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from dermaops.model.artifact import Preprocessing
from dermaops.model.stem import (
    centre_crop,
    eval_batch,
    fit_short_side,
    images_to_batch,
)
from dermaops.train.augment import AugmentSettings, apply, augment, draw

PRE = Preprocessing(
    image_size=64, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), cache_size=(120, 90)
)


def _pixels(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(
        0, 256, (n, h, w, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed)
    )


def test_fit_short_side_keeps_the_aspect() -> None:
    out = fit_short_side(_pixels(3, 90, 120), 64)
    assert out.shape == (3, 64, 85, 3) and out.dtype == torch.uint8
    same = _pixels(1, 64, 85)
    assert fit_short_side(same, 64) is same


def test_eval_batch_centre_crops_and_normalises() -> None:
    pixels = torch.full((2, 64, 85, 3), 255, dtype=torch.uint8)
    pixels[:, :, :10] = 0  # outside the centre square: must be cropped away
    x = eval_batch(pixels, PRE)
    assert x.shape == (2, 3, 64, 64)
    assert torch.allclose(x, torch.full_like(x, (1.0 - 0.5) / 0.25))
    assert centre_crop(pixels, 64).shape == (2, 64, 64, 3)


def test_serving_path_equals_the_training_path() -> None:
    """A decoded image through images_to_batch equals the cached pixels through eval_batch."""
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (450, 600, 3), dtype=np.uint8))
    served = images_to_batch([image], PRE)
    cached = torch.from_numpy(np.array(PRE.cache_pixels(image)))[None]
    trained = eval_batch(fit_short_side(cached, PRE.image_size), PRE)
    assert torch.equal(served, trained)


def test_augment_shapes_range_and_determinism() -> None:
    pixels = _pixels(8, 64, 85)
    a = augment(pixels, 48, torch.Generator().manual_seed(3))
    b = augment(pixels, 48, torch.Generator().manual_seed(3))
    c = augment(pixels, 48, torch.Generator().manual_seed(4))
    assert a.shape == (8, 3, 48, 48) and a.dtype == torch.float32
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_a_ranks_rows_of_a_batchs_draw_transform_its_images_as_the_whole_batch_does() -> None:
    """Data-parallel training: each rank augments its rows of a global batch exactly as one
    process augments the whole batch."""
    pixels = _pixels(6, 64, 85)
    whole = augment(pixels, 48, torch.Generator().manual_seed(3))
    drawn = draw(6, 64, 85, torch.Generator().manual_seed(3))
    for rank in range(2):
        rows = torch.arange(rank, 6, 2)
        assert torch.equal(apply(pixels[rows], 48, drawn.rows(rows)), whole[rows])


def test_each_image_gets_its_own_transform() -> None:
    same = _pixels(1, 64, 64).repeat(6, 1, 1, 1)
    out = augment(same, 32, torch.Generator().manual_seed(0))
    assert len({round(float(img.sum()), 3) for img in out}) == 6


def test_no_op_settings_return_the_image_up_to_flips() -> None:
    none = AugmentSettings(scale=(1.0, 1.0), ratio=(1.0, 1.0), degrees=0.0, brightness=0.0,
                           contrast=0.0, saturation=0.0, hue=0.0)  # fmt: skip
    pixels = _pixels(4, 32, 32)
    out = augment(pixels, 32, torch.Generator().manual_seed(0), none)
    x = pixels.permute(0, 3, 1, 2).float() / 255
    for original, result in zip(x, out, strict=True):
        candidates = [original, original.flip(-1), original.flip(-2), original.flip(-1, -2)]
        assert min(float((result - c).abs().max()) for c in candidates) < 1e-4


@pytest.mark.parametrize("flip_axis", [-1, -2])
def test_augment_is_label_preserving_for_a_centred_blob(flip_axis: int) -> None:
    """A bright disc in the centre stays mostly inside the crop: rotation and flips keep it."""
    yy, xx = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    disc = ((yy - 32) ** 2 + (xx - 32) ** 2 < 15**2).to(torch.uint8) * 255
    pixels = disc[None, :, :, None].repeat(8, 1, 1, 3).flip(flip_axis + 1)
    out = augment(pixels, 32, torch.Generator().manual_seed(1), AugmentSettings(scale=(0.6, 1.0)))
    assert (out.mean(dim=(1, 2, 3)) > 0.1).all()
