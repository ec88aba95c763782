"""Readers for the published HAM10000 layouts.

- Kaggle / Harvard Dataverse: ``HAM10000_metadata.csv`` (or Dataverse's tab-separated
  ``HAM10000_metadata.tab``) beside ``HAM10000_images_part_1/`` and ``HAM10000_images_part_2/``.
- ISIC 2018 Task 3: ``ISIC2018_Task3_Training_Input/``, the one-hot
  ``ISIC2018_Task3_Training_GroundTruth.csv`` and ``ISIC2018_Task3_Training_LesionGroupings.csv``.

Both give a :class:`RawDataset`: one row per usable image with HAM10000's columns plus
``dataset`` and ``path``, and the rows and files left out, each with a reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from dermaops.data.schema import DATASET_COLUMN, METADATA_COLUMNS, SYNTHETIC_DATASET, Quarantined
from dermaops.errors import DatasetLayoutError
from dermaops.labels import CLASSES

log = logging.getLogger(__name__)

HAM_METADATA_NAMES = ("HAM10000_metadata.csv", "HAM10000_metadata.tab", "HAM10000_metadata")
HAM_IMAGE_DIRS = ("ham10000_images_part_1", "ham10000_images_part_2", "ham10000_images")
ISIC_INPUT_DIR = "ISIC2018_Task3_Training_Input"
ISIC_GROUND_TRUTH = "ISIC2018_Task3_Training_GroundTruth.csv"
ISIC_GROUPINGS = "ISIC2018_Task3_Training_LesionGroupings.csv"
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})
# Files the official archives ship beside the images; never data, never quarantined.
_DOC_SUFFIXES = frozenset({".txt", ".md", ".pdf", ".html", ".csv", ".tab", ".json"})


@dataclass
class RawDataset:
    """A raw data set after loading: usable rows, what was left out, and where it came from."""

    records: pd.DataFrame
    quarantined: list[Quarantined]
    layout: str
    lesion_grouped: bool

    @property
    def generated(self) -> bool:
        """True when any row comes from DermaOps' generated set, not from real patients."""
        return bool((self.records[DATASET_COLUMN] == SYNTHETIC_DATASET).any())


def load_raw(root: Path) -> RawDataset:
    """Load whichever supported layout ``root`` holds.

    Raises:
        DatasetLayoutError: ``root`` is missing or holds neither layout.
    """
    if not root.is_dir():
        raise DatasetLayoutError(f"raw data folder {root} does not exist")
    files = _list_files(root)  # one walk of the tree serves every lookup below
    if _find(root, files, HAM_METADATA_NAMES):
        return load_ham10000(root, files)
    if _find(root, files, (ISIC_GROUND_TRUTH,)):
        return load_isic2018(root, files)
    raise DatasetLayoutError(
        f"{root} holds neither HAM10000_metadata.csv/.tab (Kaggle, Dataverse) nor "
        f"{ISIC_GROUND_TRUTH} (ISIC 2018 Task 3); fetch one with `dermaops data fetch` "
        "or generate one with `dermaops data synth`"
    )


def load_ham10000(root: Path, files: list[Path] | None = None) -> RawDataset:
    """Load the Kaggle / Dataverse layout (metadata CSV or .tab, two image folders).

    ``files`` is every file under ``root`` when the caller has already listed them.
    """
    files = _list_files(root) if files is None else files
    metadata_path = _find(root, files, HAM_METADATA_NAMES)
    if metadata_path is None:
        raise DatasetLayoutError(f"no HAM10000_metadata.csv or .tab under {root}")
    frame = _read_table(metadata_path)
    missing = [c for c in METADATA_COLUMNS if c not in frame.columns]
    if missing:
        raise DatasetLayoutError(
            f"{metadata_path} lacks the HAM10000 column(s) {', '.join(missing)}; "
            f"it has {', '.join(map(str, frame.columns))}"
        )
    if DATASET_COLUMN not in frame.columns:
        frame[DATASET_COLUMN] = "HAM10000"
    images = _index_images(files, lambda p: p.parent.name.lower() in HAM_IMAGE_DIRS)
    records, quarantined = _attach_images(_normalise(frame), images)
    return RawDataset(records, quarantined, "ham10000", lesion_grouped=True)


def load_isic2018(root: Path, files: list[Path] | None = None) -> RawDataset:
    """Load the ISIC 2018 Task 3 training layout (one-hot ground truth, lesion groupings)."""
    files = _list_files(root) if files is None else files
    truth_path = _find(root, files, (ISIC_GROUND_TRUTH,))
    if truth_path is None:
        raise DatasetLayoutError(f"no {ISIC_GROUND_TRUTH} under {root}")
    truth = _read_table(truth_path)
    frame, quarantined = _from_one_hot(truth, truth_path)
    groupings_path = _find(root, files, (ISIC_GROUPINGS,))
    if groupings_path is None:
        log.warning(
            "NO LESION GROUPING: %s not found under %s. Each image is treated as its own "
            "lesion, so photographs of one lesion can land in different splits and test "
            "figures will be optimistic. Fetch it with `dermaops data fetch --source isic2018`.",
            ISIC_GROUPINGS,
            root,
        )
        frame["lesion_id"] = frame["image_id"]
        frame["dx_type"] = pd.NA
    else:
        groups = _read_table(groupings_path).rename(
            columns={"image": "image_id", "diagnosis_confirm_type": "dx_type"}
        )
        frame = frame.merge(groups[["image_id", "lesion_id", "dx_type"]], on="image_id", how="left")
    for column in ("age", "sex", "localization"):
        frame[column] = pd.NA
    frame[DATASET_COLUMN] = "ISIC2018"
    images = _index_images(files, lambda p: p.parent.name == ISIC_INPUT_DIR)
    records, more = _attach_images(_normalise(frame), images, quarantined)
    return RawDataset(records, quarantined + more, "isic2018", groupings_path is not None)


