"""How the served model does on what clinicians confirmed or corrected.

Drift on inputs says the world changed, not that the model got worse. The feedback store holds,
per image, the clinician's diagnosis beside the model's own answer (its version, top class and
melanoma flag at the registered operating point); scored per version over the latest labelled
cases, it gives the figures a dermatology service must watch: melanoma sensitivity above all,
with 95% intervals (the subgroup code's: exact for the proportions, so that 4 melanomas of 4
caught reads 40% to 100%, not 100% to 100%), since a handful of melanomas says little.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from dermaops.evaluation.intervals import clopper_pearson
from dermaops.evaluation.subgroups import Scores, metric_intervals, metric_values
from dermaops.labels import CLASSES, INDEX


class LiveSettings(BaseModel):
    """The window scored per version and how its intervals are drawn."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    window: int = Field(500, ge=1, description="latest labelled cases scored per version")
    bootstrap: int = Field(1000, ge=0, description="resamples for macro-F1's 95% interval")
    seed: int = 0


def labelled(feedback: pd.DataFrame) -> pd.DataFrame:
    """The rows that can be scored: a diagnosis, the model's answer and its version.

    ``melanoma_flag`` is the model's flag at its operating point as the UI recorded it; rows
    written before it was recorded count the top class being melanoma as the flag.
    """
    needed = {"dx", "predicted_dx", "model_version"}
    if feedback.empty or not needed <= set(feedback.columns):
        return pd.DataFrame(columns=[*sorted(needed), "flagged", "created_at"])
    rows = feedback[feedback["dx"].isin(CLASSES) & feedback["predicted_dx"].isin(CLASSES)]
    rows = rows[rows["model_version"].astype("string").str.strip().fillna("") != ""].copy()
    recorded = rows.get("melanoma_flag", pd.Series("", index=rows.index)).astype("string")
    recorded = recorded.str.lower().fillna("")
    rows["flagged"] = np.where(recorded.isin(["true", "false"]), recorded == "true",
                               rows["predicted_dx"] == "mel")  # fmt: skip
    rows["model_version"] = rows["model_version"].astype(str)
    if "created_at" not in rows:
        rows["created_at"] = ""
    return rows


def windows(feedback: pd.DataFrame, settings: LiveSettings) -> dict[str, pd.DataFrame]:
    """Per model version, its latest ``window`` labelled cases (see :func:`labelled`)."""
    rows = labelled(feedback)
    return {
        str(version): part.sort_values("created_at", kind="stable").tail(settings.window)
        for version, part in rows.groupby("model_version", sort=True)
    }


def live_performance(feedback: pd.DataFrame, settings: LiveSettings) -> dict[str, dict[str, Any]]:
    """Per model version, over its latest ``window`` labelled cases: ``cases``, ``melanomas``,
    ``accuracy``, ``f1_macro`` (classes present), ``melanoma_sensitivity`` and
    ``melanoma_specificity`` at the recorded flags (NaN when undefined), ``ci95``, and
    ``last_labelled`` (the newest case's time)."""
    return score_windows(windows(feedback, settings), settings)


def score_windows(
    latest_by_version: dict[str, pd.DataFrame], settings: LiveSettings
) -> dict[str, dict[str, Any]]:
    """:func:`live_performance` of windows already taken (:func:`windows`)."""
    rng = np.random.default_rng(settings.seed)
    found: dict[str, dict[str, Any]] = {}
    for version, latest in latest_by_version.items():
        s = Scores(
            latest["dx"].map(INDEX).to_numpy(dtype=np.int64),
            latest["predicted_dx"].map(INDEX).to_numpy(dtype=np.int64),
            latest["flagged"].to_numpy(dtype=bool),
        )
        found[version] = {
            "cases": len(latest),
            "last_labelled": str(latest["created_at"].iloc[-1]),
            "melanomas": int((latest["dx"] == "mel").sum()),
            "accuracy": float((s.labels == s.predicted).mean()),
            **metric_values(s),
            "ci95": {
                "accuracy": clopper_pearson(int((s.labels == s.predicted).sum()), len(s.labels)),
                **metric_intervals(s, settings.bootstrap, rng),
            },
        }
    return found
