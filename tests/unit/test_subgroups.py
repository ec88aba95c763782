"""Subgroup metrics: bands, too-small groups, intervals, and a harder group flagged."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from dermaops.evaluation.subgroups import (
    Scores,
    SubgroupSettings,
    evaluate_subgroups,
    groups,
    markdown,
    metric_values,
)
from dermaops.labels import INDEX

MEL = INDEX["mel"]


def _set(n: int = 600, seed: int = 0) -> tuple[pd.DataFrame, Scores]:
    """Good predictions for men, near-random ones for women; a small group of 10 unknowns."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 7, n)
    sex = np.where(np.arange(n) < n - 10, np.where(np.arange(n) % 2 == 0, "male", "female"), None)
    predicted = labels.copy()
    wrong = (sex == "female") & (rng.random(n) < 0.6)
    predicted[wrong] = rng.integers(0, 7, wrong.sum())
    flagged = predicted == MEL
    meta = pd.DataFrame({"sex": sex, "age": rng.integers(5, 90, n).astype(float),
                         "localization": rng.choice(["back", "face", "trunk"], n)})  # fmt: skip
    meta.loc[:5, "age"] = np.nan
    return meta, Scores(labels, predicted, flagged)


def test_a_deliberately_harder_group_is_flagged_with_intervals() -> None:
    meta, s = _set()
    settings = SubgroupSettings(min_support=30, gap_margin=0.10, bootstrap=200)
    result = evaluate_subgroups(meta, s, settings)
    sex = {row["group"]: row for row in result["groups"]["sex"]}
    assert sex["unknown"] == {"group": "unknown", "support": 10, "too_small": True}
    assert sex["male"]["f1_macro"] == 1.0 and sex["female"]["f1_macro"] < 0.7
    low, high = sex["female"]["ci95"]["f1_macro"]
    assert low <= sex["female"]["f1_macro"] <= high and high - low < 0.2
    f1_gap = next(g for g in result["gaps"] if g["metric"] == "f1_macro")
    assert f1_gap["flagged"] and (f1_gap["attribute"], f1_gap["group"]) == ("sex", "female")
    json.dumps(result, allow_nan=False)  # valid JSON for metrics.json
    text = markdown(result)
    assert "**FLAGGED**" in text and "| unknown | 10 | too small |" in text


def test_no_flag_when_groups_do_equally_well() -> None:
    meta, s = _set()
    perfect = Scores(s.labels, s.labels, s.labels == MEL)
    result = evaluate_subgroups(meta, perfect, SubgroupSettings(bootstrap=200))
    assert not any(g["flagged"] for g in result["gaps"])
    ci = result["overall"]["ci95"]
    assert ci["f1_macro"] == [None, None]  # every resample is perfect: nothing to bound it with
    low, high = ci["melanoma_sensitivity"]
    assert high == 1.0 and 0.8 < low < 1.0  # perfect, but on a finite number of melanomas


def test_age_bands_sex_and_site_columns() -> None:
    meta = pd.DataFrame({"sex": ["male", "FEMALE", "unknown", None],
                         "age": [29.0, 30.0, 75.0, np.nan],
                         "localization": ["Back", None, "face", "trunk"]})  # fmt: skip
    table = groups(meta)
    assert table["age_band"].tolist() == ["<30", "30-50", ">70", "unknown"]
    assert table["sex"].tolist() == ["male", "female", "unknown", "unknown"]
    assert table["site"].tolist() == ["back", "unknown", "face", "trunk"]


def test_melanoma_rates_are_undefined_without_melanoma() -> None:
    labels = np.array([0, 1, 2])
    values = metric_values(Scores(labels, labels, np.zeros(3, bool)))
    assert np.isnan(values["melanoma_sensitivity"]) and values["melanoma_specificity"] == 1.0
    assert values["f1_macro"] == 1.0
