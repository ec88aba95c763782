"""Who the model works less well for: metrics per sex, age band and anatomical site.

HAM10000's metadata records sex, age and localization for (most) images. For each group with
enough test images this reports macro-F1 and the melanoma sensitivity and specificity at the
registered operating point, with 95% intervals (exact for the proportions, a stratified
bootstrap for macro-F1: :mod:`dermaops.evaluation.intervals`); smaller groups are reported as too
small rather than as numbers that mean nothing. The largest gap to the overall figure, per
metric, is flagged when it exceeds a margin.

Macro-F1 here averages over the classes present in the group (a group without any vascular
lesion is not penalised for it), so its overall figure can differ from ``f1_macro``, which
averages over all seven classes.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from dermaops.evaluation.intervals import clopper_pearson, stratified_bootstrap
from dermaops.labels import CLASSES, INDEX

MEL = INDEX["mel"]
METRICS = ("f1_macro", "melanoma_sensitivity", "melanoma_specificity")
ATTRIBUTES = ("sex", "age_band", "site")


class SubgroupSettings(BaseModel):
    """How small a group may be, how large a gap is news, how many bootstrap draws."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_support: int = Field(30, ge=1, description="fewer test images: reported as too small")
    gap_margin: float = Field(0.10, gt=0, le=1, description="flag a group this far below overall")
    bootstrap: int = Field(
        1000, ge=0, description="resamples for macro-F1's 95% interval (0: none)"
    )
    age_bands: tuple[int, ...] = Field((30, 50, 70), description="band edges in years")
    seed: int = 0


@dataclass(frozen=True)
class Scores:
    """What each group is judged on: true classes, predicted classes, melanoma flags."""

    labels: np.ndarray
    predicted: np.ndarray
    flagged: np.ndarray

    def take(self, rows: np.ndarray) -> Scores:
        return Scores(self.labels[rows], self.predicted[rows], self.flagged[rows])


def groups(meta: pd.DataFrame, age_bands: tuple[int, ...] = (30, 50, 70)) -> pd.DataFrame:
    """One column per attribute: ``sex``, ``age_band`` (e.g. ``<30``, ``30-50``, ``>70``) and
    ``site``; missing or unknown values are ``unknown``."""
    sex = meta["sex"].astype("string").str.lower().fillna("unknown")
    sex = sex.where(sex.isin(["male", "female"]), "unknown")
    edges = [-np.inf, *age_bands, np.inf]
    names = [f"<{age_bands[0]}"]
    names += [f"{lo}-{hi}" for lo, hi in itertools.pairwise(age_bands)]
    names += [f">{age_bands[-1]}"]
    age = pd.to_numeric(meta["age"], errors="coerce")
    band = pd.cut(age, edges, labels=names, right=False).astype("string").fillna("unknown")
    site = meta["localization"].astype("string").str.lower().fillna("unknown")
    return pd.DataFrame({"sex": sex, "age_band": band, "site": site}).reset_index(drop=True)


def scores(labels: np.ndarray, probs: np.ndarray, threshold: float) -> Scores:
    """Calibrated probabilities to predicted classes and melanoma flags at the operating point."""
    return Scores(labels, probs.argmax(axis=1), probs[:, MEL] >= threshold)


def metric_values(s: Scores) -> dict[str, float]:
    """Macro-F1 over the classes present, melanoma sensitivity and specificity (NaN when
    undefined: no melanoma, or nothing but melanoma)."""
    k = len(CLASSES)
    confusion = np.bincount(s.labels * k + s.predicted, minlength=k * k).reshape(k, k)
    true_pos = np.diag(confusion).astype(float)
    actual, predicted = confusion.sum(axis=1), confusion.sum(axis=0)
    present = actual > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(actual + predicted > 0, 2 * true_pos / (actual + predicted), 0.0)
    is_mel = s.labels == MEL
    positives, negatives = int(is_mel.sum()), int((~is_mel).sum())
    return {
        "f1_macro": float(f1[present].mean()) if present.any() else float("nan"),
        "melanoma_sensitivity": float((s.flagged & is_mel).sum() / positives)
        if positives
        else float("nan"),
        "melanoma_specificity": float((~s.flagged & ~is_mel).sum() / negatives)
        if negatives
        else float("nan"),
    }


def metric_intervals(
    s: Scores, draws: int, rng: np.random.Generator
) -> dict[str, list[float | None]]:
    """95% intervals of :data:`METRICS` (:mod:`dermaops.evaluation.intervals`): exact
    Clopper-Pearson for melanoma sensitivity and specificity, a class-stratified bootstrap of
    ``draws`` resamples for macro-F1 ([None, None] where it cannot bound it, or ``draws`` is 0)."""
    is_mel = s.labels == MEL
    return {
        "f1_macro": stratified_bootstrap(
            s.labels, lambda rows: metric_values(s.take(rows))["f1_macro"], draws, rng
        ),
        "melanoma_sensitivity": clopper_pearson(int((s.flagged & is_mel).sum()),
                                                int(is_mel.sum())),
        "melanoma_specificity": clopper_pearson(int((~s.flagged & ~is_mel).sum()),
                                                int((~is_mel).sum())),
    }  # fmt: skip


