"""Train/val/test split grouped by lesion and stratified by diagnosis.

HAM10000 has several photographs of many lesions. Splitting by image puts views of one lesion
in train and test and inflates every test figure; here a lesion lands in exactly one split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from dermaops.data.schema import FEEDBACK_PREFIX, SPLITS


@dataclass(frozen=True)
class SplitCheck:
    """What a split achieved: leaks (must be 0) and the worst class-share gap to the whole."""

    shared_lesions: int
    max_share_gap: float


def split_by_lesion(
    records: pd.DataFrame,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 42,
    max_moves: int = 400,
) -> pd.Series:
    """Assign each row a split (train/val/test) so that no lesion spans two splits.

    Each lesion takes its most frequent diagnosis. Within a diagnosis, lesions are dealt out
    (largest first, ties in seeded order) to the split furthest below its target; then single
    lesions are moved between splits while that shrinks the largest gap between a split's
    class shares and the whole's plus the largest gap of split sizes to ``fractions``.
    The result is a pure function of the inputs.

    Args:
        records: rows with ``lesion_id`` and ``dx``.
        fractions: image shares of train, val and test; they must sum to 1.
        seed: orders lesions of equal size.
        max_moves: at most this many improving moves.

    Returns:
        A Series of split names aligned with ``records``.
    """
    target = np.asarray(fractions, dtype=float)
    if target.shape != (len(SPLITS),) or not np.isclose(target.sum(), 1.0) or target.min() <= 0:
        raise ValueError(f"split fractions {fractions} must be three positive numbers summing to 1")
    return _split(records, target, SPLITS, seed, max_moves)


def extend_split(
    records: pd.DataFrame,
    pins: pd.Series,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 42,
) -> pd.Series:
    """Keep an earlier split and deal only new lesions: a lesion's split never changes.

    Every run after the first is judged against the champion, on the champion's split: lesions
    named in ``pins`` keep their split, so a champion is never scored on what it trained on as
    the data grows. New lesions of the data set are dealt to train, val and test in the ratio of
    ``fractions``; clinician feedback (``FB_`` lesions) to train or val only.

    Args:
        records: rows with ``lesion_id`` and ``dx``.
        pins: split name by lesion_id, from an earlier prepared set's ``split_info.csv``.
        fractions: train/val/test shares of new lesions (feedback: the train:val ratio).
        seed: orders new lesions of equal size.
    """
    unknown = set(pins.unique()) - set(SPLITS)
    if unknown:
        raise ValueError(f"split pins name unknown splits {sorted(unknown)}; use {SPLITS}")
    split = records["lesion_id"].map(pins).rename("split")
    feedback = records["lesion_id"].str.startswith(FEEDBACK_PREFIX)
    new_data, new_feedback = split.isna() & ~feedback, split.isna() & feedback
    if new_data.any():
        target = np.asarray(fractions, dtype=float)
        split[new_data] = _split(records[new_data], target, SPLITS, seed, 400)
    if new_feedback.any():
        target = np.asarray(fractions[:2], dtype=float)
        split[new_feedback] = _split(records[new_feedback], target / target.sum(), SPLITS[:2],
                                     seed, 400)  # fmt: skip
    return split


def _split(
    records: pd.DataFrame, target: np.ndarray, names: tuple[str, ...], seed: int, max_moves: int
) -> pd.Series:
    lesions = _lesion_table(records)
    classes, dx = np.unique(lesions["dx"].to_numpy(), return_inverse=True)
    sizes = lesions["n"].to_numpy()
    order = np.random.default_rng(seed).permutation(len(lesions))
    assign = _deal(dx[order], sizes[order], target)[np.argsort(order)]
    assign = _refine(dx, sizes, assign, len(classes), target, max_moves)
    by_lesion = pd.Series(np.asarray(names)[assign], index=lesions.index)
    return records["lesion_id"].map(by_lesion).rename("split")


def check_split(frame: pd.DataFrame) -> SplitCheck:
    """Count lesions found in more than one split and the largest class-share gap (0..1)."""
    shared = int((frame.groupby("lesion_id")["split"].nunique() > 1).sum())
    overall = frame["dx"].value_counts(normalize=True)
    gap = 0.0
    for _, part in frame.groupby("split"):
        shares = part["dx"].value_counts(normalize=True).reindex(overall.index, fill_value=0.0)
        gap = max(gap, float((shares - overall).abs().max()))
    return SplitCheck(shared_lesions=shared, max_share_gap=gap)


def _lesion_table(records: pd.DataFrame) -> pd.DataFrame:
    """One row per lesion: its image count and its most frequent diagnosis."""
    counts = records.groupby(["lesion_id", "dx"]).size().rename("n").reset_index()
    counts = counts.sort_values(["lesion_id", "n", "dx"], ascending=[True, False, True])
    majority = counts.drop_duplicates("lesion_id").set_index("lesion_id")["dx"]
    size = records.groupby("lesion_id").size()
    return pd.DataFrame({"dx": majority, "n": size}).sort_index()


def _deal(dx: np.ndarray, sizes: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per class, largest lesion first, to the split relatively furthest below its target."""
    assign = np.zeros(len(dx), dtype=int)
    for c in np.unique(dx):
        members = np.flatnonzero(dx == c)
        members = members[np.argsort(-sizes[members], kind="stable")]
        want = target * sizes[members].sum()
        filled = np.zeros(len(target))
        for i in members:
            k = int(np.argmax((want - filled) / want))
            filled[k] += sizes[i]
            assign[i] = k
    return assign


def _objective(counts: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Largest class-share gap plus largest split-size gap; counts are (..., split, class)."""
    per_split = counts.sum(axis=-1, keepdims=True)
    total = per_split.sum(axis=-2, keepdims=True)
    overall = counts.sum(axis=-2, keepdims=True) / total
    shares = counts / np.maximum(per_split, 1)
    share_gap = np.abs(shares - overall).max(axis=(-2, -1))
    size_gap = np.abs(per_split[..., 0] / total[..., 0] - target).max(axis=-1)
    result: np.ndarray = share_gap + size_gap
    return result


def _refine(
    dx: np.ndarray, sizes: np.ndarray, assign: np.ndarray, n_classes: int,
    target: np.ndarray, max_moves: int,
) -> np.ndarray:  # fmt: skip
    """Greedy local search: apply the single best lesion move while it improves the objective."""
    assign = assign.copy()
    counts = np.zeros((len(target), n_classes))
    np.add.at(counts, (assign, dx), sizes)
    lesions, splits = np.arange(len(dx)), np.arange(len(target))
    for _ in range(max_moves):
        moved = np.broadcast_to(counts, (len(dx), len(target), *counts.shape)).copy()
        moved[lesions, :, assign, dx] -= sizes[:, None]
        moved[lesions[:, None], splits[None, :], splits[None, :], dx[:, None]] += sizes[:, None]
        score = _objective(moved, target)
        score[lesions, assign] = np.inf
        best = np.unravel_index(int(np.argmin(score)), score.shape)
        if score[best] >= _objective(counts, target) - 1e-9:
            break
        lesion, split = int(best[0]), int(best[1])
        counts[assign[lesion], dx[lesion]] -= sizes[lesion]
        counts[split, dx[lesion]] += sizes[lesion]
        assign[lesion] = split
    return assign
