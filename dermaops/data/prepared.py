"""Reading a folder written by ``dermaops data prepare``."""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dermaops.data.prepare import FORMAT_VERSION, MANIFEST
from dermaops.errors import PreparedDataError
from dermaops.labels import INDEX


@dataclass(frozen=True)
class PreparedSet:
    """The manifest, the row index and the memmapped uint8 cache of a prepared folder."""

    root: Path
    manifest: dict[str, Any]
    index: pd.DataFrame
    images: np.ndarray

    @classmethod
    def open(cls, root: Path) -> PreparedSet:
        """Open ``root``, checking it is complete and of a format this version reads."""
        try:
            manifest = json.loads((root / MANIFEST).read_text())
            index = pd.read_csv(root / "index.csv", dtype={"image_id": str, "lesion_id": str})
            images = np.load(root / "images.npy", mmap_mode="r")
        except (OSError, ValueError) as e:
            raise PreparedDataError(
                f"{root} is not a prepared data folder ({e}); run `dermaops data prepare` first"
            ) from e
        if manifest.get("format_version") != FORMAT_VERSION:
            raise PreparedDataError(
                f"{root} has format {manifest.get('format_version')}, this version reads "
                f"{FORMAT_VERSION}: run `dermaops data prepare --force`"
            )
        return cls(root, manifest, index, images)

    @property
    def generated(self) -> bool:
        return bool(self.manifest.get("generated"))

    @property
    def cache_size(self) -> tuple[int, int]:
        """(width, height) of the cached images."""
        return int(self.images.shape[2]), int(self.images.shape[1])

    def leaving_out(self, lesions: Collection[str]) -> PreparedSet:
        """The same set without the test images of ``lesions`` (a model trained on them)."""
        if not lesions:
            return self
        dropped = (self.index["split"] == "test") & self.index["lesion_id"].isin(set(lesions))
        return replace(self, index=self.index[~dropped])

    def shares(self, splits: tuple[str, ...] = ("train", "val")) -> np.ndarray:
        """Each class's share of the images in ``splits`` (:data:`CLASSES` order): the priors a
        model's calibration is fitted toward, as the drift reference's labelled rows give them."""
        classes = self.index.loc[self.index["split"].isin(splits), "dx"].map(INDEX).dropna()
        counts = np.bincount(classes.to_numpy(dtype=np.int64), minlength=len(INDEX))
        if counts.sum() == 0:
            raise PreparedDataError(f"{self.root} has no {' or '.join(splits)} images")
        shares: np.ndarray = counts / counts.sum()
        return shares

    def split(
        self, name: str, sample: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
        """uint8 pixels (N, H, W, 3) read into memory, class indices, and the index rows; at
        most ``sample`` images, drawn at random (the same ones every time), when given."""
        rows = self.index[self.index["split"] == name].sort_values("row")
        if rows.empty:
            raise PreparedDataError(f"{self.root} has no {name!r} images")
        if sample is not None and len(rows) > sample:
            rows = rows.sample(sample, random_state=0).sort_values("row")
        pixels = np.ascontiguousarray(self.images[rows["row"].to_numpy()])
        labels = rows["dx"].map(INDEX).to_numpy(dtype=np.int64)
        return pixels, labels, rows.reset_index(drop=True)
