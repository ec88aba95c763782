"""The out-of-distribution guard's scores, threshold and file, and the images it is measured on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dermaops.data.ood import LESION_KINDS, OOD_KINDS, OodKindError, lesion_variants, ood_images
from dermaops.model.guard import GUARD, OodGuard, OodGuardError

WIDTH = 16


def _clusters(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two classes of non-negative 'pooled ReLU' embeddings, and logits that follow them."""
    labels = np.arange(n) % 2
    centres = np.stack(
        [np.r_[np.full(8, 4.0), np.full(8, 1.0)], np.r_[np.full(8, 1.0), np.full(8, 4.0)]]
    )
    embedding = np.abs(centres[labels] + rng.normal(0, 0.5, (n, WIDTH)))
    logits = np.stack([embedding[:, :8].sum(1), embedding[:, 8:].sum(1)], axis=1)
    return logits, embedding, labels


def test_mahalanobis_keeps_the_share_of_validation_it_was_told_and_refuses_far_images() -> None:
    rng = np.random.default_rng(0)
    train, val, test = (_clusters(rng, n) for n in (400, 400, 400))
    guard = OodGuard.fit("mahalanobis", train, val[:2], keep=0.95)
    assert np.mean(guard.admits(guard.scores(*val[:2]))) == pytest.approx(0.95, abs=0.01)
    assert np.mean(guard.admits(guard.scores(*test[:2]))) > 0.9  # held out: about 95 % too
    far = np.abs(rng.normal(0, 0.5, (50, WIDTH))) + np.r_[np.full(8, 4.0), np.full(8, 4.0)]
    between = np.full((50, WIDTH), 2.5)  # no class looks like this, though the mean does
    for strange in (far, between, np.zeros((50, WIDTH))):
        assert not guard.admits(guard.scores(np.zeros((50, 2)), strange)).any()


def test_energy_needs_no_fit_and_is_higher_for_flat_logits() -> None:
    rng = np.random.default_rng(1)
    train, val = _clusters(rng, 50), _clusters(rng, 200)
    guard = OodGuard.fit("energy", train, val[:2])
    confident, flat = np.array([[20.0, 0.0]]), np.array([[0.1, 0.0]])
    assert guard.scores(flat, np.zeros((1, 0)))[0] > guard.scores(confident, np.zeros((1, 0)))[0]
    assert guard.means.size == 0 and guard.threshold == pytest.approx(
        np.quantile(guard.scores(*val[:2]), 0.95)
    )


def test_the_guard_file_round_trips_and_bad_ones_are_named(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    train, val = _clusters(rng, 100), _clusters(rng, 100)
    guard = OodGuard.fit("mahalanobis", train, val[:2])
    guard.save(tmp_path / GUARD)
    loaded = OodGuard.load(tmp_path / GUARD)
    assert (loaded.method, loaded.keep, loaded.power) == (guard.method, guard.keep, guard.power)
    np.testing.assert_allclose(loaded.scores(*val[:2]), guard.scores(*val[:2]), rtol=1e-4)
    with pytest.raises(OodGuardError, match="width 16"):
        loaded.scores(val[0], val[1][:, :8])
    (tmp_path / "bad.npz").write_bytes(b"not an npz")
    with pytest.raises(OodGuardError, match="cannot read"):
        OodGuard.load(tmp_path / "bad.npz")
    with pytest.raises(OodGuardError, match="unknown guard 'knn'"):
        OodGuard.fit("knn", train, val[:2])
    with pytest.raises(OodGuardError, match="at least 2 validation"):
        OodGuard.fit("energy", train, (val[0][:1], val[1][:1]))


def test_generated_images_are_repeatable_and_unknown_kinds_named() -> None:
    for kind in OOD_KINDS:
        first, again = ood_images(kind, 2, seed=3), ood_images(kind, 2, seed=3)
        assert [i.size for i in first] == [(600, 450)] * 2 and first[0].mode == "RGB"
        assert all(
            np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(first, again, strict=True)
        )
        assert not np.array_equal(np.asarray(first[0]), np.asarray(first[1]))
    lesion = np.asarray(ood_images("plain_skin", 1)[0].resize((300, 225)))
    for kind in LESION_KINDS:
        (changed,) = lesion_variants(kind, [lesion])
        assert changed.size == (300, 225)
        assert not np.array_equal(np.asarray(changed), lesion)
    with pytest.raises(OodKindError, match="flat_colour"):
        ood_images("cat", 1)
    with pytest.raises(OodKindError, match="rotated_lesion"):
        lesion_variants("flat_colour", [lesion])
