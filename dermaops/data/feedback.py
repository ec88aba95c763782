"""Clinician feedback: corrected diagnoses that flow into the next training set.

A feedback folder holds ``feedback.csv`` and the images it names::

    feedback.csv   feedback_id, image_file, dx[, clinician, created_at, model_version,
                   predicted_dx, melanoma_flag, age, sex, localization]: :class:`FeedbackRow`
    images/        the photographs, named in image_file (relative to the folder)

:func:`record_feedback` is how the clinician UI writes it: the image without metadata, one row
per image (a resubmission updates that row), atomically, under a lock.

Each feedback image becomes a new lesion (``lesion_id`` ``FB_<feedback_id>``): it can never
join a lesion of an earlier test split, and it is dealt to train or val only.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from dermaops.data.loaders import HAM_METADATA_NAMES, RawDataset, load_raw
from dermaops.data.privacy import clean_image, store_clean
from dermaops.data.schema import DATASET_COLUMN, FEEDBACK_PREFIX, METADATA_COLUMNS
from dermaops.errors import DatasetLayoutError
from dermaops.labels import CLASSES

log = logging.getLogger(__name__)

FEEDBACK_FILE: Final = "feedback.csv"
FEEDBACK_DATASET: Final = "dermaops-feedback"
FEEDBACK_IMAGE_DIR: Final = "HAM10000_images_part_2"  # where the HAM10000 loader looks


class FeedbackRow(BaseModel):
    """One row of ``feedback.csv``: a clinician's diagnosis of one image, beside the model's
    answer when the clinician page had one. Only the first three are required: a store written
    by hand, or by an earlier version, has fewer columns; an empty cell is an empty string."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    feedback_id: str = Field(min_length=1, description="hash of the image's pixels-only bytes")
    image_file: str = Field(min_length=1, description="the image, relative to the folder")
    dx: str = Field(description="the clinician's diagnosis, one of the seven classes")
    clinician: str = ""
    created_at: str = Field("", description="ISO 8601, when the diagnosis was (last) given")
    model_version: str = Field("", description="the registered version that answered")
    predicted_dx: str = Field("", description="that version's top class")
    melanoma_flag: str = Field("", pattern="^(|true|false)$", description="its melanoma flag")
    age: str = ""
    sex: str = ""
    localization: str = ""

    @field_validator("dx")
    @classmethod
    def _a_class(cls, value: str) -> str:
        if value not in CLASSES:
            raise ValueError(f"is not one of {', '.join(CLASSES)}")
        return value

    @field_validator("predicted_dx")
    @classmethod
    def _a_class_or_none(cls, value: str) -> str:
        return cls._a_class(value) if value else value

    @field_validator("created_at")
    @classmethod
    def _a_time(cls, value: str) -> str:
        if value:
            datetime.fromisoformat(value)  # a ValueError says what is wrong with it
        return value


COLUMNS: Final = tuple(FeedbackRow.model_fields)
REQUIRED: Final = tuple(n for n, f in FeedbackRow.model_fields.items() if f.is_required())
DETAILS: Final = ("age", "sex", "localization")  # what the clinician page may add of a case


def read_feedback(folder: Path) -> pd.DataFrame:
    """The feedback rows, each a :class:`FeedbackRow`, checked: unique ids, image files that
    exist. Empty cells are missing values in the frame, as pandas reads them.

    Raises:
        DatasetLayoutError: the folder or a row is not usable; the message names the row.
    """
    path = folder / FEEDBACK_FILE
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise DatasetLayoutError(f"cannot read clinician feedback {path}: {e}") from e
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise DatasetLayoutError(f"{path} lacks the column(s) {', '.join(missing)}")
    unknown = [c for c in frame.columns if c not in COLUMNS]
    if unknown:
        raise DatasetLayoutError(
            f"{path} has unknown column(s) {', '.join(map(str, unknown))}; "
            f"a feedback row has {', '.join(COLUMNS)}"
        )
    problems = []
    for number, row in enumerate(frame.to_dict(orient="records"), start=2):
        problems += [f"line {number}: {p}" for p in _row_problems(row)]
        image = row["image_file"]
        if isinstance(image, str) and not (folder / image).is_file():
            problems.append(f"line {number}: image_file {image!r} does not exist")
    duplicated = frame["feedback_id"][frame["feedback_id"].duplicated()].tolist()
    if duplicated:
        problems.append(f"feedback_id repeated: {', '.join(map(str, duplicated))}")
    if problems:
        raise DatasetLayoutError(f"{path} has unusable rows:\n  " + "\n  ".join(problems))
    return frame


