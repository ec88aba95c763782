"""Plots and the Markdown report of an evaluation."""

from __future__ import annotations

import base64
import html as html_lib
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dermaops.labels import CLASSES, full_name

if TYPE_CHECKING:
    from dermaops.evaluation.result import EvaluationMetrics


def plot_confusion(counts: np.ndarray, path: Path, generated: bool) -> None:
    """Counts and row-normalised confusion matrices side by side."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 5), dpi=100)
    FigureCanvasAgg(fig)
    rows = counts.sum(axis=1, keepdims=True)
    normalised = np.divide(counts, rows, out=np.zeros_like(counts, dtype=float), where=rows > 0)
    for i, (matrix, title, fmt) in enumerate(
        [(counts, "counts", "d"), (normalised, "share of the true class", ".2f")], 1
    ):
        ax = fig.add_subplot(1, 2, i)
        ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
        for (r, c), value in np.ndenumerate(matrix):
            colour = "white" if normalised[r, c] > 0.5 else "black"
            ax.text(c, r, format(value, fmt), ha="center", va="center", color=colour, fontsize=9)
        ax.set_xticks(range(len(CLASSES)), CLASSES)
        ax.set_yticks(range(len(CLASSES)), CLASSES)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title)
    if generated:
        fig.suptitle("GENERATED DATA - not clinical results", color="darkred")
    fig.tight_layout()
    fig.savefig(path)


def plot_reliability(
    labels: np.ndarray, raw: np.ndarray, calibrated: np.ndarray, path: Path, bins: int = 10
) -> None:
    """Accuracy against confidence, before and after temperature scaling."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfect")
    edges = np.linspace(0, 1, bins + 1)
    for probs, name in ((raw, "raw"), (calibrated, "temperature-scaled")):
        confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == labels
        which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
        xs = [confidence[which == b].mean() for b in range(bins) if (which == b).any()]
        ys = [correct[which == b].mean() for b in range(bins) if (which == b).any()]
        ax.plot(xs, ys, marker="o", label=name)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title("Reliability (test split)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def plot_gradcam_grid(
    images: np.ndarray, overlays: list[np.ndarray], captions: list[str], path: Path, generated: bool
) -> None:
    """Pairs of (image, Grad-CAM overlay), two pairs a row."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = (len(images) + 1) // 2
    fig = Figure(figsize=(10, 2.6 * rows), dpi=100)
    FigureCanvasAgg(fig)
    for i, (image, heat, caption) in enumerate(zip(images, overlays, captions, strict=True)):
        for j, (picture, label) in enumerate(((image, caption), (heat, "Grad-CAM for mel"))):
            ax = fig.add_subplot(rows, 4, 2 * i + j + 1)
            ax.imshow(picture)
            ax.set_title(label, fontsize=9)
            ax.axis("off")
    title = "Test melanomas: where the model looked for melanoma"
    fig.suptitle(title + (" (GENERATED DATA, not clinical)" if generated else ""))
    fig.tight_layout()
    fig.savefig(path)


def write_markdown(metrics: EvaluationMetrics, path: Path) -> None:
    """The report, with the earlier system's tables: summary, melanoma, per class."""
    mel, model, auc = metrics.melanoma, metrics.model, metrics.auc_macro_ovr
    lines = ["# Evaluation report", ""]
    if metrics.generated:
        lines += [f"> **{metrics.notice}**", ""]
    size = f" at {model.image_size} px" if model.image_size else ""
    lines += [
        f"Model: {model.arch}{size}; {metrics.images} test images (split by lesion).",
        "",
        "| metric | value |",
        "|---|---:|",
        f"| accuracy | {metrics.accuracy:.2%} |",
        f"| balanced accuracy | {metrics.balanced_accuracy:.2%} |",
        f"| macro-F1 | {metrics.f1_macro:.4f} |",
        f"| weighted F1 | {metrics.f1_weighted:.4f} |",
        f"| macro one-vs-rest AUC | {auc:.4f} |" if auc is not None else "| macro AUC | n/a |",
        f"| ECE (after / before temperature {metrics.temperature:.2f}) | "
        f"{metrics.ece:.4f} / {metrics.ece_uncalibrated:.4f} |",
        "",
        "## Melanoma operating point",
        "",
        f"A lesion is flagged as possible melanoma when P(mel) >= {mel.threshold:.3f}. The "
        f"threshold was chosen on the validation split to catch {mel.target_sensitivity:.0%} "
        f"of melanomas there; on the test split it caught {mel.test_sensitivity:.1%} of "
        f"{mel.test_support} melanomas and cleared {mel.test_specificity:.1%} of the rest.",
        "",
        "## Per class",
        "",
        "| class | diagnosis | precision | recall | F1 | support |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for code, row in metrics.per_class.items():
        lines.append(
            f"| {code} | {full_name(code)} | {row.precision:.3f} | {row.recall:.3f} | "
            f"{row.f1:.3f} | {row.support} |"
        )
    lines += [
        "",
        "![confusion matrix](confusion_matrix.png)",
        "",
        "![reliability](reliability.png)",
        "",
    ]
    path.write_text("\n".join(lines))


def write_html(markdown: Path, path: Path, title: str = "DermaOps evaluation") -> None:
    """``markdown`` as one self-contained HTML page, its images inlined (the KFP UI shows it)."""
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark").enable("table").render(markdown.read_text())

    def inline(match: re.Match[str]) -> str:
        image = markdown.parent / html_lib.unescape(match.group(1))
        if not image.is_file():
            return match.group(0)
        return f'src="data:image/png;base64,{base64.b64encode(image.read_bytes()).decode()}"'

    body = re.sub(r'src="([^"]+\.png)"', inline, body)
    style = (
        "body{font-family:sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.25rem .5rem}"
        "img{max-width:100%}blockquote{background:#fff3cd;margin:0;padding:.5rem 1rem}"
    )
    path.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html_lib.escape(title)}</title>"
        f"<style>{style}</style></head><body>{body}</body></html>\n"
    )
