"""Traffic for the demo and the monitoring loop: real images sent to a running predictor.

``shifted`` traffic is what a new dermatoscope under other lighting looks like to the model:
darker, softer and bluer than anything it trained on. The monitor should call it drift; the
same images unshifted should not be.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageEnhance, ImageFilter
from tqdm import tqdm

from dermaops.client import PredictorClient, PredictorError
from dermaops.imaging import decode


@dataclass(frozen=True)
class TrafficResult:
    sent: int
    failed: int
    errors: tuple[str, ...]  # the first few refusals, for the user


def shift(image: Image.Image) -> Image.Image:
    """Darker (x0.55), blurred (Gaussian, radius 4) and bluer (blue x1.4)."""
    image = ImageEnhance.Brightness(image).enhance(0.55).filter(ImageFilter.GaussianBlur(4))
    r, g, b = image.convert("RGB").split()
    return Image.merge("RGB", (r, g, b.point(lambda v: min(255, int(v * 1.4)))))


def encoded(path: Path, shifted: bool) -> bytes:
    """The file's bytes as sent; a shifted image re-encoded as JPEG (quality 92)."""
    if not shifted:
        return path.read_bytes()
    buf = io.BytesIO()
    shift(decode(path).image).save(buf, "JPEG", quality=92)
    return buf.getvalue()


def send(
    url: str, images: Sequence[Path], shifted: bool = False, model_name: str = "dermaops"
) -> TrafficResult:
    """POST each image alone to the predictor's v1 endpoint; count what it refused.

    Raises:
        PredictorError: the predictor cannot be reached at all.
    """
    failed, errors = 0, list[str]()
    label = "shifted traffic" if shifted else "traffic"
    with PredictorClient(url, model_name) as client:
        for path in tqdm(images, desc=label, unit="img", leave=False):
            try:
                client.predict([encoded(path, shifted)])
            except PredictorError as e:
                if not e.status:  # unreachable: no point in sending the rest
                    raise
                failed += 1
                if len(errors) < 3:
                    errors.append(f"{path.name}: {e}")
    return TrafficResult(len(images), failed, tuple(errors))
