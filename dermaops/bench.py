"""``dermaops bench``: throughput measured against a plain baseline in the same run.

This machine is noisy, so a benchmark reports a ratio of two measurements taken back to
back on the same files, never an absolute time to compare across runs.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dermaops.data.loaders import load_raw
from dermaops.data.prepare import PrepareSettings, prepare
from dermaops.data.synth import SynthSettings, synthesize
from dermaops.imaging import resize_cover

log = logging.getLogger(__name__)


def bench_prepare(
    raw: Path | None, n: int, settings: PrepareSettings, seed: int = 0
) -> dict[str, Any]:
    """Images/s of ``prepare`` against a one-process, full-decode PIL loop on the same files.

    Args:
        raw: a raw data set; None generates ``n`` images first (not timed).
        n: images to generate when ``raw`` is None.
        settings: the prepare settings under test (cache size, workers).
        seed: seed of the generated set.
    """
    with tempfile.TemporaryDirectory(prefix="dermaops-bench-") as tmp:
        work = Path(tmp)
        if raw is None:
            raw = work / "raw"
            synthesize(raw, SynthSettings(n=n, seed=seed, workers=settings.workers))
        paths = [Path(p) for p in load_raw(raw).records["path"]]
        baseline_s = _timed(lambda: _plain_pil_loop(paths, settings.cache_size))
        prepare_s = _timed(lambda: prepare(raw, work / "prepared", settings, force=True))
    images = len(paths)
    return {
        "benchmark": "prepare",
        "images": images,
        "workers": settings.workers,
        "cache_size": list(settings.cache_size),
        "baseline": "one process, PIL full decode + convert + resize, no draft mode",
        "baseline_images_per_s": round(images / baseline_s, 1),
        "prepare_images_per_s": round(images / prepare_s, 1),
        "ratio": round(baseline_s / prepare_s, 2),
        "note": "prepare's time includes hashing, validation, split, cache and report",
    }


def write_result(result: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")


def _plain_pil_loop(paths: list[Path], size: tuple[int, int]) -> None:
    for path in paths:
        with Image.open(path) as img:
            pixels = np.asarray(resize_cover(img.convert("RGB"), size))
        assert pixels.shape == (size[1], size[0], 3)


def _timed(work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start
