"""Traffic as the predictor logs it, from generated images, plain or shifted, with no server."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from dermaops.data.features import image_stats
from dermaops.imaging import decode
from dermaops.inference_log import InferenceLog
from dermaops.model.artifact import Preprocessing
from dermaops.traffic import shift


def log_traffic(raw: Path, folder: Path, drifted: bool) -> Path:
    """Log every generated image as the predictor would: its statistics and a prediction
    (the true class, so the class mix is the reference's)."""
    pre = Preprocessing(image_size=32)
    metadata = pd.read_csv(raw / "HAM10000_metadata.csv").set_index("image_id")
    log = InferenceLog(folder)
    for path in sorted(raw.rglob("*.jpg")):
        decoded = decode(path, min_size=pre.cache_size)
        image = shift(decoded.image) if drifted else decoded.image
        stats = image_stats(pre.cache_pixels(image), decoded.original_size)
        log.write({**stats, "prediction": metadata.loc[path.stem, "dx"], "confidence": 0.9})
    log.close()
    return folder
