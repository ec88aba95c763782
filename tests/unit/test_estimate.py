"""Label-free estimates against labels drawn where the truth is known: images from seven
Gaussian classes, scored by the Bayes posterior under the calibration priors (a perfectly
calibrated model), in windows with and without a shift of the class priors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dermaops.evaluation.calibration import apply_bias, fit_class_bias
from dermaops.evaluation.estimate import (
    CBPE,
    LABEL_SHIFT,
    Estimate,
    EstimateError,
    EstimateSettings,
    Figure,
    Figures,
    against_labels,
    em_priors,
    estimate,
    realized,
)
from dermaops.evaluation.estimate_bench import SCENARIOS, bench_estimate, noise_floor
from dermaops.evaluation.sources import Source
from dermaops.inference_log import PROBABILITY_FIELDS
from dermaops.labels import CLASSES
from dermaops.model.artifact import CALIBRATION, REFERENCE
from tests.formats import metrics

MEL = CLASSES.index("mel")
SOURCE = np.array([0.03, 0.05, 0.11, 0.01, 0.11, 0.67, 0.02])  # HAM10000's mix, roughly
MEANS = np.random.default_rng(42).normal(0, 1.6, (7, 4))
THRESHOLD = 0.15


def _window(
    priors: np.ndarray, n: int, seed: int, trained: np.ndarray = SOURCE
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images of classes drawn from ``priors``; the model's probabilities (calibrated
    under ``trained``) and the labels."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(7, n, p=priors / priors.sum())
    x = MEANS[labels] + rng.normal(0, 1, (n, 4))
    log_likelihood = -0.5 * ((x[:, None, :] - MEANS[None]) ** 2).sum(axis=2)
    weighted = np.exp(log_likelihood - log_likelihood.max(axis=1, keepdims=True)) * trained
    return weighted / weighted.sum(axis=1, keepdims=True), labels


def _flags(probs: np.ndarray) -> np.ndarray:
    return probs[:, MEL] >= THRESHOLD


def _truth(probs: np.ndarray, labels: np.ndarray) -> dict[str, float | None]:
    return realized(labels, probs.argmax(axis=1), _flags(probs))


FIGURES = ("balanced_accuracy", "f1_macro", "melanoma_sensitivity", "melanoma_specificity")


def test_without_shift_both_estimates_are_near_and_their_intervals_cover_the_labels() -> None:
    """Over 30 windows, each interval holds the value the labels realize in most of them (95 %
    intervals: at least 85 % here for balanced accuracy and melanoma sensitivity, the figures
    the alerts use, 80 % for the others), and balanced accuracy is off by under 4 points on
    average (a window of 1000 holds about 10 dermatofibromas: the realized value itself moves
    by about that much)."""
    covered, errors = dict.fromkeys(FIGURES, 0), []
    windows = 30
    for seed in range(windows):
        probs, labels = _window(SOURCE, 1000, seed=seed)
        found = estimate(
            probs, _flags(probs), Source(SOURCE), s=EstimateSettings(draws=100, seed=seed)
        )
        truth = _truth(probs, labels)
        assert found.reliable and found.corrected is not None
        assert found.plain.assumption == CBPE and found.corrected.assumption == LABEL_SHIFT
        for name in FIGURES:
            f, real = getattr(found.corrected, name), truth[name]
            covered[name] += f.lower <= real <= f.upper
        errors.append(abs(found.corrected.balanced_accuracy.value - truth["balanced_accuracy"]))
    assert min(covered["balanced_accuracy"], covered["melanoma_sensitivity"]) >= 0.85 * windows
    assert min(covered.values()) >= 0.8 * windows, covered
    assert np.mean(errors) < 0.04, errors


def test_a_tripled_melanoma_share_is_found_and_corrected_where_cbpe_is_biased() -> None:
    shifted = SOURCE.copy()
    shifted[MEL] *= 3
    shifted /= shifted.sum()
    probs, labels = _window(shifted, 3000, seed=2)
    plain_em = EstimateSettings(prior_strength=0)  # a large window: no pull to the calibration
    found = estimate(probs, _flags(probs), Source(SOURCE), s=plain_em)
    truth = _truth(probs, labels)
    assert found.corrected is not None
    assert found.corrected.priors["mel"] == pytest.approx(np.mean(labels == MEL), abs=0.03)
    assert found.plain.priors["mel"] < shifted[MEL] - 0.05  # the raw outputs under-count them
    for name in ("balanced_accuracy", "melanoma_sensitivity"):
        f = getattr(found.corrected, name)
        assert abs(f.value - truth[name]) < 0.03 and f.lower <= truth[name] <= f.upper, (name, f)
    # Recall per class does not move with the priors; the melanoma flags' sensitivity, read
    # from probabilities calibrated to other priors, does: plain CBPE is off there.
    ours = abs(found.corrected.melanoma_sensitivity.value - truth["melanoma_sensitivity"])
    plain = abs(found.plain.melanoma_sensitivity.value - truth["melanoma_sensitivity"])
    assert plain > 2 * ours, (ours, plain)


def test_a_model_trained_toward_equal_shares_is_estimated_after_its_class_bias() -> None:
    """A class-balanced sampler trains a model to answer as if the seven classes were equally
    common, which no temperature undoes. The class bias fitted on a validation window recovers
    the log-ratio of the shares, and with it the estimate finds the melanoma sensitivity the
    labels give; without it, it is far off."""
    equal = np.full(7, 1 / 7)
    val_probs, val_labels = _window(SOURCE, 4000, seed=11, trained=equal)
    bias = fit_class_bias(val_probs, val_labels)
    expected = np.log(SOURCE / equal)
    assert np.abs((bias - bias.mean()) - (expected - expected.mean())).max() < 0.35, bias
    # A class validation never saw keeps its odds against the average class (the mean bias):
    # the estimates must not call it impossible; the others are fitted as before.
    vasc = CLASSES.index("vasc")
    seen = val_labels != vasc
    kept = fit_class_bias(val_probs[seen], val_labels[seen])
    assert kept[vasc] == pytest.approx(kept[:vasc].mean())
    centred = (kept - kept[:vasc].mean())[:vasc], (bias - bias[:vasc].mean())[:vasc]
    assert np.abs(centred[0] - centred[1]).max() < 0.35, centred
    # Given the shares of a larger labelled set (the training split's), such a class is moved
    # to its share there instead: its mean probability on validation is that share.
    shared = fit_class_bias(val_probs[seen], val_labels[seen], shares=SOURCE)
    mean = apply_bias(val_probs[seen], shared).mean(axis=0)
    assert (
        mean[vasc] == pytest.approx(SOURCE[vasc], rel=1e-3)
        and mean[vasc] < 0.5 * (apply_bias(val_probs[seen], kept).mean(axis=0)[vasc])
    )
    assert np.abs((shared - kept)[:vasc] - (shared - kept)[:vasc].mean()).max() < 1e-6
    probs, labels = _window(SOURCE, 2000, seed=12, trained=equal)
    flags, truth = _flags(probs), realized(labels, probs.argmax(axis=1), _flags(probs))
    settings = EstimateSettings(draws=100)
    fitted = estimate(probs, flags, Source(SOURCE, bias), s=settings).corrected
    unfitted = estimate(probs, flags, Source(SOURCE), s=settings).corrected
    assert fitted is not None and unfitted is not None
    real = truth["melanoma_sensitivity"]
    error = abs(fitted.melanoma_sensitivity.value - real)
    assert error < 0.04, (fitted, real)
    assert fitted.melanoma_sensitivity.lower <= real <= fitted.melanoma_sensitivity.upper
    assert abs(unfitted.melanoma_sensitivity.value - real) > max(0.1, 3 * error), (unfitted, real)


def test_em_recovers_the_priors_of_a_large_window() -> None:
    target = np.array([0.1, 0.1, 0.1, 0.05, 0.3, 0.3, 0.05])
    probs, _ = _window(target, 20000, seed=3)
    priors, adjusted, iterations = em_priors(probs, SOURCE)
    assert np.abs(priors - target).max() < 0.015 and 1 < iterations < 2000
    assert np.allclose(adjusted.sum(axis=1), 1) and np.allclose(adjusted.mean(axis=0), priors)


def test_too_few_images_or_rows_that_are_not_probabilities_are_refused() -> None:
    probs, _ = _window(SOURCE, 50, seed=4)
    with pytest.raises(EstimateError, match="50 images; an estimate needs at least 100"):
        estimate(probs, _flags(probs), Source(SOURCE))
    logits = np.random.default_rng(0).normal(0, 3, (200, 7))
    with pytest.raises(EstimateError, match="not probabilities"):
        estimate(logits, _flags(logits), Source(SOURCE))
    with pytest.raises(EstimateError, match="N x 7"):
        estimate(np.full((200, 3), 1 / 3), np.zeros(200, bool))


def test_many_refused_images_make_the_estimate_unreliable_and_cbpe_alone_without_priors() -> None:
    probs, _ = _window(SOURCE, 300, seed=5)
    found = estimate(probs, _flags(probs), None, ood_share=0.35, s=EstimateSettings(draws=50))
    assert not found.reliable and "35% of the images were refused" in found.reasons[0]
    assert found.corrected is None and found.plain.assumption == CBPE


def test_the_bench_scores_shifted_windows_of_a_scored_test_split(tmp_path: Path) -> None:
    """``bench estimate`` on an evaluation and a model folder made where the truth is known."""
    probs, labels = _window(SOURCE, 4000, seed=9)
    evaluation, model = tmp_path / "evaluation", tmp_path / "model"
    evaluation.mkdir()
    model.mkdir()
    np.savez_compressed(evaluation / "test_predictions.npz", probs=probs, labels=labels)
    melanoma = metrics().melanoma.model_copy(update={"threshold": THRESHOLD})
    metrics(melanoma=melanoma).write(evaluation)
    (model / "model.json").write_text("{}")
    (model / CALIBRATION).write_text('{"temperature": 1.0, "melanoma_threshold": 0.15}')
    calibration_labels = np.random.default_rng(0).choice(7, 5000, p=SOURCE)
    pd.DataFrame({"split": "train", "dx": [CLASSES[i] for i in calibration_labels]}).to_csv(
        model / REFERENCE, index=False
    )
    result = bench_estimate(evaluation, model, windows=20, size=600, draws=40)
    shifted = result["scenarios"]["melanoma x3"]
    assert result["test_images"] == 4000 and set(result["scenarios"]) == set(SCENARIOS)
    assert shifted["mae_ours_melanoma_sensitivity"] < shifted["mae_cbpe_melanoma_sensitivity"]
    assert shifted["coverage_balanced_accuracy"] >= 0.8
    # the labels were drawn from these probabilities: the estimate errs by about the realized
    # sensitivity's own noise, its floor (more where the window's priors are estimated less
    # well), and plain CBPE under shift by more
    for name, scenario in result["scenarios"].items():
        floor, ours = scenario["floor_melanoma_sensitivity"], scenario[
            "mae_ours_melanoma_sensitivity"]  # fmt: skip
        assert floor > 0 and 0.6 * floor < ours < 2.5 * floor, (name, ours, floor)
    assert shifted["mae_cbpe_melanoma_sensitivity"] > 2 * shifted["floor_melanoma_sensitivity"]
    named = {c["check"]: c for c in result["checks"]}
    assert named["melanoma x3: melanoma_sensitivity error / CBPE's"]["passed"]
    assert {"value", "target", "passed"} <= set(named["no shift: balanced_accuracy error"])


def test_the_noise_floor_is_the_realized_sensitivitys_spread_around_the_estimate() -> None:
    """Two images: one sure melanoma, flagged; one even chance, not flagged. The estimate is
    1 / 1.5; half the draws realize 1 (the second is no melanoma), half 1 / 2: the floor is
    (1/3 + 1/6) / 2 = 0.25. Everything flagged, or nothing: no spread at all."""
    probs = np.zeros((2, 7))
    probs[0, MEL], probs[1, MEL], probs[1, 0] = 1.0, 0.5, 0.5
    priors = {c: 1 / 7 for c in CLASSES}

    def found(sensitivity: float) -> Figures:
        unknown = Figure(value=None, lower=None, upper=None)
        figure = Figure(value=sensitivity, lower=None, upper=None)
        return Figures(assumption="test", priors=priors, balanced_accuracy=unknown,
                       f1_macro=unknown, melanoma_specificity=unknown,
                       melanoma_sensitivity=figure)  # fmt: skip

    source, rng = Source(np.full(7, 1 / 7)), np.random.default_rng(0)
    floor = noise_floor(probs, np.array([True, False]), source, found(1 / 1.5), rng)
    assert floor == pytest.approx(0.25, abs=0.03)
    assert noise_floor(probs, np.array([True, True]), source, found(1.0), rng) == 0
    assert noise_floor(probs, np.array([False, False]), source, found(0.0), rng) == 0


def _estimated(value: float, lower: float, upper: float) -> Estimate:
    figure = Figure(value=value, lower=lower, upper=upper)
    unknown = Figure(value=None, lower=None, upper=None)
    figures = Figures(assumption="test", priors=dict.fromkeys(CLASSES, 1 / 7),
                      balanced_accuracy=unknown, f1_macro=unknown, melanoma_sensitivity=figure,
                      melanoma_specificity=unknown)  # fmt: skip
    return Estimate(images=500, reliable=True, reasons=[], corrected=figures, plain=figures)


def test_estimates_meet_the_labels_or_say_they_no_longer_hold() -> None:
    live = {"melanoma_sensitivity": 0.8, "f1_macro": 0.5,
            "ci95": {"melanoma_sensitivity": [0.6, 0.9], "f1_macro": [0.4, 0.6]}}  # fmt: skip
    (near,) = against_labels(_estimated(0.7, 0.62, 0.78), live)
    assert near.figure == "melanoma_sensitivity" and near.error == pytest.approx(-0.1)
    assert not near.disagrees, "intervals that meet agree"
    (far,) = against_labels(_estimated(0.4, 0.3, 0.55), live)
    assert far.disagrees and far.realized.lower == 0.6
    assert against_labels(_estimated(0.7, 0.6, 0.8), {"melanoma_sensitivity": float("nan"),
                          "ci95": {"melanoma_sensitivity": [None, None]}}) == []  # fmt: skip


def test_the_monitor_exports_the_estimate_against_the_labels(tmp_path: Path) -> None:
    from dermaops.monitoring.service import Monitor, MonitorSettings

    monitor = Monitor(MonitorSettings(reference="r.csv", inference_log=str(tmp_path / "log"),
                                      out=str(tmp_path / "out"), token="t"))  # fmt: skip
    monitor.estimates.by_version = {"3": _estimated(0.4, 0.3, 0.55), "4": "too few answers"}
    live = {"melanoma_sensitivity": 0.8, "ci95": {"melanoma_sensitivity": [0.6, 0.9]}}
    compared = monitor.estimates.against_labels({"3": live, "4": live, "5": live})
    assert list(compared) == ["3"] and compared["3"][0]["disagrees"] is True
    sample = monitor.registry.get_sample_value
    labels = {"version": "3", "figure": "melanoma_sensitivity"}
    assert sample("dermaops_estimate_disagrees", labels) == 1.0
    assert sample("dermaops_estimate_error", labels) == pytest.approx(-0.4)
    assert monitor.estimates.answer()["3"]["against_labels"][0]["realized"]["value"] == 0.8
    monitor.estimates.against_labels({})  # the labels gone: nothing left to compare
    assert sample("dermaops_estimate_disagrees", labels) is None


def _model_folder(folder: Path, calibrated: bool = True) -> Path:
    """A model folder as evaluation leaves one: its reference's labels, and its calibration."""
    folder.mkdir(parents=True)
    (folder / "model.json").write_text("{}")
    if calibrated:
        (folder / CALIBRATION).write_text('{"temperature": 1.0, "melanoma_threshold": 0.15}')
    pd.DataFrame({"split": ["train", "val", "test"], "dx": ["mel", "nv", "bcc"]}).to_csv(
        folder / REFERENCE, index=False
    )
    return folder