def evaluate_subgroups(
    meta: pd.DataFrame, s: Scores, settings: SubgroupSettings | None = None
) -> dict[str, Any]:
    """``overall`` and per-attribute ``groups`` with intervals, and the flagged ``gaps``.

    Args:
        meta: the test images' metadata (``sex``, ``age``, ``localization``), in the order of
            ``s``.
        s: the test images' scores.
    """
    settings = settings or SubgroupSettings()
    if len(meta) != len(s.labels):
        raise ValueError(f"{len(meta)} metadata rows for {len(s.labels)} scored images")
    rng = np.random.default_rng(settings.seed)
    table = groups(meta, settings.age_bands)
    overall = metric_values(s)
    result: dict[str, Any] = {
        "settings": settings.model_dump(),
        "overall": {**_rounded(overall), "support": len(s.labels),
                    "ci95": metric_intervals(s, settings.bootstrap, rng)},
        "groups": {},
    }  # fmt: skip
    for attribute in ATTRIBUTES:
        rows = []
        for value, index in sorted(table.groupby(attribute).indices.items()):
            support = len(index)
            row: dict[str, Any] = {"group": value, "support": support}
            if support < settings.min_support:
                row["too_small"] = True
            else:
                part = s.take(np.asarray(index))
                row |= {**_rounded(metric_values(part)), "too_small": False,
                        "ci95": metric_intervals(part, settings.bootstrap, rng)}  # fmt: skip
            rows.append(row)
        result["groups"][attribute] = rows
    result["gaps"] = _largest_gaps(result, overall, settings.gap_margin)
    return result


def _largest_gaps(
    result: dict[str, Any], overall: dict[str, float], margin: float
) -> list[dict[str, Any]]:
    """Per metric, the group furthest below the overall figure; flagged beyond ``margin``."""
    gaps = []
    for metric in METRICS:
        candidates = [
            (overall[metric] - row[metric], attribute, row)
            for attribute, rows in result["groups"].items()
            for row in rows
            if not row["too_small"] and row[metric] is not None and not np.isnan(overall[metric])
        ]
        if not candidates:
            continue
        gap, attribute, row = max(candidates, key=lambda c: c[0])
        gaps.append({
            "metric": metric, "attribute": attribute, "group": row["group"],
            "value": row[metric], "overall": round(overall[metric], 4), "gap": round(gap, 4),
            "flagged": bool(gap > margin),
        })  # fmt: skip
    return gaps


def _rounded(values: dict[str, float]) -> dict[str, float | None]:
    """Four decimals; an undefined figure (NaN) as None, so metrics.json stays valid JSON."""
    return {k: None if np.isnan(v) else round(v, 4) for k, v in values.items()}


def markdown(subgroups: dict[str, Any]) -> str:
    """The subgroup section of a report: one table per attribute, then the flagged gaps."""
    lines = ["## Subgroups (test split)", ""]
    o = subgroups["overall"]
    margin = subgroups["settings"]["gap_margin"]
    lines.append(
        f"Overall: macro-F1 {_cell(o, 'f1_macro')}, melanoma sensitivity "
        f"{_cell(o, 'melanoma_sensitivity')}, specificity {_cell(o, 'melanoma_specificity')} "
        f"({o['support']} images; 95% intervals: exact Clopper-Pearson for sensitivity and "
        f"specificity, a class-stratified bootstrap for macro-F1, none where it cannot bound "
        f"it). Groups under "
        f"{subgroups['settings']['min_support']} images are too small to report."
    )
    for attribute, rows in subgroups["groups"].items():
        lines += ["", f"| {attribute} | images | macro-F1 | mel sensitivity | mel specificity |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for row in rows:
            if row["too_small"]:
                lines.append(f"| {row['group']} | {row['support']} | too small | | |")
            else:
                lines.append(f"| {row['group']} | {row['support']} | {_cell(row, 'f1_macro')} | "
                             f"{_cell(row, 'melanoma_sensitivity')} | "
                             f"{_cell(row, 'melanoma_specificity')} |")  # fmt: skip
    flagged = [g for g in subgroups["gaps"] if g["flagged"]]
    lines += ["", f"Largest gaps below overall (flagged beyond {margin:.2f}):", ""]
    for g in subgroups["gaps"]:
        mark = "**FLAGGED**" if g["flagged"] else "within margin"
        lines.append(f"- {g['metric']}: {g['attribute']} = {g['group']} at {g['value']:.3f} vs "
                     f"{g['overall']:.3f} overall (gap {g['gap']:.3f}, {mark})")  # fmt: skip
    if not subgroups["gaps"]:
        lines.append("- no group large enough to compare")
    elif not flagged:
        lines.append("")
        lines.append("No group falls further below the overall figures than the margin.")
    return "\n".join(lines) + "\n"


def _cell(row: dict[str, Any], metric: str) -> str:
    value = row[metric]
    if value is None:  # undefined for this group (no melanoma, or only melanoma)
        return "n/a"
    interval = row.get("ci95", {}).get(metric)
    if interval and interval[0] is not None:
        return f"{value:.3f} [{interval[0]:.3f}, {interval[1]:.3f}]"
    return f"{value:.3f}"
