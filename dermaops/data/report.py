"""The data report of a prepared set: JSON for machines, Markdown and a PNG for people."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image, ImageDraw, ImageFont

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


_SPLIT_COLOURS = {"train": (31, 119, 180), "val": (255, 127, 14), "test": (44, 160, 44)}


def _plot_distribution(report: dict[str, Any], path: Path) -> None:
    """A grouped bar chart of class shares per split, drawn with PIL.

    matplotlib would cost more to import than the rest of preparing a small set takes.
    """
    width, height, left, top, bottom = 820, 420, 70, 50, 50
    plot_w, plot_h = width - left - 20, height - top - bottom
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font, title_font = ImageFont.load_default(size=13), ImageFont.load_default(size=16)
    peak = max(max(s["class_shares"].values()) for s in report["splits"].values()) or 1.0
    top_pct = max(10, math.ceil(peak * 10) * 10)  # the next multiple of 10 %
    for pct in range(0, top_pct + 1, 10):
        y = top + plot_h * (1 - pct / top_pct)
        draw.line([(left, y), (left + plot_w, y)], fill=(225, 225, 225))
        draw.text((left - 8, y), f"{pct}%", fill="black", font=font, anchor="rm")
    group = plot_w / len(CLASSES)
    bar = group * 0.8 / len(report["splits"])
    for i, dx in enumerate(CLASSES):
        x0 = left + i * group + group * 0.1
        for j, (name, split) in enumerate(report["splits"].items()):
            y = top + plot_h * (1 - 100 * split["class_shares"][dx] / top_pct)
            box = (x0 + j * bar, y, x0 + (j + 1) * bar - 1, top + plot_h)
            draw.rectangle(box, fill=_SPLIT_COLOURS.get(name, (128, 128, 128)))
        draw.text((x0 + group * 0.4, top + plot_h + 8), dx, fill="black", font=font, anchor="mt")
    draw.line([(left, top), (left, top + plot_h), (left + plot_w, top + plot_h)], fill="black")
    for j, name in enumerate(report["splits"]):
        x = width - 90
        draw.rectangle((x, top + j * 18, x + 12, top + j * 18 + 12), fill=_SPLIT_COLOURS[name])
        draw.text((x + 18, top + j * 18 + 6), name, fill="black", font=font, anchor="lm")
    title = "Class share of each split (% of its images)"
    if report["dataset"]["generated"]:
        title += " - GENERATED DATA, not clinical"
    draw.text((width / 2, 20), title, fill="black", font=title_font, anchor="mm")
    image.save(path)