def test_each_versions_source_is_fetched_once_and_a_failed_fetch_waits_before_a_retry(
    tmp_path: Path,
) -> None:
    """Versions the reference is not of come from their model folders (the registry's, here a
    function), each read once; one that could not be fetched is retried only after
    ``REFETCH_S``; an uncalibrated one stays refused; the reference's own is read in place."""
    from dermaops.errors import ConfigError
    from dermaops.evaluation.sources import (
        REFETCH_S,
        EstimateSourceError,
        Sources,
        UncalibratedModelError,
    )

    folders = {"2": _model_folder(tmp_path / "v2"), "3": _model_folder(tmp_path / "v3", False)}
    fetched: list[str] = []
    now = [0.0]

    def fetch(version: str) -> Path:
        fetched.append(version)
        if version == "8":
            raise RuntimeError("the registry's own client failed")
        if version not in folders:
            raise ConfigError(f"no version {version}")
        return folders[version]

    reference = _model_folder(tmp_path / "reference")
    sources = Sources("dermaops", lambda: (reference, "1"), fetch, clock=lambda: now[0])
    own = sources("1")
    assert own.priors[CLASSES.index("mel")] == pytest.approx(0.5) and fetched == []
    assert sources("2").priors[CLASSES.index("nv")] == pytest.approx(0.5)
    assert sources.get("2") is not None and fetched == ["2"]  # read once
    raised = []
    for _ in range(2):
        with pytest.raises(UncalibratedModelError, match="not calibrated") as e:
            sources("3")
        raised.append(e.value)
    assert fetched == ["2", "3"] and raised[0] is not raised[1], "a fresh error each time"
    assert sources.get("9") is None and sources.get("9") is None and fetched == ["2", "3", "9"]
    now[0] = REFETCH_S + 1
    with pytest.raises(EstimateSourceError, match="could not be fetched: no version 9"):
        sources("9")
    assert fetched == ["2", "3", "9", "9"]
    with pytest.raises(EstimateSourceError, match="not one of a registered model's"):
        Sources("", fetch=fetch)("2")
    assert Sources("dermaops", fetch=fetch).get("local") is None
    assert sources.get("8") is None and "own client failed" in sources.unfetchable["8"][1]


