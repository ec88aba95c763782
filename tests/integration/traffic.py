"""Traffic as the predictor logs it, from generated images, plain or drifted."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from PIL import Image, ImageEnhance, ImageFilter

from dermaops.features import image_stats
from dermaops.imaging import decode
from dermaops.models import Preprocessing
from dermaops.serving.telemetry import InferenceLog
from dermaops.stem import cache_pixels


def darker_blurred_bluer(image: Image.Image) -> Image.Image:
    image = ImageEnhance.Brightness(image).enhance(0.55).filter(ImageFilter.GaussianBlur(4))
    r, g, b = image.split()
    return Image.merge("RGB", (r, g, b.point(lambda v: min(255, int(v * 1.4)))))


def log_traffic(raw: Path, folder: Path, drifted: bool) -> Path:
    """Log every generated image as the predictor would: its statistics and a class."""
    pre = Preprocessing(image_size=32)
    metadata = pd.read_csv(raw / "HAM10000_metadata.csv").set_index("image_id")
    log = InferenceLog(folder)
    for path in sorted(raw.rglob("*.jpg")):
        decoded = decode(path, min_size=pre.cache_size)
        image = darker_blurred_bluer(decoded.image) if drifted else decoded.image
        stats = image_stats(cache_pixels(image, pre), decoded.original_size)
        log.write({**stats, "dx": metadata.loc[path.stem, "dx"], "confidence": 0.9})
    log.close()
    return folder