def _list_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _find(root: Path, files: list[Path], names: Iterable[str]) -> Path | None:
    """The shallowest of ``files`` named one of ``names`` (the first name wins a tie)."""
    wanted = [n.lower() for n in names]
    hits = [p for p in files if p.name.lower() in wanted]
    if not hits:
        return None
    return min(hits, key=lambda p: (len(p.relative_to(root).parts), wanted.index(p.name.lower())))


def _read_table(path: Path) -> pd.DataFrame:
    sep = "\t" if path.suffix.lower() == ".tab" else ","
    try:
        return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_values=[""])
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise DatasetLayoutError(f"cannot read {path}: {e}") from e


def _from_one_hot(truth: pd.DataFrame, path: Path) -> tuple[pd.DataFrame, list[Quarantined]]:
    columns = {c.upper(): c for c in truth.columns}
    absent = [c for c in ("IMAGE", *(k.upper() for k in CLASSES)) if c not in columns]
    if absent:
        raise DatasetLayoutError(f"{path} lacks column(s) {', '.join(absent)}")
    one_hot = truth[[columns[k.upper()] for k in CLASSES]].apply(pd.to_numeric, errors="coerce")
    hot = one_hot.fillna(0).to_numpy() >= 0.5
    images = truth[columns["IMAGE"]].astype(str).str.strip()
    good = hot.sum(axis=1) == 1
    quarantined = [
        Quarantined(img, "ambiguous_label", f"{int(n)} classes marked in {path.name}")
        for img, n in zip(images[~good], hot[~good].sum(axis=1), strict=True)
    ]
    dx = [CLASSES[i] for i in hot[good].argmax(axis=1)]
    return pd.DataFrame({"image_id": images[good].to_numpy(), "dx": dx}), quarantined


def _normalise(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    for column in ("lesion_id", "image_id", "dx", "dx_type", "sex", "localization"):
        out[column] = out[column].astype("string").str.strip()
    out["dx"] = out["dx"].str.lower()
    out["sex"] = out["sex"].str.lower()
    out["age"] = pd.to_numeric(out["age"], errors="coerce")
    return out[[*METADATA_COLUMNS, DATASET_COLUMN]]


def _index_images(files: list[Path], in_image_dir: Callable[[Path], bool]) -> dict[str, Path]:
    """Map file stem -> path for every file in the layout's image folders.

    Kaggle's archive holds each image folder twice (upper- and lower-case names); sorting puts
    the upper-case copy first, and the first path of a stem wins.
    """
    index: dict[str, Path] = {}
    for path in files:
        if in_image_dir(path) and not path.name.startswith("."):
            if path.suffix.lower() in _DOC_SUFFIXES:
                continue
            index.setdefault(path.stem, path)
    return index


def _attach_images(
    frame: pd.DataFrame, images: dict[str, Path], already: Iterable[Quarantined] = ()
) -> tuple[pd.DataFrame, list[Quarantined]]:
    """Validate rows and join image paths; every row left out gets a reason.

    ``already`` are rows a loader quarantined earlier: their files are not orphans.
    """
    quarantined: list[Quarantined] = []
    keep = pd.Series(True, index=frame.index)

    empty = frame["image_id"].isna() | frame["lesion_id"].isna()
    for row in frame[empty].itertuples():
        quarantined.append(Quarantined(str(row.image_id), "missing_field", _describe(row)))
    keep &= ~empty

    unknown = keep & ~frame["dx"].isin(CLASSES)
    for row in frame[unknown].itertuples():
        quarantined.append(Quarantined(str(row.image_id), "unknown_dx", f"dx={row.dx!r}"))
    keep &= ~unknown

    duplicated = keep & frame["image_id"].duplicated(keep=False)
    for row in frame[duplicated].itertuples():
        count = int((frame["image_id"] == row.image_id).sum())
        quarantined.append(
            Quarantined(str(row.image_id), "duplicate_image_id", f"{count} metadata rows")
        )
    keep &= ~duplicated

    paths = frame["image_id"].map(lambda i: images.get(str(i)))
    absent = keep & paths.isna()
    for row in frame[absent].itertuples():
        quarantined.append(
            Quarantined(str(row.image_id), "missing_image", "no file named after the image_id")
        )
    keep &= ~absent

    named = set(frame["image_id"].dropna().astype(str)) | {q.image_id for q in already}
    for stem, path in images.items():
        if stem not in named:
            quarantined.append(
                Quarantined(stem, "orphan_file", "no metadata row names it", str(path))
            )

    records = frame[keep].assign(path=paths[keep].map(str)).reset_index(drop=True)
    return records, quarantined


def _describe(row: object) -> str:
    return (
        f"lesion_id={getattr(row, 'lesion_id', None)!r} image_id={getattr(row, 'image_id', None)!r}"
    )
