"""``dermaops bench``: throughput measured against a plain baseline in the same run.

This machine is noisy, so a benchmark reports a ratio of two measurements taken back to
back on the same files, never an absolute time to compare across runs.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
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


#: CPU flags that decide which kernels ONNX Runtime and torch pick (INT8 and bf16 units).
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
#: Packages whose versions a figure depends on (read from metadata, never imported).
PACKAGES = ("dermaops", "numpy", "pillow", "onnxruntime", "torch", "kserve", "evidently")


def machine(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, Any]:
    """The machine a figure was measured on: CPU model, cores this process may use, the
    instruction-set flags that matter for inference, memory, OS and Python."""
    model, flags = _cpu(cpuinfo)
    return {
        "cpu": model or platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "usable_cores": _usable_cores(),
        "cpu_flags": [flag for flag in CPU_FLAGS if flag in flags],
        "memory_gib": _memory_gib(),
        "os": f"{platform.system()} {'.'.join(platform.release().split('.')[:2])}",
        "python": platform.python_version(),
    }


#: The keys :func:`stamp` adds to a result.
STAMP_KEYS = ("measured_at", "machine", "versions")


def stamp(result: dict[str, Any]) -> dict[str, Any]:
    """``result`` with the machine, the packages' versions and the date (UTC) it was measured."""
    return {
        **result,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": {name: v for name in PACKAGES if (v := _version(name))},
    }


def write_result(result: dict[str, Any], path: Path) -> dict[str, Any]:
    """Write ``result``, stamped with where and when it was measured; return what was written."""
    stamped = stamp(result)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(stamped, indent=2) + "\n")
    return stamped


def _cpu(cpuinfo: Path) -> tuple[str, set[str]]:
    try:
        text = cpuinfo.read_text()
    except OSError:
        return "", set()
    model, flags = "", set[str]()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and not model:
            model = value.strip()
        elif key.strip() in ("flags", "Features") and not flags:
            flags = set(value.split())
    return model, flags


def _usable_cores() -> int | None:
    """The cores this process may run on (its affinity, where the OS has one)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity else os.cpu_count()


def _memory_gib() -> float | None:
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # no sysconf (Windows) or no such name
        return None
    return round(pages * size / 2**30, 1)


def _version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _plain_pil_loop(paths: list[Path], size: tuple[int, int]) -> None:
    for path in paths:
        with Image.open(path) as img:
            pixels = np.asarray(resize_cover(img.convert("RGB"), size))
        assert pixels.shape == (size[1], size[0], 3)


def _timed(work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start
