"""Safe decoding: limits, truncation, orientation, every mode to RGB, aspect-keeping resize."""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dermaops.errors import ImageError, ImageTooLargeError, NotAnImageError, TruncatedImageError
from dermaops.imaging import PIL_MAX_PIXELS, ImageLimits, decode, resize_cover, to_rgb


def _encode(image: Image.Image, fmt: str, **save: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **save)
    return buf.getvalue()


def test_decodes_jpeg_bytes_and_files_alike(
    jpeg_bytes: Callable[..., bytes], tmp_path: Path
) -> None:
    data = jpeg_bytes(64, 48)
    path = tmp_path / "a.jpg"
    path.write_bytes(data)
    from_bytes, from_file = decode(data), decode(path)
    assert from_bytes.image.mode == "RGB"
    assert from_bytes.image.size == (64, 48) == from_file.original_size
    assert from_bytes.format == "JPEG"
    assert np.array_equal(np.asarray(from_bytes.image), np.asarray(from_file.image))


def test_draft_mode_decodes_at_the_smallest_scale_that_covers(
    jpeg_bytes: Callable[..., bytes],
) -> None:
    decoded = decode(jpeg_bytes(600, 450), min_size=(300, 225))
    assert decoded.image.size == (300, 225)
    assert decoded.original_size == (600, 450)
    # One pixel more than half: the next scale up (full size) must be used.
    assert decode(jpeg_bytes(600, 450), min_size=(301, 225)).image.size == (600, 450)


def test_exif_orientation_is_applied(jpeg_bytes: Callable[..., bytes]) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: display rotated 90 degrees clockwise
    data = jpeg_bytes(80, 40, exif=exif.tobytes())
    decoded = decode(data)
    assert decoded.image.size == (40, 80)
    # Draft sizes are asked for in stored orientation, so the upright result still covers.
    small = decode(jpeg_bytes(160, 80, exif=exif.tobytes()), min_size=(40, 80))
    assert small.image.size == (40, 80)


@pytest.mark.parametrize(
    ("mode", "value", "expected"),
    [
        ("L", 200, (200, 200, 200)),
        ("1", 1, (255, 255, 255)),
        ("CMYK", (0, 255, 255, 0), (255, 0, 0)),
        ("RGBA", (10, 20, 30, 0), (0, 0, 0)),  # fully transparent: the black background
        ("LA", (120, 255), (120, 120, 120)),
        ("I;16", 65535, (255, 255, 255)),
        ("I", 32896, (128, 128, 128)),  # 16-bit PNG grayscale opens as mode I
        ("F", 0.5, (128, 128, 128)),
    ],
)
def test_every_mode_becomes_8bit_rgb(mode: str, value: object, expected: tuple[int, ...]) -> None:
    rgb = to_rgb(Image.new(mode, (4, 4), value))  # type: ignore[arg-type]
    assert rgb.mode == "RGB"
    assert tuple(np.asarray(rgb)[0, 0]) == expected


def test_palette_png_with_transparency_and_16bit_png_decode() -> None:
    palette = Image.new("P", (8, 8), 1)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    assert tuple(np.asarray(decode(_encode(palette, "PNG")).image)[0, 0]) == (255, 0, 0)
    gray16 = Image.fromarray(np.full((8, 8), 65535, dtype=np.uint16))
    assert tuple(np.asarray(decode(_encode(gray16, "PNG")).image)[0, 0]) == (255, 255, 255)


