"""The data report of a prepared set: JSON for machines, Markdown and a PNG for people."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd

from dermaops.data.loaders import RawDataset
from dermaops.data.schema import METADATA_COLUMNS, REASONS, SPLITS, Quarantined
from dermaops.data.split import SplitCheck
from dermaops.labels import CLASSES, full_name

GENERATED_NOTICE = (
    "GENERATED DATA: these images were drawn by `dermaops data synth`. Nothing measured on "
    "them is a clinical result."
)


def build_report(
    dataset: RawDataset,
    kept: pd.DataFrame,
    quarantined: list[Quarantined],
    check: SplitCheck,
    tolerance: float,
    raw: Path,
    fingerprint: str,
) -> dict[str, Any]:
    """Everything a reader needs to trust (or distrust) a prepared set, as plain JSON types."""
    counts = Counter(q.reason for q in quarantined)
    return {
        "dataset": {
            "root": str(raw.resolve()),
            "layout": dataset.layout,
            "generated": dataset.generated,
            "notice": GENERATED_NOTICE if dataset.generated else "",
            "split_grouping": "lesion_id" if dataset.lesion_grouped else "image_id",
        },
        "images": {
            "prepared": len(kept),
            "quarantined": len(quarantined),
        },
        "classes": _class_table(kept),
        "splits": {name: _split_summary(kept[kept["split"] == name]) for name in SPLITS},
        "split_check": {
            "shared_lesions": check.shared_lesions,
            "max_class_share_gap": round(check.max_share_gap, 4),
            "tolerance": tolerance,
            "within_tolerance": check.max_share_gap <= tolerance,
        },
        "missing_values": {c: int(kept[c].isna().sum()) for c in METADATA_COLUMNS},
        "quarantine_counts": dict(sorted(counts.items())),
        "quarantined": [q.as_dict() for q in quarantined],
        "fingerprint": fingerprint,
    }


def write_report(folder: Path, report: dict[str, Any]) -> None:
    """Write data_report.json, data_report.md and class_distribution.png into ``folder``."""
    (folder / "data_report.json").write_text(json.dumps(report, indent=2) + "\n")
    (folder / "data_report.md").write_text(to_markdown(report))
    _plot_distribution(report, folder / "class_distribution.png")


def to_markdown(report: dict[str, Any]) -> str:
    ds, images = report["dataset"], report["images"]
    lines = ["# Data report", ""]
    if ds["generated"]:
        lines += [f"> **{ds['notice']}**", ""]
    lines += [
        f"Source: `{ds['root']}` ({ds['layout']} layout).",
        f"Split grouped by `{ds['split_grouping']}`.",
        f"{images['prepared']} images prepared, {images['quarantined']} quarantined.",
        "",
        "## Classes",
        "",
        "| dx | diagnosis | images | lesions | share |",
        "|---|---|---:|---:|---:|",
    ]
    for c in report["classes"]:
        row = f"| {c['dx']} | {c['name']} | {c['images']} | {c['lesions']} | {c['share']:.2%} |"
        lines.append(row)
    lines += ["", "## Splits", "", "| split | images | lesions | " + " | ".join(CLASSES) + " |"]
    lines.append("|---|---:|---:|" + "---:|" * len(CLASSES))
    for name, s in report["splits"].items():
        shares = " | ".join(f"{s['class_shares'][dx]:.1%}" for dx in CLASSES)
        lines.append(f"| {name} | {s['images']} | {s['lesions']} | {shares} |")
    check = report["split_check"]
    lines += [
        "",
        f"Lesions in more than one split: **{check['shared_lesions']}**. Largest class-share gap "
        f"to the whole: {check['max_class_share_gap']:.2%} (tolerance {check['tolerance']:.0%}).",
        "",
        "## Missing values",
        "",
        ", ".join(f"{k}: {v}" for k, v in report["missing_values"].items()),
        "",
        "## Quarantined",
        "",
    ]
    if not report["quarantined"]:
        lines.append("Nothing.")
    for reason, n in report["quarantine_counts"].items():
        lines.append(f"- **{reason}** ({REASONS.get(reason, '')}): {n}")
    for q in report["quarantined"][:50]:
        lines.append(f"  - `{q['image_id']}` {q['reason']}: {q['detail']}")
    if len(report["quarantined"]) > 50:
        lines.append(f"  - ... {len(report['quarantined']) - 50} more in data_report.json")
    return "\n".join(lines) + "\n"


def _class_table(kept: pd.DataFrame) -> list[dict[str, Any]]:
    images = kept["dx"].value_counts().reindex(list(CLASSES), fill_value=0)
    lesions = kept.groupby("dx")["lesion_id"].nunique().reindex(list(CLASSES), fill_value=0)
    total = max(1, len(kept))
    return [
        {
            "dx": dx,
            "name": full_name(dx),
            "images": int(images[dx]),
            "lesions": int(lesions[dx]),
            "share": round(int(images[dx]) / total, 4),
        }
        for dx in CLASSES
    ]


def _split_summary(part: pd.DataFrame) -> dict[str, Any]:
    shares = part["dx"].value_counts(normalize=True).reindex(list(CLASSES), fill_value=0.0)
    return {
        "images": len(part),
        "lesions": int(part["lesion_id"].nunique()),
        "class_shares": {dx: round(float(shares[dx]), 4) for dx in CLASSES},
    }


def _plot_distribution(report: dict[str, Any], path: Path) -> None:
    # The object API without pyplot: no global figure state, and a third less import time.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    width = 0.27
    for i, (name, split) in enumerate(report["splits"].items()):
        shares = [split["class_shares"][dx] * 100 for dx in CLASSES]
        ax.bar([x + (i - 1) * width for x in range(len(CLASSES))], shares, width, label=name)
    ax.set_xticks(range(len(CLASSES)), list(CLASSES))
    ax.set_ylabel("share of split images (%)")
    title = "Class distribution by split"
    if report["dataset"]["generated"]:
        title += " (GENERATED DATA, not clinical)"
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