def test_every_version_is_estimated_on_its_own_calibration_or_says_why_not(
    tmp_path: Path,
) -> None:
    """The monitor's (and `monitor estimate`'s) pass over the log: the reference's version and
    a registered one are corrected for the priors, a registered model never calibrated gets
    why, and a version no registry holds (a local one) plain CBPE."""
    from dermaops.evaluation.sources import Sources
    from dermaops.inference_log import PROBABILITY_FIELDS
    from dermaops.monitoring.estimates import estimate_each

    folders = {"2": _model_folder(tmp_path / "v2"), "3": _model_folder(tmp_path / "v3", False)}
    reference = _model_folder(tmp_path / "reference")
    sources = Sources("dermaops", lambda: (reference, "1"), folders.__getitem__)
    probs, _ = _window(SOURCE, 150, seed=4)
    records = [{"model_version": version, "melanoma": bool(row[MEL] >= THRESHOLD),
                **dict(zip(PROBABILITY_FIELDS, row, strict=True))}
               for version in ("1", "2", "3", "local") for row in probs.tolist()]  # fmt: skip
    found = estimate_each(records, sources, EstimateSettings(draws=20))
    assert set(found) == {"1", "2", "3", "local"}
    for version in ("1", "2"):
        corrected = found[version]
        assert isinstance(corrected, Estimate) and corrected.corrected is not None
    assert isinstance(found["3"], str) and "not calibrated" in found["3"]
    local = found["local"]
    assert (
        isinstance(local, Estimate) and local.corrected is None and local.plain.assumption == CBPE
    )


