"""Ingest: produce one raw data set folder, from a public source, a path, or the generator.

The result is what ``dermaops data prepare --raw`` reads, optionally with clinician feedback
merged in and the split of an earlier prepared set pinned (see :mod:`dermaops.data.feedback`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from dermaops.data.download import RetryPolicy
from dermaops.data.feedback import link_or_copy, link_tree, load_checked, merge_feedback
from dermaops.data.schema import SPLIT_PINS
from dermaops.data.synth import SynthSettings, synthesize
from dermaops.errors import ConfigError
from dermaops.settings import Home

log = logging.getLogger(__name__)

Source = Literal["synthetic", "path", "isic2018", "dataverse", "kaggle"]


class IngestSettings(BaseModel):
    """Where the raw images come from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: Source = Field("synthetic", description="synthetic, path, or a public source")
    path: str = Field("", description="the raw folder, for source=path")
    n: int = Field(1000, ge=1, description="images to generate, for source=synthetic")
    seed: int = Field(0, description="generator seed, for source=synthetic")
    base_url: str = Field("", description="a mirror of the public source")
    download_attempts: int = Field(6, ge=1, description="tries per file before ingest fails")
    feedback: str = Field("", description="a clinician feedback folder to merge")
    split_pins: str = Field("", description="an earlier split_info.csv whose split is kept")


@dataclass(frozen=True)
class IngestResult:
    out: Path
    images: int
    feedback_images: int
    generated: bool


def ingest(out: Path, s: IngestSettings, home: Home) -> IngestResult:
    """Fill ``out`` with a raw set as ``s`` says, then check that it loads.

    Raises:
        ConfigError: a setting that the source needs is missing.
        DatasetLayoutError, DownloadError: the data could not be read or fetched.
    """
    out.mkdir(parents=True, exist_ok=True)
    if s.source == "synthetic":
        synthesize(out, SynthSettings(n=s.n, seed=s.seed))
    elif s.source == "path":
        if not s.path:
            raise ConfigError("source=path needs the raw folder: set path")
        if not Path(s.path).is_dir():
            raise ConfigError(f"raw folder {s.path} does not exist")
        link_tree(Path(s.path), out)
    else:
        from dermaops.data.fetch import fetch

        policy = RetryPolicy(attempts=s.download_attempts)
        fetch(s.source, out, home.downloads, s.base_url or None, policy=policy)
    added = merge_feedback(out, Path(s.feedback)) if s.feedback else 0
    if s.split_pins:
        _pin_split(Path(s.split_pins), out / SPLIT_PINS)
    dataset = load_checked(out)
    log.info("ingested %d images into %s", len(dataset.records), out)
    return IngestResult(out, len(dataset.records), added, dataset.generated)


def _pin_split(split_info: Path, target: Path) -> None:
    try:
        columns = pd.read_csv(split_info, nrows=0).columns
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise ConfigError(f"cannot read the split to keep, {split_info}: {e}") from e
    if not {"lesion_id", "split"} <= set(columns):
        raise ConfigError(f"{split_info} needs lesion_id and split columns (a split_info.csv)")
    link_or_copy(split_info, target)