def test_truncated_jpeg_is_a_clear_error(jpeg_bytes: Callable[..., bytes]) -> None:
    data = jpeg_bytes(200, 150)
    with pytest.raises(TruncatedImageError, match="truncated") as info:
        decode(data[: len(data) // 2])
    assert info.value.reason == "truncated_image"


@pytest.mark.parametrize("data", [b"", b"hello, not an image", b"\x00" * 64])
def test_non_images_are_refused(data: bytes) -> None:
    with pytest.raises(NotAnImageError):
        decode(data)


def test_corrupt_jpeg_body_is_an_image_error(jpeg_bytes: Callable[..., bytes]) -> None:
    data = bytearray(jpeg_bytes(200, 150))
    data[400:2000] = b"\xff" * 1600
    with pytest.raises(ImageError):
        decode(bytes(data))


def test_byte_limit_is_checked_before_reading(
    tmp_path: Path, jpeg_bytes: Callable[..., bytes]
) -> None:
    path = tmp_path / "big.jpg"
    path.write_bytes(jpeg_bytes(64, 48))
    with pytest.raises(ImageTooLargeError, match="bytes is over the limit"):
        decode(path, limits=ImageLimits(max_bytes=100))


def test_pixel_limit_stops_decompression_bombs_before_decoding() -> None:
    # 4000x4000 of one colour compresses to a few kB: a small file, a huge bitmap.
    bomb = _encode(Image.new("L", (4000, 4000)), "PNG")
    assert len(bomb) < 100_000
    with pytest.raises(ImageTooLargeError, match="pixels is over the limit"):
        decode(bomb, limits=ImageLimits(max_pixels=1_000_000))


def test_decoding_leaves_the_processs_warning_filters_alone(
    jpeg_bytes: Callable[..., bytes],
) -> None:
    """A warning shown once stays shown once however many images are decoded between
    (``warnings.catch_warnings`` in decode reset every registry, so KServe's deprecation
    warning was logged for every request; and it is not safe from the threads that decode)."""
    image = jpeg_bytes(64, 48)

    def warn() -> None:
        warnings.warn("a library's deprecation", DeprecationWarning, stacklevel=1)

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("default")
        for _ in range(3):
            warn()
            decode(image)
    assert len(seen) == 1


def test_a_pixel_limit_over_pils_own_is_refused() -> None:
    with pytest.raises(ValueError, match="over PIL's"):
        ImageLimits(max_pixels=PIL_MAX_PIXELS + 1)


def test_resize_cover_keeps_aspect_and_crops_the_centre() -> None:
    # 200x100: red left quarter, green middle half, blue right quarter.
    pixels = np.zeros((100, 200, 3), np.uint8)
    pixels[:, :50, 0] = 255
    pixels[:, 50:150, 1] = 255
    pixels[:, 150:, 2] = 255
    square = np.asarray(resize_cover(Image.fromarray(pixels), (100, 100)))
    assert square.shape == (100, 100, 3)
    assert (square[:, :, 1] == 255).all(), "the square crop must come from the green centre"
    wide = np.asarray(resize_cover(Image.fromarray(pixels), (100, 50)))
    assert wide.shape == (50, 100, 3)
    # Same aspect: scaled only, so every colour band survives at its share.
    assert (
        (wide[:, 10, 0] > 200).all()
        and (wide[:, 50, 1] > 200).all()
        and (wide[:, 90, 2] > 200).all()
    )


def test_resize_cover_is_identity_at_the_target_size(jpeg_bytes: Callable[..., bytes]) -> None:
    image = decode(jpeg_bytes(30, 20)).image
    assert resize_cover(image, (30, 20)) is image


def test_damaged_png_data_is_an_image_error_when_exif_is_read() -> None:
    """A PNG keeps EXIF after its pixels: reading the orientation decodes them (found by the
    fuzz test: KServe answered 500 with PIL's OSError)."""
    buf = io.BytesIO()
    Image.fromarray(np.arange(48 * 64 * 3, dtype=np.uint8).reshape(48, 64, 3)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    idat = data.index(b"IDAT") + 12  # inside the compressed pixels, past zlib's header
    data[idat : idat + 16] = bytes(16)
    with pytest.raises(ImageError):
        decode(bytes(data))


@pytest.mark.parametrize("size", [(55, 55), (55, 199), (97, 3), (1, 1)])
def test_resize_cover_of_sizes_whose_crop_box_rounds_below_zero(size: tuple[int, int]) -> None:
    """224 / 55 * 55 is a hair over 55 in floating point: the box's left edge came out at
    -5e-9 and PIL refused it (one size in thirty below 200 px)."""
    out = resize_cover(Image.new("RGB", size, (10, 20, 30)), (224, 224))
    assert out.size == (224, 224)
    assert out.getpixel((112, 112)) == (10, 20, 30)