def _stats(labels: np.ndarray, seed: int, shift: float = 0.0) -> np.ndarray:
    """Each image's statistics: its class's means plus noise (brightness moved by ``shift``)."""
    rng = np.random.default_rng(seed)
    means = np.random.default_rng(7).uniform(0.2, 0.8, (7, 6))
    found = means[labels] + rng.normal(0, 0.05, (len(labels), 6))
    found[:, 0] += shift
    return found


def test_images_that_changed_beyond_their_class_mix_make_the_estimate_unreliable() -> None:
    """Tripled melanomas move the window's image statistics only as the class mix explains
    (the reference re-weighted to the estimated priors matches): reliable. A darker camera
    moves them beyond it: unreliable, the statistic named."""
    from dermaops.evaluation.sources import INPUTS

    assert INPUTS[0] == "brightness"
    reference = np.random.default_rng(1).choice(7, 3000, p=SOURCE)
    source = Source(SOURCE, classes=reference, inputs=_stats(reference, seed=2))
    shifted = SOURCE * np.where(np.arange(7) == MEL, 3.0, 1.0)
    probs, labels = _window(shifted, 600, seed=5)
    settings = EstimateSettings(draws=20)
    same = estimate(probs, _flags(probs), source, s=settings, inputs=_stats(labels, seed=3))
    assert same.reliable, same.reasons
    darker = estimate(probs, _flags(probs), source, s=settings,
                      inputs=_stats(labels, seed=3, shift=-0.05))  # fmt: skip
    assert not darker.reliable and "brightness" in darker.reasons[0]
    assert "beyond their class mix" in darker.reasons[0]
    unweighted = Source(SOURCE, classes=reference, inputs=_stats(reference, seed=2))
    assert estimate(probs, _flags(probs), unweighted, s=settings).reliable  # no inputs: no test


