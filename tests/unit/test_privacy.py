"""Stored images carry no metadata; retention purges what is past its time."""

from __future__ import annotations

import io
import os
import stat
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dermaops.data.feedback import merge_feedback, purge_feedback, read_feedback
from dermaops.data.privacy import (
    UnsupportedImageError,
    clean_image,
    has_metadata,
    purge,
    store_clean,
)
from dermaops.imaging import decode

GPS_IFD, MAKE, SERIAL, DATETIME, ORIENTATION = 0x8825, 0x010F, 0xA431, 0x0132, 0x0112


def _photo(fmt: str = "JPEG", orientation: int = 1, size: tuple[int, int] = (64, 48)) -> bytes:
    """A photograph as a phone writes it: device, serial number, date, GPS position, comment."""
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[MAKE], exif[SERIAL], exif[DATETIME] = "DermCam", "SN-0042-7781", "2026:11:28 09:00:00"
    exif[ORIENTATION] = orientation
    exif.get_ifd(GPS_IFD).update({1: "N", 2: (48.0, 12.0, 30.0), 3: "E", 4: (16.0, 22.0, 5.0)})
    buf = io.BytesIO()
    extra = {"comment": b"patient 123"} if fmt == "JPEG" else {}
    image.save(buf, fmt, exif=exif.tobytes(), icc_profile=b"\0" * 128, **extra)
    return buf.getvalue()


def test_jpeg_loses_every_metadata_segment_and_keeps_its_pixels() -> None:
    photo = _photo()
    assert has_metadata(photo)
    cleaned, suffix = clean_image(photo)
    assert suffix == ".jpg" and not has_metadata(cleaned)
    assert b"SN-0042" not in cleaned and b"DermCam" not in cleaned and b"patient" not in cleaned
    same = np.asarray(decode(photo).image), np.asarray(decode(cleaned).image)
    assert np.array_equal(*same), "no re-compression on the lossless path"


def test_rotated_jpeg_is_turned_upright_before_its_exif_goes() -> None:
    cleaned, _ = clean_image(_photo(orientation=6, size=(64, 48)))
    assert not has_metadata(cleaned)
    assert Image.open(io.BytesIO(cleaned)).size == (48, 64), "orientation applied, then dropped"


def test_png_loses_metadata_losslessly_and_other_formats_are_refused() -> None:
    photo = _photo("PNG")
    assert has_metadata(photo)
    cleaned, suffix = clean_image(photo)
    assert suffix == ".png" and not has_metadata(cleaned) and b"SN-0042" not in cleaned
    assert np.array_equal(np.asarray(decode(photo).image), np.asarray(decode(cleaned).image))
    gif = io.BytesIO()
    Image.new("RGB", (8, 8)).save(gif, "GIF")
    with pytest.raises(UnsupportedImageError, match="GIF"):
        clean_image(gif.getvalue())


def test_stored_files_are_private_and_feedback_merges_clean(
    synth_raw: Path, tmp_path: Path
) -> None:
    stored = store_clean(_photo(), tmp_path / "store" / "x")
    assert stored.suffix == ".jpg" and stat.S_IMODE(stored.stat().st_mode) == 0o600
    feedback = tmp_path / "fb"
    (feedback / "images").mkdir(parents=True)
    (feedback / "images" / "p1.jpg").write_bytes(_photo())
    pd.DataFrame({"feedback_id": ["p1"], "image_file": ["images/p1.jpg"], "dx": ["mel"]}).to_csv(
        feedback / "feedback.csv", index=False
    )
    raw = tmp_path / "raw"
    raw.mkdir()
    for name in ("HAM10000_metadata.csv",):
        (raw / name).write_bytes((synth_raw / name).read_bytes())
    merge_feedback(raw, feedback)
    merged = raw / "HAM10000_images_part_2" / "FB_p1.jpg"
    assert merged.is_file() and not has_metadata(merged.read_bytes())


def test_purge_deletes_only_what_is_past_retention(tmp_path: Path) -> None:
    old, new = (
        tmp_path / "retained" / "2026-01-01" / "a.jpg",
        tmp_path / "retained" / "today" / "b.jpg",
    )
    for path in (old, new):
        path.parent.mkdir(parents=True)
        path.write_bytes(_photo())
    long_ago = time.time() - 40 * 86400
    os.utime(old, (long_ago, long_ago))
    assert purge(tmp_path / "retained", 30, dry_run=True).files == 1 and old.exists()
    done = purge(tmp_path / "retained", 30)
    assert done.files == 1 and not old.exists() and not old.parent.exists() and new.exists()

    feedback = tmp_path / "feedback"
    (feedback / "images").mkdir(parents=True)
    for name in ("f1", "f2"):
        (feedback / "images" / f"{name}.jpg").write_bytes(_photo())
    pd.DataFrame({"feedback_id": ["f1", "f2"], "image_file": ["images/f1.jpg", "images/f2.jpg"],
                  "dx": ["mel", "nv"],
                  "created_at": ["2026-01-01T00:00:00Z", pd.Timestamp.now(tz="UTC").isoformat()]}
                 ).to_csv(feedback / "feedback.csv", index=False)  # fmt: skip
    assert purge_feedback(feedback, 30) == 1
    left = read_feedback(feedback)
    assert left["feedback_id"].tolist() == ["f2"] and not (feedback / "images" / "f1.jpg").exists()
