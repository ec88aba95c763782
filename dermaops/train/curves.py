"""Loss, accuracy and macro-F1 curves of a run (PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_history(history: list[dict[str, Any]], path: Path, generated: bool) -> None:
    """Three panels over epochs: loss, accuracy, macro-F1 (train and validation)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(12, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    panels = [
        ("loss", [("train_loss", "train"), ("val_loss", "val")]),
        ("accuracy", [("train_accuracy", "train"), ("val_accuracy", "val")]),
        ("macro-F1", [("val_f1_macro", "val")]),
    ]
    for i, (title, series) in enumerate(panels, 1):
        ax = fig.add_subplot(1, 3, i)
        for key, label in series:
            ax.plot(epochs, [h[key] for h in history], marker="o", markersize=3, label=label)
        for boundary in _phase_starts(history)[1:]:
            ax.axvline(boundary - 0.5, color="grey", linestyle=":", linewidth=1)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    if generated:
        fig.suptitle("GENERATED DATA - not clinical results", color="darkred")
    fig.tight_layout()
    fig.savefig(path)


def _phase_starts(history: list[dict[str, Any]]) -> list[int]:
    return [
        h["epoch"] for i, h in enumerate(history) if i == 0 or h["phase"] != history[i - 1]["phase"]
    ]
