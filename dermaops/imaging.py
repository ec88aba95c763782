"""Safe image decoding, shared by data preparation and serving.

Every image DermaOps reads comes through :func:`decode`: byte and pixel limits are checked
before any pixel is decoded (decompression bombs), JPEGs are decoded at reduced scale when the
caller needs fewer pixels (PIL draft mode), EXIF orientation is applied, every mode becomes
8-bit RGB, and a truncated or corrupt file is a clear :class:`~dermaops.errors.ImageError`.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from dermaops.errors import ImageError, ImageTooLargeError, NotAnImageError, TruncatedImageError

_EXIF_ORIENTATION = 0x0112
_TRANSPOSED_ORIENTATIONS = frozenset({5, 6, 7, 8})  # rotated by 90 degrees: width and height swap
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N"})


# PIL warns above this many pixels (and refuses above twice as many): a pixel limit may not pass
# it, so that everything PIL would warn about is refused here, with no warning filter to set.
PIL_MAX_PIXELS: Final = int(Image.MAX_IMAGE_PIXELS or 0) or 89_478_485


@dataclass(frozen=True)
class ImageLimits:
    """What an image may weigh before it is refused, in bytes and in decoded pixels.

    Raises:
        ValueError: ``max_pixels`` over what PIL decodes without a decompression-bomb warning.
    """

    max_bytes: int = 25 * 2**20
    max_pixels: int = 40_000_000

    def __post_init__(self) -> None:
        if self.max_pixels > PIL_MAX_PIXELS:
            raise ValueError(f"max_pixels {self.max_pixels:,} is over PIL's {PIL_MAX_PIXELS:,}")


@dataclass(frozen=True)
class Decoded:
    """An 8-bit RGB image and what was known about the file before decoding."""

    image: Image.Image
    original_size: tuple[int, int]
    format: str


def decode(
    source: bytes | Path,
    *,
    limits: ImageLimits = ImageLimits(),
    min_size: tuple[int, int] | None = None,
) -> Decoded:
    """Decode an image file or bytes to upright 8-bit RGB.

    Args:
        source: the encoded image, or the path of a file holding it.
        limits: byte and pixel limits checked before decoding.
        min_size: (width, height) the caller needs at least, after orientation; a JPEG is then
            decoded at the smallest of its 1/1, 1/2, 1/4, 1/8 scales that still covers it.

    Raises:
        ImageTooLargeError: over the byte or pixel limit.
        NotAnImageError: not an image format PIL knows.
        TruncatedImageError: the file ends before the image does.
        ImageError: any other decoding failure.
    """
    data = _read_limited(source, limits.max_bytes)
    # No warnings.catch_warnings() here: it changes the process's filters, which is not safe
    # from the threads that decode, and resets every "once" registry (a library's deprecation
    # warning was then logged again for every request). An image PIL warns about is over
    # max_pixels and refused just below; one PIL refuses raises.
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as e:
        raise NotAnImageError("not an image (no known image header)") from e
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageTooLargeError(str(e)) from e  # the warning: where warnings are errors
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"unreadable image header: {e}") from e
    original_size = img.size
    if original_size[0] * original_size[1] > limits.max_pixels:
        raise ImageTooLargeError(
            f"{original_size[0]}x{original_size[1]} pixels is over the limit of "
            f"{limits.max_pixels:,}; downscale the image before sending it"
        )
    fmt = img.format or "unknown"
    orientation = _orientation(img)
    if min_size is not None and fmt == "JPEG":
        w, h = min_size
        img.draft("RGB", (h, w) if orientation in _TRANSPOSED_ORIENTATIONS else (w, h))
    _load(img)
    upright = ImageOps.exif_transpose(img) if orientation != 1 else img
    return Decoded(image=to_rgb(upright), original_size=original_size, format=fmt)


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit RGB: grayscale, palette, alpha (over black), CMYK, 16-bit, float."""
    if img.mode == "RGB":
        return img
    if img.mode in _SIXTEEN_BIT_MODES or img.mode in {"I", "F"}:
        return _wide_gray_to_rgb(img)
    if img.mode in {"RGBA", "LA", "PA", "RGBa", "La"} or "transparency" in img.info:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def resize_cover(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Scale ``img`` to cover ``size`` (width, height) without distortion, cropping the centre.

    The aspect ratio is kept: an image of the box's aspect is scaled only, any other loses
    equal margins on its longer side.
    """
    if img.size == size:
        return img
    w, h = img.size
    target_w, target_h = size
    scale = max(target_w / w, target_h / h)
    crop_w, crop_h = target_w / scale, target_h / scale
    left, top = max(0.0, (w - crop_w) / 2), max(0.0, (h - crop_h) / 2)  # no float dust below 0
    box = (left, top, min(w, left + crop_w), min(h, top + crop_h))
    return img.resize(size, Image.Resampling.BILINEAR, box=box, reducing_gap=3.0)


def to_array(img: Image.Image) -> np.ndarray:
    """An RGB image as a contiguous (height, width, 3) uint8 array."""
    return np.asarray(to_rgb(img), dtype=np.uint8)


def _read_limited(source: bytes | Path, max_bytes: int) -> bytes:
    if isinstance(source, Path):
        try:
            size = source.stat().st_size
            if size > max_bytes:
                raise ImageTooLargeError(_too_many_bytes(size, max_bytes))
            data = source.read_bytes()
        except OSError as e:
            raise ImageError(f"cannot read {source}: {e.strerror or e}") from e
    else:
        data = source
    if len(data) > max_bytes:
        raise ImageTooLargeError(_too_many_bytes(len(data), max_bytes))
    if not data:
        raise NotAnImageError("empty file")
    return data


def _too_many_bytes(size: int, max_bytes: int) -> str:
    return f"{size:,} bytes is over the limit of {max_bytes:,}; send a smaller file"


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation (1: upright). A PNG keeps its EXIF after the pixels, so reading it
    decodes them: the same errors as :func:`_load`."""
    try:
        return int(img.getexif().get(_EXIF_ORIENTATION, 1))
    except (EOFError, OSError, SyntaxError, ValueError) as e:
        raise _decode_error(e) from e


def _load(img: Image.Image) -> None:
    try:
        img.load()
    except (EOFError, OSError, SyntaxError, ValueError) as e:
        raise _decode_error(e) from e


def _decode_error(e: Exception) -> ImageError:
    if isinstance(e, EOFError) or "truncated" in str(e).lower():
        return TruncatedImageError(f"truncated image: {e or 'file ends early'}")
    return ImageError(f"corrupt image data: {e}")


def _wide_gray_to_rgb(img: Image.Image) -> Image.Image:
    pixels = np.asarray(img, dtype=np.float64)
    if img.mode == "F":
        peak = 1.0 if pixels.max(initial=0.0) <= 1.0 else 255.0
    else:
        peak = 65535.0 if img.mode in _SIXTEEN_BIT_MODES or pixels.max(initial=0) > 255 else 255.0
    gray = np.clip(np.rint(pixels * (255.0 / peak)), 0, 255).astype(np.uint8)
    return Image.fromarray(gray).convert("RGB")