def _row_problems(row: Mapping[Hashable, Any]) -> list[str]:
    """What is wrong with one row read from the file, field by field."""
    present = {str(k): v for k, v in row.items() if isinstance(v, str)}  # NaN: an empty cell
    try:
        FeedbackRow.model_validate(present)
    except ValidationError as e:
        return [
            f"{'.'.join(map(str, error['loc']))} {error.get('input')!r} "
            f"{error['msg'].removeprefix('Value error, ')}"
            for error in e.errors()
        ]
    return []


def merge_feedback(raw: Path, feedback: Path) -> int:
    """Append ``feedback`` to the HAM10000-layout set in ``raw`` (in place); rows added.

    Raises:
        DatasetLayoutError: ``raw`` is not in the HAM10000 layout, or the feedback is unusable.
    """
    rows = read_feedback(feedback)
    if rows.empty:
        return 0
    metadata = next((raw / n for n in HAM_METADATA_NAMES if (raw / n).is_file()), None)
    if metadata is None or metadata.suffix != ".csv":
        raise DatasetLayoutError(
            f"feedback can be merged into a HAM10000_metadata.csv set only; {raw} has none"
        )
    base = pd.read_csv(metadata, dtype=str, keep_default_na=False, na_values=[""])
    images = raw / FEEDBACK_IMAGE_DIR
    images.mkdir(exist_ok=True)  # new files only: linked originals are never written
    added = pd.DataFrame(
        {
            "lesion_id": FEEDBACK_PREFIX + rows["feedback_id"],
            "image_id": FEEDBACK_PREFIX + rows["feedback_id"],
            "dx": rows["dx"],
            "dx_type": "clinician_feedback",
            **{c: rows.get(c, pd.Series(pd.NA, index=rows.index)) for c in METADATA_COLUMNS[4:]},
            DATASET_COLUMN: FEEDBACK_DATASET,
        }
    )
    clash = set(added["image_id"]) & set(base["image_id"])
    if clash:
        raise DatasetLayoutError(f"feedback image ids already in {metadata}: {sorted(clash)[:5]}")
    for row in rows.itertuples(index=False):
        # A copy without EXIF, XMP or ICC (GPS, device serials, dates), never a link.
        kept = images / f"{FEEDBACK_PREFIX}{row.feedback_id}"
        store_clean((feedback / str(row.image_file)).read_bytes(), kept)
    # A new file, not a rewrite: ``raw`` may hold hard links into a cached or shared set.
    staged = metadata.with_name(metadata.name + ".partial")
    pd.concat([base, added], ignore_index=True).to_csv(staged, index=False)
    staged.replace(metadata)
    log.info("merged %d clinician feedback images from %s", len(added), feedback)
    return len(added)


def link_tree(source: Path, dest: Path) -> None:
    """Mirror ``source`` into ``dest`` with hard links (copies across file systems)."""
    for path in sorted(source.rglob("*")):
        target = dest / path.relative_to(source)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif path.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            link_or_copy(path, target)


def link_or_copy(source: Path, target: Path) -> None:
    """Hard-link ``source`` to ``target``; copy when a link is impossible."""
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def load_checked(raw: Path) -> RawDataset:
    """Load ``raw`` to fail early (at ingest) on a set that prepare could not read."""
    dataset = load_raw(raw)
    if dataset.records.empty:
        raise DatasetLayoutError(
            f"{raw} has no usable images ({len(dataset.quarantined)} left out)"
        )
    return dataset


