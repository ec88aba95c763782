"""A generated data set in exactly HAM10000's Kaggle layout, for demos and tests.

Nothing here is a patient: every row has ``dataset = dermaops-synthetic`` and every report
built on it says so. Numbers measured on it are not clinical results.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from tqdm import tqdm

from dermaops.data.schema import DATASET_COLUMN, METADATA_COLUMNS, SYNTHETIC_DATASET
from dermaops.data.synth_render import STYLES, draw_lesion, photograph
from dermaops.labels import CLASSES, HAM10000_SHARES

log = logging.getLogger(__name__)

MIN_IMAGES = 40
# Images per lesion in HAM10000 average about 1.34 (10,015 images of 7,470 lesions).
_VIEWS = np.array([1, 2, 3, 4, 5])
_VIEW_P = np.array([0.75, 0.17, 0.05, 0.02, 0.01])
# Mean age by diagnosis, roughly as in HAM10000; ages are recorded in steps of 5 years.
_MEAN_AGE = {"akiec": 67, "bcc": 66, "bkl": 59, "df": 52, "mel": 61, "nv": 47, "vasc": 50}
_DX_TYPE = {
    "nv": {"follow_up": 0.6, "histo": 0.3, "consensus": 0.08, "confocal": 0.02},
    "bkl": {"histo": 0.55, "consensus": 0.35, "confocal": 0.1},
    "vasc": {"consensus": 0.5, "histo": 0.5},
}
_SITES = ("back", "lower extremity", "trunk", "upper extremity", "abdomen", "face", "chest",
          "foot", "neck", "scalp", "hand", "ear", "genital", "acral", "unknown")  # fmt: skip
_SITE_P = np.array([22, 21, 14, 11, 10, 7, 4, 3, 2, 1.3, 0.9, 0.6, 0.5, 0.07, 2.3])
_SUN_EXPOSED = ("face", "scalp", "ear", "neck")
_QUALITY = 90
_FIRST_LESION, _FIRST_IMAGE = 5_000_000, 5_000_000  # far from real HAM10000 ids


class SynthSettings(BaseModel):
    """Settings of ``dermaops data synth``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n: int = Field(1000, ge=MIN_IMAGES, description="number of images")
    seed: int = Field(0, description="same seed, same bytes")
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)


@dataclass(frozen=True)
class _LesionJob:
    index: int
    dx: str
    skin: tuple[float, float, float]
    mimic: str | None
    files: tuple[str, ...]


def synthesize(out: Path, settings: SynthSettings) -> pd.DataFrame:
    """Write a generated set in the Kaggle layout under ``out`` and return its metadata.

    Layout: ``HAM10000_metadata.csv`` with HAM10000's columns plus ``dataset``, and 600x450
    JPEGs in ``HAM10000_images_part_1/`` and ``HAM10000_images_part_2/``.
    """
    metadata, jobs = plan(settings.n, np.random.default_rng(settings.seed))
    for part in ("HAM10000_images_part_1", "HAM10000_images_part_2"):
        (out / part).mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(max_workers=settings.workers) as pool:
        results = pool.map(_render_lesion, [(out, job, settings.seed) for job in jobs], chunksize=8)
        for _ in tqdm(results, total=len(jobs), desc="synth", unit="lesion"):
            pass
    metadata.to_csv(out / "HAM10000_metadata.csv", index=False)
    log.info("wrote %d generated images of %d lesions to %s", len(metadata), len(jobs), out)
    return metadata


def plan(n: int, rng: np.random.Generator) -> tuple[pd.DataFrame, list[_LesionJob]]:
    """Decide every lesion and image (ids, metadata, files) before drawing any pixel.

    The metadata alone is a HAM10000-shaped table, which split tests use without pixels.
    """
    rows: list[dict[str, object]] = []
    lesions: list[tuple[str, str, int]] = []  # (lesion_id, dx, views)
    for dx, count in class_counts(n).items():
        for views in _views_summing_to(count, rng):
            lesions.append((f"HAM_{_FIRST_LESION + len(lesions):07d}", dx, views))
    image_numbers = rng.permutation(n) + _FIRST_IMAGE
    jobs: list[_LesionJob] = []
    taken = 0
    for index, (lesion_id, dx, views) in enumerate(lesions):
        meta = _lesion_metadata(dx, rng)
        files: list[str] = []
        for number in image_numbers[taken : taken + views]:
            image_id = f"ISIC_{number:07d}"
            part = 1 if number - _FIRST_IMAGE < n // 2 else 2
            files.append(f"HAM10000_images_part_{part}/{image_id}.jpg")
            rows.append({"lesion_id": lesion_id, "image_id": image_id, "dx": dx, **meta})
        taken += views
        mimic = str(rng.choice(CLASSES)) if rng.random() < 0.3 else None
        skin = tuple(float(c) for c in np.clip(rng.normal([0.86, 0.66, 0.56], 0.05), 0, 1))
        jobs.append(_LesionJob(index, dx, (skin[0], skin[1], skin[2]), mimic, tuple(files)))
    frame = pd.DataFrame(rows, columns=[*METADATA_COLUMNS])
    frame[DATASET_COLUMN] = SYNTHETIC_DATASET
    _blank_some_ages(frame, rng)
    return frame.sort_values(["lesion_id", "image_id"], ignore_index=True), jobs


def class_counts(n: int) -> dict[str, int]:
    """Images per class in HAM10000's proportions, at least 3 each (one per split)."""
    counts = {dx: max(3, int(HAM10000_SHARES[dx] * n)) for dx in CLASSES}
    counts["nv"] += n - sum(counts.values())
    return counts


def _views_summing_to(count: int, rng: np.random.Generator) -> Iterator[int]:
    while count > 0:
        views = min(int(rng.choice(_VIEWS, p=_VIEW_P)), count)
        count -= views
        yield views


def _lesion_metadata(dx: str, rng: np.random.Generator) -> dict[str, object]:
    dx_types = _DX_TYPE.get(dx, {"histo": 1.0})
    site_p = _SITE_P.copy()
    if dx in ("akiec", "bcc"):  # sun-damage lesions: face, scalp, ears, neck far more often
        site_p[[_SITES.index(s) for s in _SUN_EXPOSED]] *= 6
    age = float(np.clip(5 * round(rng.normal(_MEAN_AGE[dx], 14) / 5), 0, 85))
    return {
        "dx_type": str(rng.choice(list(dx_types), p=list(dx_types.values()))),
        "age": age,
        "sex": str(rng.choice(["male", "female", "unknown"], p=[0.54, 0.455, 0.005])),
        "localization": str(rng.choice(_SITES, p=site_p / site_p.sum())),
    }


def _blank_some_ages(frame: pd.DataFrame, rng: np.random.Generator) -> None:
    """HAM10000 misses the age of 57 of 10,015 images; leave a few lesions without one too."""
    lesions = frame["lesion_id"].unique()
    blank = rng.choice(lesions, size=max(1, round(len(lesions) * 0.006)), replace=False)
    frame.loc[frame["lesion_id"].isin(blank), "age"] = np.nan


def _render_lesion(args: tuple[Path, _LesionJob, int]) -> None:
    out, job, seed = args
    rng = np.random.default_rng([seed, job.index])
    layer = draw_lesion(STYLES[job.dx], rng, STYLES[job.mimic] if job.mimic else None)
    for name in job.files:
        photograph(layer, job.skin, rng).save(out / name, "JPEG", quality=_QUALITY)
