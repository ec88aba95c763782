"""The model card of one registered version, generated from the run that produced it.

Everything in it comes from files the pipeline wrote (the prepared set's manifest and index,
the model's model.json, the evaluation's metrics.json) and the registry's lineage; nothing is
typed in by hand except the intended use and the standing limitations of the method.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from dermaops.data.report import GENERATED_NOTICE
from dermaops.evaluation.ood import markdown as ood_markdown
from dermaops.evaluation.precision import markdown as precision_markdown
from dermaops.evaluation.report import write_html
from dermaops.evaluation.result import EvaluationMetrics
from dermaops.evaluation.subgroups import markdown as subgroup_markdown
from dermaops.labels import CLASSES, FULL_NAMES
from dermaops.model.artifact import ModelArtifact

CARD_MD, CARD_HTML = "model_card.md", "model_card.html"


@dataclass(frozen=True)
class Lineage:
    """Where a version came from."""

    model_name: str
    version: str
    run_id: str
    pipeline_run: str
    parent_champion: str  # the champion when this version was registered ("" for the first)
    registered_at: str


def card_markdown(
    metrics: EvaluationMetrics, model: dict[str, Any], prepared: Path, lineage: Lineage
) -> str:
    """The card as Markdown."""
    manifest = json.loads((prepared / "manifest.json").read_text())
    index = pd.read_csv(prepared / "index.csv")
    generated = bool(manifest.get("generated"))
    mel = metrics.melanoma
    title = f"# Model card: {lineage.model_name} version {lineage.version}"
    parts = [title, ""]
    if generated:
        parts += [f"> {GENERATED_NOTICE}", ""]
    parts += [
        "## Model",
        "",
        f"- Architecture: {model['arch']} (torchvision), input "
        f"{model['preprocessing']['image_size']} px, {len(CLASSES)} classes: "
        + ", ".join(f"{c} ({FULL_NAMES[c]})" for c in CLASSES),
        f"- Initial weights: {model.get('train_settings', {}).get('weights', 'unknown')}; "
        f"best epoch {model.get('best_epoch', '?')}; DermaOps {model.get('dermaops_version', '?')}",
        "- Training settings: " + _settings(model.get("train_settings", {})),
        "",
        "## Data",
        "",
        *_data(manifest, index, generated),
        "",
        "## Intended use",
        "",
        "- Decision support for clinicians reading dermoscopic images of a single skin lesion:",
        "  a second opinion on the diagnosis among the seven HAM10000 classes and a melanoma flag",
        "  that asks for a closer look. A clinician makes every diagnosis.",
        "- Out of scope: self-diagnosis by patients; clinical (non-dermoscopic) photographs;",
        "  lesions outside the seven classes (e.g. squamous cell carcinoma, which HAM10000 lacks);",
        "  mucosal or nail lesions; children, unless the evaluation covers them; any use as the",
        "  sole basis of a decision to treat or not.",
        "",
        "## Performance (test split)",
        "",
        *_performance(metrics),
        "",
        "## The melanoma operating point",
        "",
        f"An image is flagged as possible melanoma when the model's calibrated probability of "
        f"melanoma is at least {mel.threshold:.3f}. That threshold was chosen on the "
        f"validation split to catch at least {mel.target_sensitivity:.0%} of "
        f"melanomas. On the test split it caught {_pct(mel.test_sensitivity)} of the "
        f"{mel.test_support} melanomas and correctly left unflagged "
        f"{_pct(mel.test_specificity)} of the other lesions: "
        f"{_missed(mel.test_sensitivity)}.",
        "",
        "## Calibration",
        "",
        f"Probabilities are temperature-scaled (T = {metrics.temperature:.3f}, fitted on "
        f"validation). Expected calibration error on test: {metrics.ece_uncalibrated:.3f} "
        f"before, {metrics.ece:.3f} after.",
        "",
    ]
    if metrics.subgroups is not None:
        parts.append(subgroup_markdown(metrics.subgroups))
    if metrics.ood is not None:
        parts.append(ood_markdown(metrics.ood))
    if metrics.precision is not None:
        parts.append(precision_markdown(metrics.precision))
    parts += [
        "## Known limitations",
        "",
        *_limitations(metrics, generated),
        "",
        "## Lineage",
        "",
        f"- Registered model: {lineage.model_name} version {lineage.version} "
        f"({lineage.registered_at})",
        f"- MLflow run: {lineage.run_id}; pipeline run: {lineage.pipeline_run or 'unknown'}",
        "- Champion when registered: "
        + (f"version {lineage.parent_champion}" if lineage.parent_champion else "none (first)"),
        f"- Data fingerprint: {manifest.get('fingerprint', 'unknown')}",
        "",
    ]
    return "\n".join(parts)


def write_card(
    metrics: EvaluationMetrics, model_dir: Path, prepared: Path, lineage: Lineage, out: Path
) -> tuple[Path, Path]:
    """Write ``model_card.md`` and ``model_card.html`` into ``out``."""
    model = ModelArtifact.load(model_dir).meta
    out.mkdir(parents=True, exist_ok=True)
    md = out / CARD_MD
    md.write_text(card_markdown(metrics, model, prepared, lineage))
    html = out / CARD_HTML
    write_html(md, html, title=f"Model card: {lineage.model_name} v{lineage.version}")
    return md, html


def _settings(settings: dict[str, Any]) -> str:
    keys = ("epochs", "batch_size", "lr", "finetune_lr", "weight_decay", "label_smoothing",
            "balance", "seed", "precision")  # fmt: skip
    return ", ".join(f"{k} {settings[k]}" for k in keys if k in settings) or "unknown"


def _data(manifest: dict[str, Any], index: pd.DataFrame, generated: bool) -> list[str]:
    source = (
        "a GENERATED set with HAM10000's schema (not patients' images)"
        if generated
        else ", ".join(sorted(index["dataset"].dropna().unique())) or "HAM10000"
    )
    counts = index.groupby("split").agg(
        images=("image_id", "size"), lesions=("lesion_id", "nunique")
    )
    fractions = manifest.get("settings", {}).get("fractions")
    lines = [
        f"- Source: {source}; {manifest.get('images', len(index))} images.",
        "- Split by lesion (no lesion in two splits), stratified by diagnosis"
        + (f", fractions {fractions}" if fractions else "")
        + "; feedback lesions join train and validation only.",
        "",
        "| split | images | lesions |",
        "|---|---|---|",
    ]
    for split in ("train", "val", "test"):
        if split in counts.index:
            lines.append(
                f"| {split} | {counts.loc[split, 'images']} | {counts.loc[split, 'lesions']} |"
            )
    return lines


def _performance(metrics: EvaluationMetrics) -> list[str]:
    overall = (metrics.subgroups or {}).get("overall", {})
    ci = overall.get("ci95", {})

    def interval(name: str) -> str:
        bounds = ci.get(name)
        return (
            f" (95% CI {bounds[0]:.3f}-{bounds[1]:.3f})" if bounds and bounds[0] is not None else ""
        )

    sens, spec = metrics.melanoma.test_sensitivity, metrics.melanoma.test_specificity
    present = overall.get("f1_macro")
    lines = [
        "| metric | value |",
        "|---|---|",
        f"| images | {metrics.images} |",
        f"| accuracy | {metrics.accuracy:.3f} |",
        f"| balanced accuracy | {metrics.balanced_accuracy:.3f} |",
        f"| macro-F1 (all 7 classes) | {metrics.f1_macro:.3f} |",
    ]
    if present is not None:
        lines.append(f"| macro-F1 (classes present) | {present:.3f}{interval('f1_macro')} |")
    lines += [
        f"| macro AUC (one vs rest) | {_number(metrics.auc_macro_ovr)} |",
        f"| melanoma sensitivity | {sens:.3f}{interval('melanoma_sensitivity')} |",
        f"| melanoma specificity | {spec:.3f}{interval('melanoma_specificity')} |",
    ]
    return lines


def _limitations(metrics: EvaluationMetrics, generated: bool) -> list[str]:
    lines = []
    if generated:
        lines.append("- Trained and evaluated on generated images: its figures say the pipeline "
                     "works, nothing about patients.")  # fmt: skip
    lines += [
        "- HAM10000 comes from two sites (Vienna, Queensland) and mostly fair skin; performance on "
        "darker skin types and other dermatoscopes is unknown until measured.",
        "- Rare classes (dermatofibroma, vascular lesions) have few test cases: their figures are "
        "uncertain, as the intervals show.",
        "- The melanoma threshold trades missed melanomas for unnecessary reviews; it was set on "
        "validation and holds only while the input distribution does (the drift monitor watches).",
    ]
    subgroups = metrics.subgroups or {}
    for gap in subgroups.get("gaps", []):
        if gap["flagged"]:
            lines.append(f"- Weaker for {gap['attribute']} = {gap['group']}: {gap['metric']} "
                         f"{gap['value']:.3f} vs {gap['overall']:.3f} overall.")  # fmt: skip
    small = [
        f"{attribute} = {row['group']}"
        for attribute, rows in subgroups.get("groups", {}).items()
        for row in rows
        if row["too_small"]
    ]
    if small:
        lines.append("- Too few test images to judge: " + ", ".join(small) + ".")
    return lines


def _number(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.3f}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.0%}"


def _missed(sensitivity: float | None) -> str:
    if sensitivity is None or math.isnan(sensitivity):
        return "no melanoma in the test split to judge by"
    missed = 1 - sensitivity
    if missed <= 0:
        return "no test melanoma passed unflagged"
    return f"about 1 in {max(1, round(1 / missed))} melanomas would pass unflagged"
