"""Fitting and measuring the out-of-distribution guard at evaluation.

Every method of :mod:`dermaops.model.guard` is fitted (on the training split, its threshold on
validation) and measured on the same images: the held-out test lesions, which should pass, and
generated images of each kind in :mod:`dermaops.data.ood` (flat colour, text screenshots, natural
textures, skin without a lesion), which it should refuse, plus turned and zoomed test lesions,
which should pass. Per kind: the AUROC of the score (test lesions against that kind) and the
share caught (or passed) at the threshold. The guard registered is the one asked for; the
others' figures stay beside it in ``metrics.json``, so the choice is a measurement anyone can
repeat.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dermaops.data.ood import LESION_KINDS, OOD_KINDS, lesion_variants, ood_images
from dermaops.model.artifact import Preprocessing
from dermaops.model.guard import GUARD, METHODS, OodGuard

log = logging.getLogger(__name__)

#: Logits and embeddings of uint8 cache pixels (N, H, W, 3): the model, however it runs.
Outputs = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
Split = tuple[np.ndarray, np.ndarray]  # logits (N, 7), embeddings (N, D)


@dataclass(frozen=True)
class GuardData:
    """The model's outputs on the splits the guard is fitted, thresholded and measured on."""

    train: Split
    train_labels: np.ndarray
    val: Split
    test: Split
    test_pixels: np.ndarray  # uint8 (N, H, W, 3) cache pixels of the test images


def fit_and_measure(
    data: GuardData,
    outputs: Outputs,
    pre: Preprocessing,
    out: Path,
    method: str = "mahalanobis",
    per_kind: int = 48,
    seed: int = 0,
) -> dict[str, Any]:
    """Fit every method, save ``method``'s guard to ``out/guard.npz`` and return the figures
    ``metrics.json`` keeps under ``ood``."""
    guards = {m: OodGuard.fit(m, (*data.train, data.train_labels), data.val) for m in METHODS}
    guards[method].save(out / GUARD)
    kinds = {kind: _cache(ood_images(kind, per_kind, seed), pre) for kind in OOD_KINDS}
    picked = np.random.default_rng(seed).permutation(len(data.test_pixels))[:per_kind]
    lesions = {
        kind: _cache(lesion_variants(kind, list(data.test_pixels[picked]), seed), pre)
        for kind in LESION_KINDS
    }
    seen = {name: outputs(pixels) for name, pixels in {**kinds, **lesions}.items()}
    measured = {m: _measure(g, data.test, seen) for m, g in guards.items()}
    figures = {
        "method": method,
        "threshold": guards[method].threshold,
        "keep": guards[method].keep,
        **measured[method],
        "methods": {m: {"auroc": f["auroc"], "caught": f["caught"]} for m, f in measured.items()},
        "generated": True,
    }
    log.info(
        "out-of-distribution guard (%s): AUROC %.3f on generated images it should refuse, "
        "%.1f %% of held-out lesions pass; %s",
        method, figures["auroc"], 100 * figures["held_out_passed"],
        ", ".join(f"{m} AUROC {f['auroc']:.3f}" for m, f in measured.items()),
    )  # fmt: skip
    return figures


def markdown(ood: dict[str, Any]) -> str:
    """The guard's section of the evaluation report and the model card."""
    share = f"{ood['keep']:.0%}"
    others = ", ".join(
        f"{m} {f['auroc']:.3f}" for m, f in ood["methods"].items() if m != ood["method"]
    )
    lines = [
        "## Out-of-distribution guard",
        "",
        f"The predictor answers `in_distribution: false` for an image whose {ood['method']} "
        f"score is above {ood['threshold']:.4g}, the threshold that keeps {share} of the "
        f"validation images; the page then shows a warning instead of a diagnosis. On the "
        f"{ood['held_out_images']} held-out test images, {ood['held_out_passed']:.1%} passed. "
        "Measured on images drawn by `dermaops.data.ood` (generated, not photographs) of what a "
        "dermoscopy service is sent by mistake (AUROC against the held-out test images; caught "
        "at the threshold):",
        "",
        "| kind | images | AUROC | caught |",
        "|---|---:|---:|---:|",
        *(
            f"| {kind.replace('_', ' ')} | {k['images']} | {k['auroc']:.3f} | {k['caught']:.1%} |"
            for kind, k in ood["kinds"].items()
        ),
        f"| **all** | {sum(k['images'] for k in ood['kinds'].values())} | "
        f"**{ood['auroc']:.3f}** | {ood['caught']:.1%} |",
        "",
        "Held-out lesions changed in ways dermoscopy allows, which should pass: "
        + "; ".join(
            f"{kind.replace('_', ' ')} {k['passed']:.1%} of {k['images']}"
            for kind, k in ood["lesion_kinds"].items()
        )
        + f". The other score measured on the same images: {others} AUROC.",
        "",
    ]
    return "\n".join(lines)


def _measure(guard: OodGuard, test: Split, seen: dict[str, Split]) -> dict[str, Any]:
    held_out = guard.scores(*test)
    scores = {name: guard.scores(*outputs) for name, outputs in seen.items()}
    refused = np.concatenate([scores[k] for k in OOD_KINDS])
    return {
        "auroc": _auroc(held_out, refused),
        "caught": float(np.mean(~guard.admits(refused))),
        "held_out_passed": float(np.mean(guard.admits(held_out))),
        "held_out_images": len(held_out),
        "kinds": {
            kind: {
                "images": len(scores[kind]),
                "auroc": _auroc(held_out, scores[kind]),
                "caught": float(np.mean(~guard.admits(scores[kind]))),
            }
            for kind in OOD_KINDS
        },
        "lesion_kinds": {
            kind: {
                "images": len(scores[kind]),
                "passed": float(np.mean(guard.admits(scores[kind]))),
            }
            for kind in LESION_KINDS
        },
    }


def _auroc(inside: np.ndarray, outside: np.ndarray) -> float:
    """How well the score ranks ``outside`` images above ``inside`` ones (1 is perfect)."""
    from sklearn.metrics import roc_auc_score

    truth = np.r_[np.zeros(len(inside)), np.ones(len(outside))]
    return float(roc_auc_score(truth, np.r_[inside, outside]))


def _cache(images: list[Any], pre: Preprocessing) -> np.ndarray:
    return np.stack([pre.cache_pixels(image) for image in images])