def test_the_reference_carries_the_validation_probabilities_the_intervals_refit_on(
    tmp_path: Path,
) -> None:
    """Evaluation's outputs (``write_outputs``) joined into the model's reference
    (``join_reference``) are what ``calibration_source`` reads back: the validation rows'
    probabilities and classes, not the test rows'; each draw's shift of the class bias is
    fitted once per source; a reference from before the probabilities were kept has none, and
    its estimate is made as before."""
    from dermaops.evaluation.sources import calibration_source
    from dermaops.model.artifact import write_calibration
    from dermaops.model.reference import join_reference, write_outputs

    probs, labels = _window(SOURCE, 300, seed=3, trained=np.full(7, 1 / 7))
    ids = [f"ISIC_{i:07d}" for i in range(300)]
    stats = pd.DataFrame({"image_id": [*ids, "ISIC_train"], "split": ["val"] * 200
                          + ["test"] * 100 + ["train"], "dx": [CLASSES[i] for i in labels]
                          + ["nv"]})  # fmt: skip
    stats.to_csv(tmp_path / "stats.csv", index=False)
    write_outputs(tmp_path / "outputs.csv", ids, probs, np.zeros((300, 3)))
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.json").write_text("{}")
    bias = fit_class_bias(probs[:200], labels[:200])
    write_calibration(
        folder, 1.0, THRESHOLD, {c: float(b) for c, b in zip(CLASSES, bias, strict=True)}
    )
    join_reference(tmp_path / "stats.csv", tmp_path / "outputs.csv", folder / REFERENCE)
    source = calibration_source(folder)
    assert source.validation is not None and source.bias is not None
    np.testing.assert_allclose(source.validation.probs, probs[:200], atol=1e-5)
    assert (source.validation.classes == labels[:200]).all()
    shifts = source.bias_shifts(40)
    assert shifts is not None and shifts.shape == (40, 7) and source.bias_shifts(40) is shifts
    spread = shifts.std(axis=0)
    assert (np.abs(np.median(shifts, axis=0)) < 0.5 * spread).all() and spread[MEL] > 0.15, spread
    window, _ = _window(SOURCE, 2000, seed=4, trained=np.full(7, 1 / 7))
    settings = EstimateSettings(draws=40)
    refit = estimate(window, _flags(window), source, s=settings).corrected
    pd.read_csv(folder / REFERENCE).drop(columns=list(PROBABILITY_FIELDS)).to_csv(
        folder / REFERENCE, index=False
    )
    older = calibration_source(folder)
    assert older.validation is None and older.bias_shifts(40) is None
    fixed = estimate(window, _flags(window), older, s=settings).corrected
    assert refit is not None and fixed is not None
    assert refit.melanoma_sensitivity.value == fixed.melanoma_sensitivity.value
    width = [f.melanoma_sensitivity.upper - f.melanoma_sensitivity.lower for f in (refit, fixed)]
    assert width[0] > width[1], width


