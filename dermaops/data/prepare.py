"""``dermaops data prepare``: validate, split by lesion, decode once into a uint8 cache.

The output folder holds everything training, evaluation and drift monitoring read:

- ``split_info.csv``: image_id, lesion_id, dx, split (train/val/test);
- ``images.npy``: decoded uint8 pixels (rows, height, width, 3), aspect kept, read by memmap;
- ``index.csv``: the metadata of every cached row, with its row number and split;
- ``reference_stats.csv``: per-image statistics (:mod:`dermaops.data.features`) for drift;
- ``data_report.json`` / ``.md`` / ``class_distribution.png``, and ``manifest.json``.

Preparing is skipped when ``manifest.json`` records the same input fingerprint.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator
from tqdm import tqdm

import dermaops
from dermaops.data.dedup import find_copies
from dermaops.data.features import STAT_NAMES, image_stats
from dermaops.data.fingerprint import tree_fingerprint
from dermaops.data.loaders import RawDataset, load_raw
from dermaops.data.report import build_report, write_report
from dermaops.data.schema import (
    DATASET_COLUMN,
    FEEDBACK_PREFIX,
    METADATA_COLUMNS,
    SPLIT_PINS,
    Quarantined,
)
from dermaops.data.split import check_split, extend_split, split_by_lesion
from dermaops.errors import ImageError, PreparedDataError
from dermaops.imaging import PIL_MAX_PIXELS, ImageLimits, decode, resize_cover, to_array

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_CHUNK = 32


class PrepareSettings(BaseModel):
    """Settings of ``dermaops data prepare``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # 225 is half of HAM10000's 450: JPEGs decode at exactly 1/2 scale, with no resampling.
    cache_height: int = Field(225, ge=32, le=1024, description="cached image height in pixels")
    cache_aspect: float = Field(4 / 3, gt=0, description="cached width / height (HAM10000: 4:3)")
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 42
    max_share_gap: float = Field(0.02, ge=0, le=1, description="allowed class-share gap")
    max_image_bytes: int = Field(ImageLimits.max_bytes, gt=0)
    max_image_pixels: int = Field(ImageLimits.max_pixels, gt=0, le=PIL_MAX_PIXELS)
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)

    @field_validator("fractions")
    @classmethod
    def _fractions_sum_to_one(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if not np.isclose(sum(v), 1.0) or min(v) <= 0:
            raise ValueError(f"train/val/test fractions {v} must be positive and sum to 1")
        return v

    @property
    def cache_size(self) -> tuple[int, int]:
        """(width, height) of every cached image."""
        return round(self.cache_height * self.cache_aspect), self.cache_height

    def fingerprint_fields(self) -> dict[str, Any]:
        """The settings that change the output (not ``workers``)."""
        return self.model_dump(exclude={"workers"})


@dataclass(frozen=True)
class PrepareResult:
    out: Path
    skipped: bool
    report: dict[str, Any]


def prepare(raw: Path, out: Path, settings: PrepareSettings, force: bool = False) -> PrepareResult:
    """Prepare ``raw`` (any layout :func:`~dermaops.data.loaders.load_raw` reads) into ``out``.

    Raises:
        DatasetLayoutError: ``raw`` is not a data set.
        PreparedDataError: ``out`` exists and is not a folder this command wrote.
    """
    _check_replaceable(out)
    fingerprint = tree_fingerprint(raw, settings.fingerprint_fields() | {"v": FORMAT_VERSION})
    previous = _read_manifest(out)
    if not force and previous and previous.get("fingerprint") == fingerprint:
        log.info("%s is up to date (same input fingerprint); --force redoes it", out)
        report = json.loads((out / "data_report.json").read_text())
        return PrepareResult(out, skipped=True, report=report)

    dataset = load_raw(raw)
    staging = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        report = _prepare_into(staging, raw, dataset, settings, fingerprint)
        _swap_into_place(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return PrepareResult(out, skipped=False, report=report)


def _prepare_into(
    staging: Path, raw: Path, dataset: RawDataset, settings: PrepareSettings, fingerprint: str
) -> dict[str, Any]:
    records = dataset.records.sort_values("image_id", ignore_index=True)
    stats, failed = _decode_all(records, staging / "images.npy", settings)
    quarantined = dataset.quarantined + failed
    failed_ids = {q.image_id for q in failed}
    kept = records.assign(row=np.arange(len(records)))
    kept = kept[~kept["image_id"].isin(failed_ids)].reset_index(drop=True)
    kept = _join_feedback_copies(kept, staging / "images.npy")
    kept["split"] = _assign_splits(kept, raw / SPLIT_PINS, settings).to_numpy()
    kept, refused = _refuse_feedback_in_test(kept)
    quarantined += refused
    check = check_split(kept)
    if check.shared_lesions:  # the splitter guarantees this; a failure here is a bug
        raise PreparedDataError(f"{check.shared_lesions} lesions span two splits")
    if check.max_share_gap > settings.max_share_gap:
        log.warning(
            "class shares differ by up to %.1f points between a split and the whole "
            "(tolerance %.1f): too few lesions in some class for an even split",
            100 * check.max_share_gap,
            100 * settings.max_share_gap,
        )
    _write_tables(staging, kept, stats)
    report = build_report(
        dataset, kept, quarantined, check, settings.max_share_gap, raw, fingerprint
    )
    report["cache"] = {
        "file": "images.npy",
        "shape": [len(records), settings.cache_size[1], settings.cache_size[0], 3],
        "dtype": "uint8",
        "resize": "scaled to cover, centre-cropped: aspect ratio kept, never squashed",
    }
    write_report(staging, report)
    manifest = {
        "format_version": FORMAT_VERSION,
        "fingerprint": fingerprint,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "dermaops_version": dermaops.__version__,
        "raw": str(raw.resolve()),
        "settings": settings.model_dump(mode="json"),
        "images": len(kept),
        "generated": dataset.generated,
    }
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return report


def _join_feedback_copies(kept: pd.DataFrame, cache: Path) -> pd.DataFrame:
    """Feedback images that are copies of another image of the set (by their cached pixels:
    exact, or near, see :mod:`dermaops.data.dedup`) join that image's lesion, and so its split."""
    feedback = kept["image_id"].str.startswith(FEEDBACK_PREFIX)
    if not feedback.any():
        return kept
    images = np.load(cache, mmap_mode="r")
    earlier = kept[~feedback]
    copies = find_copies(
        kept[feedback], [images[r] for r in kept.loc[feedback, "row"]],
        earlier, [images[r] for r in earlier["row"]],
    )  # fmt: skip
    if not copies:
        return kept
    joined = kept.copy()
    for image_id, match in copies.items():
        how = "an exact copy" if match.exact else f"a copy (correlation {match.correlation:.4f})"
        log.warning("feedback image %s is %s of %s: it joins lesion %s", image_id, how,
                    match.image_id, match.lesion_id)  # fmt: skip
        joined.loc[joined["image_id"] == image_id, "lesion_id"] = match.lesion_id
    return joined


def _refuse_feedback_in_test(kept: pd.DataFrame) -> tuple[pd.DataFrame, list[Quarantined]]:
    """Feedback images that joined a lesion of the test split (copies of test images), left out
    so the test split stays unseen."""
    copy = kept["image_id"].str.startswith(FEEDBACK_PREFIX) & ~kept["lesion_id"].str.startswith(
        FEEDBACK_PREFIX
    )
    refused = copy & (kept["split"] == "test")
    why = "a copy of an image of test lesion {}: refused, so that no model trains on the test split"
    quarantined = [
        Quarantined(str(row.image_id), "feedback_copy_of_test", why.format(row.lesion_id))
        for row in kept[refused].itertuples(index=False)
    ]
    for q in quarantined:
        log.warning("feedback image %s refused: %s", q.image_id, q.detail)
    return kept[~refused].reset_index(drop=True), quarantined


def _assign_splits(kept: pd.DataFrame, pins_file: Path, settings: PrepareSettings) -> pd.Series:
    """A fresh split, or the earlier split in ``pins_file`` extended by new lesions."""
    if not pins_file.is_file():
        return split_by_lesion(kept, settings.fractions, settings.seed)
    try:
        pins = pd.read_csv(pins_file, dtype=str).drop_duplicates("lesion_id")
        by_lesion = pins.set_index("lesion_id")["split"]
        split = extend_split(kept, by_lesion, settings.fractions, settings.seed)
    except (OSError, KeyError, ValueError, pd.errors.ParserError) as e:
        raise PreparedDataError(
            f"{pins_file} must be a CSV with lesion_id and split columns (train/val/test): {e}"
        ) from e
    log.info("kept the earlier split of %d lesions from %s", by_lesion.size, pins_file.name)
    return split


def _decode_all(
    records: pd.DataFrame, cache: Path, settings: PrepareSettings
) -> tuple[pd.DataFrame, list[Quarantined]]:
    """Decode every record into row ``i`` of the cache, in parallel; return stats and failures."""
    width, height = settings.cache_size
    np.lib.format.open_memmap(
        cache, mode="w+", dtype=np.uint8, shape=(len(records), height, width, 3)
    )
    limits = ImageLimits(settings.max_image_bytes, settings.max_image_pixels)
    paths = records["path"].tolist()
    items = list(enumerate(paths))
    tasks = [
        (cache, limits, (width, height), items[i : i + _CHUNK])
        for i in range(0, len(items), _CHUNK)
    ]
    stats: list[dict[str, Any]] = []
    failed: list[Quarantined] = []
    with (
        ProcessPoolExecutor(max_workers=settings.workers) as pool,
        tqdm(total=len(paths), desc="prepare", unit="img") as bar,
    ):
        for results in pool.map(_decode_chunk, tasks):
            for row, outcome in results:
                image_id = str(records.at[row, "image_id"])
                if isinstance(outcome, dict):
                    stats.append({"image_id": image_id, **outcome})
                else:
                    failed.append(Quarantined(image_id, outcome[0], outcome[1], paths[row]))
            bar.update(len(results))
    return pd.DataFrame(stats, columns=["image_id", *STAT_NAMES]), failed


_Outcome = dict[str, float] | tuple[str, str]


def _decode_chunk(
    task: tuple[Path, ImageLimits, tuple[int, int], list[tuple[int, str]]],
) -> list[tuple[int, _Outcome]]:
    """Worker: decode a chunk of files straight into the shared memmap."""
    cache_path, limits, size, items = task
    cache = np.load(cache_path, mmap_mode="r+")
    results: list[tuple[int, _Outcome]] = []
    for row, path in items:
        try:
            decoded = decode(Path(path), limits=limits, min_size=size)
        except ImageError as e:
            results.append((row, (e.reason, str(e))))
            continue
        pixels = to_array(resize_cover(decoded.image, size))
        cache[row] = pixels
        results.append((row, image_stats(pixels, decoded.original_size)))
    # No flush: msync would force the whole 100s-of-MB mapping to disk once a chunk; the
    # shared mapping is already coherent with the page cache every other reader sees.
    return results


def _write_tables(staging: Path, kept: pd.DataFrame, stats: pd.DataFrame) -> None:
    kept[["image_id", "lesion_id", "dx", "split"]].to_csv(staging / "split_info.csv", index=False)
    columns = ["row", *METADATA_COLUMNS, DATASET_COLUMN, "split"]
    kept[columns].to_csv(staging / "index.csv", index=False)
    reference = kept[["image_id", "split", "dx"]].merge(stats, on="image_id", how="left")
    reference.to_csv(staging / "reference_stats.csv", index=False, float_format="%.6g")


def _read_manifest(out: Path) -> dict[str, Any] | None:
    try:
        manifest: dict[str, Any] = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest


def _check_replaceable(out: Path) -> None:
    """Refuse to overwrite a folder that holds anything but an earlier prepare's output."""
    if out.exists() and not out.is_dir():
        raise PreparedDataError(f"{out} is a file; give a folder for the prepared data")
    if out.is_dir() and any(out.iterdir()) and _read_manifest(out) is None:
        raise PreparedDataError(
            f"{out} is not empty and was not written by `dermaops data prepare`; "
            "choose another --out so nothing in it is lost"
        )


def _swap_into_place(staging: Path, out: Path) -> None:
    """Replace ``out`` by ``staging`` so a crash leaves either the old or the new folder."""
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        out.rename(old)
    staging.rename(out)
    shutil.rmtree(old, ignore_errors=True)
