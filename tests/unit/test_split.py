"""The lesion-grouped, diagnosis-stratified split."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dermaops.data.split import check_split, split_by_lesion
from dermaops.data.synth import plan


def _ham_like(n: int, seed: int = 0) -> pd.DataFrame:
    """HAM10000-shaped metadata (class mix, several images per lesion), no pixels."""
    metadata, _ = plan(n, np.random.default_rng(seed))
    return metadata


@pytest.mark.parametrize("n", [600, 2000])
def test_no_lesion_in_two_splits_and_shares_within_two_points(n: int) -> None:
    records = _ham_like(n)
    assert records["lesion_id"].duplicated().any(), "the fixture must have multi-image lesions"
    split = split_by_lesion(records, seed=1)
    check = check_split(records.assign(split=split))
    assert check.shared_lesions == 0
    assert check.max_share_gap <= 0.02
    sizes = split.value_counts(normalize=True)
    assert sizes["train"] == pytest.approx(0.8, abs=0.01)
    assert sizes["val"] == pytest.approx(0.1, abs=0.01)
    assert sizes["test"] == pytest.approx(0.1, abs=0.01)


def test_split_is_a_pure_function_of_inputs_and_seed() -> None:
    records = _ham_like(600)
    first, again = split_by_lesion(records, seed=3), split_by_lesion(records, seed=3)
    assert first.equals(again)
    assert not first.equals(split_by_lesion(records, seed=4))


def test_image_level_split_would_leak_and_check_split_sees_it() -> None:
    records = _ham_like(600)
    by_image = pd.Series(np.resize(["train", "val", "test"], len(records)), index=records.index)
    assert check_split(records.assign(split=by_image)).shared_lesions > 0


def test_a_lesion_with_mixed_diagnoses_stays_whole() -> None:
    records = pd.DataFrame(
        {
            "lesion_id": ["L1", "L1", "L1", *[f"M{i}" for i in range(30)]],
            "dx": ["mel", "mel", "nv", *(["nv"] * 20 + ["mel"] * 10)],
        }
    )
    split = split_by_lesion(records, seed=0)
    assert split[:3].nunique() == 1


@pytest.mark.parametrize("fractions", [(0.8, 0.1), (0.5, 0.5, 0.5), (1.0, 0.0, 0.0)])
def test_bad_fractions_are_refused(fractions: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="fractions"):
        split_by_lesion(_ham_like(100), fractions=fractions)  # type: ignore[arg-type]
