"""Patients' photographs: stored without metadata, kept only for a set time.

Every image DermaOps writes to disk (clinician feedback, retained serving traffic) goes through
:func:`clean_image` first: a JPEG loses its EXIF, XMP, IPTC, ICC and comment segments (GPS
positions, device serial numbers, capture dates) without re-compression, unless its EXIF
orientation must be applied first, which needs one re-encode at quality 95; a PNG is written
again from its pixels alone, which is lossless. :func:`purge` deletes what is older than the
retention period.
"""

from __future__ import annotations

import io
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from PIL import Image

from dermaops.errors import DermaOpsError
from dermaops.imaging import ImageLimits, decode

_JPEG_KEEP = {0xE0, 0xEE}  # APP0 (JFIF) and APP14 (Adobe colour transform): needed to decode
_EXIF_ORIENTATION = 0x0112


class UnsupportedImageError(DermaOpsError):
    """Only JPEG and PNG are stored."""


def clean_image(data: bytes, limits: ImageLimits = ImageLimits()) -> tuple[bytes, str]:
    """``data`` without metadata, and its file suffix (``.jpg`` or ``.png``).

    Raises:
        ImageError: not a readable image within ``limits`` (from :func:`decode`).
        UnsupportedImageError: an image, but neither JPEG nor PNG.
    """
    decoded = decode(data, limits=limits)
    if decoded.format == "JPEG":
        with Image.open(io.BytesIO(data)) as img:
            orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
        if orientation in (0, 1):
            return _strip_jpeg(data), ".jpg"
        return _encode(decoded.image, "JPEG", quality=95), ".jpg"
    if decoded.format == "PNG":
        with Image.open(io.BytesIO(data)) as img:
            pixels = img.convert("RGBA" if "A" in img.getbands() else "RGB")
        return _encode(pixels, "PNG"), ".png"
    raise UnsupportedImageError(f"{decoded.format} images are not stored; send JPEG or PNG")


def store_clean(data: bytes, target: Path) -> Path:
    """Write the cleaned image to ``target`` (suffix set by its format), atomically, mode 0600."""
    cleaned, suffix = clean_image(data)
    path = target.with_suffix(suffix)
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(f".{path.name}.partial")
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(cleaned)
    staged.replace(path)
    return path


def store_pixels(image: Image.Image, target: Path) -> Path:
    """Write a decoded image's pixels alone as JPEG (quality 95) at ``target``, mode 0600."""
    return store_clean(_encode(image.convert("RGB"), "JPEG", quality=95), target)


def has_metadata(data: bytes) -> bool:
    """Whether an image carries EXIF, XMP, IPTC, ICC or comments (all :func:`clean_image` drops)."""
    with Image.open(io.BytesIO(data)) as img:
        if len(img.getexif()) or img.info.get("icc_profile") or img.info.get("comment"):
            return True
        if any(k in img.info for k in ("exif", "xmp", "XML:com.adobe.xmp", "photoshop")):
            return True
    if data[:3] == b"\xff\xd8\xff":
        return any(marker not in _JPEG_KEEP for marker, _ in _jpeg_segments(data)[0])
    return False


def _encode(image: Image.Image, fmt: str, **options: int) -> bytes:
    """Pixels only: a fresh image carries no ``info`` for PIL to copy into the file."""
    fresh = Image.frombytes(image.mode, image.size, image.tobytes())
    buf = io.BytesIO()
    fresh.save(buf, fmt, **options)
    return buf.getvalue()


def _jpeg_segments(data: bytes) -> tuple[list[tuple[int, bytes]], int]:
    """The APPn and COM segments before the first scan, and where the rest begins."""
    segments, pos = [], 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if not (0xE0 <= marker <= 0xEF or marker == 0xFE):
            break
        segments.append((marker, data[pos : pos + 2 + length]))
        pos += 2 + length
    return segments, pos


def _strip_jpeg(data: bytes) -> bytes:
    """The JPEG with every APPn but JFIF and Adobe, and every comment, removed; same pixels."""
    segments, rest = _jpeg_segments(data)
    kept = b"".join(raw for marker, raw in segments if marker in _JPEG_KEEP)
    return data[:2] + kept + data[rest:]


@dataclass(frozen=True)
class Purged:
    files: int
    bytes: int


def purge(folder: Path, older_than_days: float, dry_run: bool = False) -> Purged:
    """Delete image files under ``folder`` last written more than ``older_than_days`` ago."""
    cutoff = time.time() - timedelta(days=older_than_days).total_seconds()
    files = size = 0
    if not folder.is_dir():
        return Purged(0, 0)
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix.lower() in (".jpg", ".jpeg", ".png"):
            stat = path.stat()
            if stat.st_mtime < cutoff:
                files, size = files + 1, size + stat.st_size
                if not dry_run:
                    path.unlink()
    if not dry_run:
        for directory in sorted((p for p in folder.rglob("*") if p.is_dir()), reverse=True):
            if not any(directory.iterdir()):
                directory.rmdir()
    return Purged(files, size)


def day_folder(root: Path, now: datetime | None = None) -> Path:
    """``root/YYYY-MM-DD`` (UTC): retained images grouped by day."""
    return root / (now or datetime.now(UTC)).strftime("%Y-%m-%d")