def test_the_calibrations_own_uncertainty_widens_intervals_to_what_the_errors_are() -> None:
    """A class bias fitted on 200 validation images (about 20 melanomas, two dermatofibromas)
    is itself uncertain. Over 20 validation sets, two windows each (the coverage an interval
    claims is over both): with the rare classes at the others' mean bias and the bias taken as
    exact, the estimates' errors lean one way and spread far wider than their intervals say
    (errors over the interval's sigma: mean and deviation well away from 0 and 1); with the rare
    classes at their training shares and the bias refitted on resampled validation rows in
    every draw, near 0 and 1."""
    from dermaops.evaluation.sources import Validation

    equal = np.full(7, 1 / 7)
    scores: tuple[list[float], list[float]] = ([], [])
    for v in range(20):
        val_probs, val_labels = _window(SOURCE, 200, seed=1000 + v, trained=equal)
        validation = Validation(val_probs, val_labels)
        sources = (
            Source(SOURCE, fit_class_bias(val_probs, val_labels)),
            Source(
                SOURCE, fit_class_bias(val_probs, val_labels, shares=SOURCE), validation=validation
            ),
        )
        for w in range(2):
            probs, labels = _window(SOURCE, 1000, seed=2000 + 2 * v + w, trained=equal)
            real = _truth(probs, labels)["melanoma_sensitivity"]
            for k, source in enumerate(sources):
                found = estimate(probs, _flags(probs), source, s=EstimateSettings(draws=60, seed=w))
                assert found.corrected is not None
                f = found.corrected.melanoma_sensitivity
                scores[k].append((f.value - real) / ((f.upper - f.lower) / 3.92))
    before, after = np.array(scores[0]), np.array(scores[1])
    assert before.mean() > 1 and before.std() > 1.2, (before.mean(), before.std())
    assert abs(after.mean()) < 0.3 and after.std() < 1.25, (after.mean(), after.std())
    assert (abs(after) <= 1.96).mean() >= 0.85
