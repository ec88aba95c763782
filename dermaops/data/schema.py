"""HAM10000's metadata schema and the quarantine record every loader and stage shares."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Final

#: The columns of HAM10000_metadata.csv, in the order the published file has them.
METADATA_COLUMNS: Final = ("lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization")

#: Extra column naming the source of each row; the generated set writes ``SYNTHETIC_DATASET``.
DATASET_COLUMN: Final = "dataset"
SYNTHETIC_DATASET: Final = "dermaops-synthetic"

LOCALIZATIONS: Final = (
    "abdomen",
    "acral",
    "back",
    "chest",
    "ear",
    "face",
    "foot",
    "genital",
    "hand",
    "lower extremity",
    "neck",
    "scalp",
    "trunk",
    "unknown",
    "upper extremity",
)

SPLITS: Final = ("train", "val", "test")
FEEDBACK_PREFIX: Final = "FB_"  # lesion_id and image_id of a clinician feedback image: a new lesion

#: Optional file beside a raw set's metadata: lesion_id -> split of an earlier prepared set.
#: ``prepare`` keeps those lesions where they were and deals new ones to train and val only.
SPLIT_PINS: Final = "dermaops_split_pins.csv"


@dataclass(frozen=True)
class Quarantined:
    """A row or file left out of a data set, and why. Reasons are short codes; see REASONS."""

    image_id: str
    reason: str
    detail: str
    path: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


REASONS: Final = {
    "unknown_dx": "diagnosis is not one of the seven HAM10000 classes",
    "missing_field": "lesion_id or image_id is empty",
    "duplicate_image_id": "the image_id appears in more than one metadata row",
    "missing_image": "no image file for the metadata row",
    "orphan_file": "a file in an image folder that no metadata row names",
    "ambiguous_label": "ground truth does not name exactly one class",
    "not_an_image": "the file is not an image",
    "truncated_image": "the image file ends early",
    "unreadable_image": "the image data is corrupt",
    "image_too_large": "over the byte or pixel limit",
    "feedback_copy_of_test": "clinician feedback that is a copy of a test image (kept unseen)",
}