def purge_feedback(folder: Path, older_than_days: float, dry_run: bool = False) -> int:
    """Delete feedback rows (and their images) older than ``older_than_days``; rows removed.

    A row's age is its ``created_at`` when it has one, else its image file's modification time.
    ``feedback.csv`` is rewritten atomically, so an ingest never sees a row without its image.
    """
    path = folder / FEEDBACK_FILE
    if not path.is_file():
        return 0
    frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    cutoff = pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=older_than_days)
    stamps = frame["created_at"] if "created_at" in frame.columns else pd.Series(pd.NA, frame.index)
    created = pd.to_datetime(stamps, utc=True, errors="coerce")
    mtimes = [
        pd.Timestamp((folder / f).stat().st_mtime, unit="s", tz="UTC")
        if (folder / f).is_file() else pd.NaT
        for f in frame["image_file"]
    ]  # fmt: skip
    age = created.fillna(pd.Series(mtimes, index=frame.index))
    old = age < cutoff
    if not old.any() or dry_run:
        return int(old.sum())
    staged = path.with_name(path.name + ".partial")
    frame[~old].to_csv(staged, index=False)
    staged.replace(path)
    for image in frame.loc[old, "image_file"]:
        (folder / image).unlink(missing_ok=True)
    log.info(
        "purged %d feedback rows older than %s days from %s",
        int(old.sum()),
        older_than_days,
        folder,
    )
    return int(old.sum())


@dataclass(frozen=True)
class Recorded:
    feedback_id: str
    created: bool  # False: this image was already in the store (its row was updated)


def record_feedback(
    folder: Path,
    image: bytes,
    dx: str,
    clinician: str,
    model_version: str = "",
    predicted_dx: str = "",
    details: dict[str, str] | None = None,
    melanoma_flag: bool | None = None,
) -> Recorded:
    """Store a clinician's diagnosis of ``image`` for the next training set, beside the
    model's own answer (its version, top class and melanoma flag at the registered operating
    point), which the monitor scores against the diagnosis.

    The feedback id is a hash of the image's pixels-only bytes, so sending the same image twice
    keeps one row; the second submission's diagnosis replaces the first.

    Raises:
        ValueError: an unknown diagnosis (the clinician's or the model's) or an empty
            clinician name.
        ImageError: ``image`` is not a readable JPEG or PNG.
    """
    if dx not in CLASSES:
        raise ValueError(f"dx {dx!r} is not one of {', '.join(CLASSES)}")
    if not clinician.strip():
        raise ValueError("feedback needs the clinician's name")
    cleaned, suffix = clean_image(image)
    feedback_id = hashlib.sha256(cleaned).hexdigest()[:16]
    try:
        row = FeedbackRow(
            feedback_id=feedback_id,
            image_file=f"images/{feedback_id}{suffix}",
            dx=dx,
            clinician=clinician.strip(),
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            model_version=model_version,
            predicted_dx=predicted_dx,
            melanoma_flag="" if melanoma_flag is None else str(melanoma_flag).lower(),
            **{k: str(v) for k, v in (details or {}).items() if k in DETAILS},
        ).model_dump(exclude_unset=True)  # a resubmission keeps the details it does not give
    except ValidationError as e:
        raise ValueError(f"not a feedback row: {e}") from e
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = folder / FEEDBACK_FILE
        frame = (
            pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
            if path.is_file()
            else pd.DataFrame(columns=list(row))
        )
        created = feedback_id not in set(frame["feedback_id"])
        if created:
            store_clean(cleaned, folder / "images" / feedback_id)
            frame = pd.concat([frame, pd.DataFrame([row])], ignore_index=True)
        else:
            for key, value in row.items():
                frame.loc[frame["feedback_id"] == feedback_id, key] = value
        staged = path.with_name(path.name + ".partial")
        frame.to_csv(staged, index=False)
        staged.replace(path)
    log.info(
        "feedback %s: %s by %s (%s)", feedback_id, dx, clinician, "new" if created else "updated"
    )
    return Recorded(feedback_id, created)
