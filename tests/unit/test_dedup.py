"""The copy detector's threshold, on the generated set: copies above it, other lesions below."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageEnhance

from dermaops.data.dedup import NEAR, find_copies, pixel_digest, thumbnail
from dermaops.imaging import decode, resize_cover, to_array


def _cached(data: bytes) -> np.ndarray:
    """What prepare caches of an image (cover 300 x 225)."""
    return to_array(resize_cover(decode(data).image, (300, 225)))


def _jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


COPIES: dict[str, Callable[[Image.Image], bytes]] = {
    "re-encoded at quality 60": lambda im: _jpeg(im, 60),
    "halved": lambda im: _jpeg(im.resize((im.width // 2, im.height // 2))),
    "brightened by 8 %": lambda im: _jpeg(ImageEnhance.Brightness(im).enhance(1.08)),
}


@pytest.fixture(scope="module")
def generated(synth_raw: Path) -> tuple[pd.DataFrame, list[np.ndarray], list[bytes]]:
    meta = pd.read_csv(synth_raw / "HAM10000_metadata.csv")
    raw = [next(synth_raw.rglob(f"{i}.jpg")).read_bytes() for i in meta["image_id"]]
    return meta, [_cached(b) for b in raw], raw


def test_copies_correlate_above_near_and_other_lesions_below(
    generated: tuple[pd.DataFrame, list[np.ndarray], list[bytes]],
) -> None:
    meta, pixels, raw = generated
    thumbs = np.stack([thumbnail(p) for p in pixels])
    scores = thumbs @ thumbs.T
    lesions = meta["lesion_id"].to_numpy()
    others = lesions[:, None] != lesions[None, :]
    assert scores[others].max() < NEAR, "two lesions would be taken for one photograph"
    for how, copy in COPIES.items():
        worst = min(
            float(thumbnail(_cached(copy(Image.open(io.BytesIO(b)).convert("RGB")))) @ t)
            for b, t in zip(raw[:20], thumbs[:20], strict=True)
        )
        assert worst >= NEAR, f"a copy {how} correlates at {worst:.4f}"


def test_find_copies_names_the_closest_earlier_image_exact_or_near(
    generated: tuple[pd.DataFrame, list[np.ndarray], list[bytes]],
) -> None:
    meta, pixels, raw = generated
    earlier = meta[["image_id", "lesion_id"]]
    exact = pixels[3].copy()
    near = _cached(_jpeg(Image.open(io.BytesIO(raw[5])).convert("RGB"), 60))
    unrelated = np.full_like(pixels[0], 128)
    unrelated[::7] = 30
    candidates = pd.DataFrame({"image_id": ["FB_a", "FB_b", "FB_c"]})
    found = find_copies(candidates, [exact, near, unrelated], earlier, pixels)
    assert found["FB_a"].exact and found["FB_a"].image_id == meta["image_id"][3]
    assert not found["FB_b"].exact and found["FB_b"].lesion_id == meta["lesion_id"][5]
    assert "FB_c" not in found
    assert pixel_digest(exact) == pixel_digest(pixels[3]) != pixel_digest(near)
