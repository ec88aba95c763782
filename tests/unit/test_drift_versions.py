"""Which traffic a model version's drift reference is compared with (dermaops.monitoring)."""

from __future__ import annotations

import pandas as pd

from dermaops.monitoring.drift import match_version


def _traffic(*versions: str) -> pd.DataFrame:
    return pd.DataFrame({"brightness": 0.5, "model_version": list(versions)})


def test_the_reference_version_alone_is_compared_on_the_model_outputs() -> None:
    same = match_version(_traffic(*"3" * 40), "3", min_rows=30)
    assert same.model_outputs and len(same.rows) == 40 and not same.note

    canary = match_version(_traffic(*"3" * 35, *"4" * 5), "3", min_rows=30)
    assert canary.model_outputs and set(canary.rows["model_version"]) == {"3"}
    assert canary.note == "5 rows from version 4 left out: the reference is version 3"


def test_traffic_of_another_version_is_compared_on_image_statistics_only() -> None:
    rolled = match_version(_traffic(*"3" * 10, *"4" * 30), "3", min_rows=30)
    assert not rolled.model_outputs and len(rolled.rows) == 40
    assert "image statistics only" in rolled.note and "version 4" in rolled.note


def test_an_unknown_version_or_unlabelled_traffic_compares_everything() -> None:
    assert match_version(_traffic(*"34"), "", min_rows=1).model_outputs
    unlabelled = pd.DataFrame({"brightness": [0.1, 0.2]})
    assert match_version(unlabelled, "3", min_rows=1).rows is unlabelled
