"""The drift reference registered with each model: what the monitor compares traffic to.

Prepare writes every image's statistics (``reference_stats.csv``: colour, texture, size).
Evaluation adds what the model made of the validation and test images
(``reference_outputs.csv``: predicted class, calibrated confidence and probabilities,
embedding projections), computed exactly as the predictor computes them for its inference log
(the probabilities under the log's names, ``PROBABILITY_FIELDS``: the label-free estimates
refit the model's class bias on resampled validation rows from them). Registration joins the
two into the model's ``reference_stats.csv``; the monitor compares traffic with its
validation rows, where the model's confidence is honest (it never trained on them).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from dermaops.data.features import CONFIDENCE, PREDICTION
from dermaops.errors import DermaOpsError
from dermaops.inference_log import PROBABILITY_FIELDS
from dermaops.labels import CLASSES
from dermaops.model.projection import PROJECTION_NAMES

OUTPUTS = "reference_outputs.csv"


class ReferenceError(DermaOpsError):
    """The reference's parts are missing or do not belong together."""


def write_outputs(
    path: Path, image_ids: Sequence[str], probs: np.ndarray, projections: np.ndarray
) -> None:
    """One row per image: its predicted class, confidence, probabilities and embedding
    projections."""
    frame = pd.DataFrame({"image_id": list(image_ids)})
    frame[PREDICTION] = [CLASSES[i] for i in probs.argmax(axis=1)]
    frame[CONFIDENCE] = probs.max(axis=1)
    for i, name in enumerate(PROBABILITY_FIELDS):
        frame[name] = probs[:, i]
    for i, name in enumerate(PROJECTION_NAMES[: projections.shape[1]]):
        frame[name] = projections[:, i]
    frame.to_csv(path, index=False, float_format="%.6g")


def join_reference(stats: Path, outputs: Path, dest: Path) -> int:
    """Write ``dest``: prepare's statistics with the model's outputs where it has them.

    Returns:
        How many images have model outputs.

    Raises:
        ReferenceError: a file is unreadable, or no image of the outputs is in the statistics.
    """
    try:
        left = pd.read_csv(stats)
        right = pd.read_csv(outputs)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise ReferenceError(f"cannot read the reference parts: {e}") from e
    joined = left.merge(right, on="image_id", how="left", validate="one_to_one")
    matched = int(joined[PREDICTION].notna().sum())
    if matched == 0:
        raise ReferenceError(f"no image of {outputs} is in {stats}: not from one prepared set")
    joined.to_csv(dest, index=False, float_format="%.6g")
    return matched
