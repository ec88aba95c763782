"""The rollout's judge (paired and unpaired checks, their statistics) and its state machine."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from scipy.stats import binomtest

from dermaops.rollout.judge import (
    ErrorCounts,
    JudgeSettings,
    error_check,
    estimate_check,
    flips,
    judge,
    label_check,
    latency_check,
    paired_checks,
    pairs,
    split_checks,
)
from dermaops.rollout.plan import (
    RolloutError,
    RolloutSettings,
    RolloutStore,
    advance,
    by_hand,
    start,
)
from dermaops.rollout.stats import (
    first_rejection,
    js_distance,
    looks,
    mann_whitney_greater_p,
    mcnemar_lost_p,
    mcnemar_p,
    two_proportion_p,
)

SMALL = JudgeSettings(min_pairs=50, min_requests=50)


@pytest.mark.parametrize(("lost", "gained"), [(10, 0), (7, 1), (30, 12), (400, 350), (3, 3)])
def test_mcnemar_is_the_exact_binomial_test_of_the_discordant_pairs(lost: int, gained: int) -> None:
    expected = binomtest(min(lost, gained), lost + gained, 0.5).pvalue
    assert mcnemar_p(lost, gained) == pytest.approx(expected, rel=1e-9)
    assert mcnemar_p(gained, lost) == pytest.approx(expected, rel=1e-9)
    # The judge rolls back on flags lost only: the one-sided tail, all its level on that side.
    worse = (
        binomtest(lost, lost + gained, 0.5, alternative="greater").pvalue if lost + gained else 1
    )
    assert mcnemar_lost_p(lost, gained) == pytest.approx(worse, rel=1e-9)


def test_the_other_statistics_at_known_values() -> None:
    assert mcnemar_p(0, 0) == 1.0 and mcnemar_p(10, 0) == pytest.approx(2 * 0.5**10)
    assert two_proportion_p(50, 100, 50, 100) == pytest.approx(0.5)
    assert two_proportion_p(60, 100, 40, 100) == pytest.approx(0.0023, abs=1e-4)  # z = 2.83
    assert js_distance([0.5, 0.5], [0.5, 0.5]) == 0.0
    assert js_distance([1.0, 0.0], [0.0, 1.0]) == pytest.approx(1.0)


def _record(rid: str, version: str, mel: float, shadow: bool = False, **extra: Any) -> dict:
    top = "mel" if mel >= 0.5 else "nv"
    return {"request_id": rid, "model_version": version, "prediction": top, "p_mel": mel,
            "melanoma": mel >= 0.3, "in_distribution": True, "shadow": shadow, **extra}  # fmt: skip


def _shadowed(n: int, candidate_mel: Any) -> list[dict]:
    """``n`` images answered live by version 1 and in shadow by version 2."""
    records = []
    for i in range(n):
        mel = 0.8 if i % 4 == 0 else 0.1  # a quarter of the images look like melanoma
        records += [_record(f"r{i}", "1", mel), _record(f"r{i}", "2", candidate_mel(i, mel), True)]
    return records


def test_an_equal_challenger_passes_every_paired_check() -> None:
    found = pairs(_shadowed(100, lambda i, mel: mel), "1", "2")
    assert len(found) == 100
    verdict = judge(paired_checks(found, SMALL), SMALL)
    assert verdict.verdict == "pass" and verdict.score == 1.0
    flips = next(c for c in verdict.checks if c.name == "melanoma_flips")
    assert flips.value == 0 and flips.detail.startswith("0 flags lost, 0 gained")


def test_a_challenger_that_misses_melanomas_fails_the_critical_paired_check() -> None:
    # It loses the flag on 15 of the 25 melanoma-looking images and gains none.
    found = pairs(_shadowed(100, lambda i, mel: 0.2 if i % 4 == 0 and i < 60 else mel), "1", "2")
    verdict = judge(paired_checks(found, SMALL), SMALL)
    assert verdict.verdict == "fail" and verdict.reason == "critical check failed: melanoma_flips"
    flips = next(c for c in verdict.checks if c.name == "melanoma_flips")
    assert flips.value == 15 and flips.critical
    # 12 of them among the first 50 pairs: the first look, at half the level.
    assert "McNemar p = 0.000122 < 0.025 on the first 50" in flips.detail


def test_too_few_pairs_wait_and_unpairable_records_are_left_out() -> None:
    records = _shadowed(20, lambda i, mel: mel)
    records += [_record("", "1", 0.1), _record("lonely", "1", 0.1), _record("r0", "2", 0.1, True)]
    found = pairs(records, "1", "2")
    assert len(found) == 19  # r0 has two shadow answers: which one is the pair is unknown
    verdict = judge(paired_checks(found, SMALL), SMALL)
    assert verdict.verdict == "wait" and "melanoma_flips" in verdict.reason
    assert {c.verdict for c in verdict.checks} == {"no_data"}


def test_a_canary_compares_flag_rates_and_class_mix_of_each_versions_own_traffic() -> None:
    stable = [_record(f"s{i}", "1", 0.8 if i % 4 == 0 else 0.1) for i in range(200)]
    same = [_record(f"c{i}", "2", 0.8 if i % 4 == 0 else 0.1) for i in range(200)]
    shy = [_record(f"c{i}", "2", 0.8 if i % 20 == 0 else 0.1) for i in range(200)]
    assert judge(split_checks(stable + same, "1", "2", SMALL), SMALL).verdict == "pass"
    failed = judge(split_checks(stable + shy, "1", "2", SMALL), SMALL)
    assert failed.verdict == "fail"
    drop = next(c for c in failed.checks if c.name == "melanoma_flag_rate_drop")
    assert drop.value == pytest.approx(0.8) and "flag rate 0.050 vs stable 0.250" in drop.detail


def test_a_canary_is_compared_with_the_stable_answers_of_the_same_hours() -> None:
    """A 10 % canary of an equal challenger while the case mix changes: melanoma-looking
    images are half of the first 200 requests (a screening clinic's morning), 5 % after. The
    stable's first 50 answers all fall in the morning, the challenger's spread over 500
    requests; compared with the stable's answers of the same span, it is equal."""
    rng = random.Random(7)
    records = [
        _record(f"r{i}", "2" if i % 10 == 0 else "1",
                0.8 if rng.random() < (0.5 if i < 200 else 0.05) else 0.1)
        for i in range(1000)
    ]  # fmt: skip
    drop = next(
        c for c in split_checks(records, "1", "2", SMALL) if c.name == "melanoma_flag_rate_drop"
    )
    assert drop.verdict == "pass", drop.detail
    first = [[r for r in records if r["model_version"] == v][:50] for v in ("1", "2")]
    hits = [sum(r["melanoma"] for r in rows) for rows in first]
    assert two_proportion_p(hits[0], 50, hits[1], 50) < SMALL.alpha / 2, (
        "each version's first 50 would have failed the challenger at the first look"
    )


def test_errors_fail_at_any_volume_and_few_requests_without_errors_are_no_data() -> None:
    failed = error_check(ErrorCounts(3, 10), SMALL, 50)
    assert (
        failed.verdict == "fail" and failed.detail == "3 of 10 requests failed" and failed.critical
    )
    assert error_check(ErrorCounts(0, 10), SMALL, 50).verdict == "no_data"
    assert error_check(ErrorCounts(0, 80), SMALL, 50).verdict == "pass"


def test_a_low_score_of_non_critical_checks_fails_the_phase() -> None:
    # The same flags, but another top class and P(mel) a little lower on every image.
    records = []
    for live in _shadowed(100, lambda i, mel: mel)[::2]:
        shadow = _record(live["request_id"], "2", live["p_mel"] - 0.09, True, prediction="bkl")
        records += [live, shadow]
    found = pairs(records, "1", "2")
    verdict = judge(paired_checks(found, SMALL), SMALL)
    assert verdict.verdict == "fail" and verdict.score == pytest.approx(1 / 3)
    assert "top1_agreement" in verdict.reason and "melanoma_probability_change" in verdict.reason


SETTINGS = RolloutSettings(enabled=True, min_stage_s=60, max_stage_s=600, judge=SMALL)


def _passing() -> Any:
    return judge(paired_checks(pairs(_shadowed(100, lambda i, mel: mel), "1", "2"), SMALL), SMALL)


def test_a_rollout_goes_shadow_canary_steps_full_each_after_its_least_duration() -> None:
    r = start("dermaops", "1", "2", SETTINGS, now=0)
    assert [s.label for s in r.stages] == ["shadow", "canary 10%", "canary 50%", "full"]
    r, action = advance(r, _passing(), now=30, s=SETTINGS)
    assert action == "wait" and r.current.name == "shadow" and r.last is not None
    for now, label in ((70, "canary 10%"), (140, "canary 50%")):
        r, action = advance(r, _passing(), now=now, s=SETTINGS)
        assert action == "next" and r.current.label == label and r.stage_started == now
    r, action = advance(r, _passing(), now=210, s=SETTINGS)
    assert action == "promote" and r.status == "promoted" and r.current.weight == 100
    assert advance(r, _passing(), now=999, s=SETTINGS)[1] == "wait"  # finished: nothing moves
    assert [e.action for e in r.events] == ["start", "next", "next", "promote"]


def test_a_critical_failure_rolls_back_at_once_and_silence_is_held_never_promoted() -> None:
    failing = judge(
        paired_checks(pairs(_shadowed(100, lambda i, mel: 0.1), "1", "2"), SMALL), SMALL
    )
    r, action = advance(start("m", "1", "2", SETTINGS, 0), failing, now=1, s=SETTINGS)
    assert action == "roll_back" and r.status == "rolled_back" and r.current.name == "shadow"
    silent = judge(paired_checks([], SMALL), SMALL)
    r = start("m", "1", "2", SETTINGS, 0)
    r, action = advance(r, silent, now=599, s=SETTINGS)
    assert action == "wait" and r.status == "running"
    r, action = advance(r, silent, now=601, s=SETTINGS)
    assert (
        action == "hold" and r.status == "held" and "no verdict after 601 s" in r.events[-1].reason
    )


def test_by_hand_promote_and_abort_are_recorded_and_refused_once_finished() -> None:
    promoted = by_hand(start("m", "1", "2", SETTINGS, 0), "promote", 5, "alice")
    assert promoted.status == "promoted" and promoted.events[-1].by == "alice"
    aborted = by_hand(start("m", "1", "2", SETTINGS, 0), "abort", 5, "bob")
    assert aborted.status == "rolled_back" and aborted.events[-1].reason == "aborted by hand"
    with pytest.raises(RolloutError, match="is promoted already"):
        by_hand(promoted, "abort", 6, "bob")


def test_the_store_survives_a_reload_and_keeps_the_finished_ones(tmp_path: Path) -> None:
    store = RolloutStore(tmp_path)
    assert store.load() is None
    r, _ = advance(start("m", "1", "2", SETTINGS, 0), _passing(), now=70, s=SETTINGS)
    store.save(r)
    assert RolloutStore(tmp_path).load() == r
    store.save(by_hand(r, "abort", 80, "carol"))
    assert (tmp_path / "rollouts.jsonl").read_text().count("\n") == 1
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    (tmp_path / "rollout.json").write_text("{")
    with pytest.raises(RolloutError, match="not a rollout"):
        store.load()


def test_settings_read_lists_and_the_judge_from_the_environment() -> None:
    from dermaops.errors import ConfigError
    from dermaops.settings import load_settings

    env = {"DERMAOPS_ROLLOUT_STEPS": "[5, 25, 50]", "DERMAOPS_ROLLOUT_ENABLED": "true",
           "DERMAOPS_ROLLOUT_JUDGE": '{"min_pairs": 500}'}  # fmt: skip
    s = load_settings(RolloutSettings, env_prefix="DERMAOPS_ROLLOUT_", environ=env)
    assert s.enabled and s.steps == [5, 25, 50] and s.judge.min_pairs == 500
    with pytest.raises(ConfigError, match="not JSON"):
        load_settings(RolloutSettings, env_prefix="DERMAOPS_ROLLOUT_",
                      environ={"DERMAOPS_ROLLOUT_STEPS": "10,50"})  # fmt: skip


def test_settings_refuse_steps_that_do_not_rise() -> None:
    with pytest.raises(ValueError, match="rising percents"):
        RolloutSettings(steps=[50, 10])
    with pytest.raises(ValueError, match="rising percents"):
        RolloutSettings(steps=[0, 100])


def test_the_monitor_exports_where_the_rollout_stands() -> None:
    from prometheus_client import CollectorRegistry

    from dermaops.monitoring.metrics import MonitorMetrics
    from dermaops.monitoring.rollouts import export

    registry = CollectorRegistry()
    metrics = MonitorMetrics.create(registry)
    r, _ = advance(start("m", "1", "2", SETTINGS, 0), _passing(), now=70, s=SETTINGS)
    export(r, metrics)

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("dermaops_rollout_phase", phase="canary", status="running") == 1
    assert value("dermaops_rollout_phase", phase="shadow", status="running") == 0
    assert value("dermaops_rollout_canary_weight") == 10
    assert value("dermaops_rollout_check", check="melanoma_flips", verdict="pass") == 1
    assert value("dermaops_rollout_check", check="melanoma_flips", verdict="fail") == 0
    assert value("dermaops_rollout_check_value", check="top1_agreement") == 1.0
    assert value("dermaops_rollout_check_samples", check="melanoma_flips") == 100
    export(None, metrics)
    assert value("dermaops_rollout_phase", phase="canary", status="running") == 0
    assert value("dermaops_rollout_check", check="melanoma_flips", verdict="pass") is None
    assert value("dermaops_rollout_check_samples", check="melanoma_flips") is None


def test_without_a_guard_the_ood_check_is_left_out_not_waited_for() -> None:
    records = []
    for i in range(60):
        records += [_record(f"r{i}", "1", 0.1, in_distribution=None),
                    _record(f"r{i}", "2", 0.1, True, in_distribution=None)]  # fmt: skip
    verdict = judge(paired_checks(pairs(records, "1", "2"), SMALL), SMALL)
    assert verdict.verdict == "pass" and "ood_verdict_changes" not in {
        c.name for c in verdict.checks
    }


def test_requests_of_several_images_pair_image_by_image() -> None:
    records = [_record("batch", "1", 0.8), _record("batch", "1", 0.1),
               _record("batch", "2", 0.8, True), _record("batch", "2", 0.2, True),
               _record("odd", "1", 0.1), _record("odd", "2", 0.1, True),
               _record("odd", "2", 0.1, True)]  # fmt: skip
    found = pairs(records, "1", "2")
    assert [(p.stable["p_mel"], p.candidate["p_mel"]) for p in found] == [(0.8, 0.8), (0.1, 0.2)]


def test_one_failed_answer_is_not_yet_a_verdict_but_a_few_are() -> None:
    assert error_check(ErrorCounts(1, 10), SMALL, 50).verdict == "no_data"
    assert error_check(ErrorCounts(3, 100), SMALL, 50).verdict == "fail"  # 3 % > 1 %
    assert error_check(ErrorCounts(3, 1000), SMALL, 50).verdict == "pass"


def test_record_times_are_read_as_times_whatever_their_spelling() -> None:
    from dermaops.registry.rollout import _seconds

    assert _seconds("2026-12-06T02:00:00Z") == _seconds("2026-12-06T03:00:00+01:00")
    assert _seconds("2026-12-06T02:00:00") == _seconds("2026-12-06T02:00:00.000+00:00")
    assert _seconds("yesterday") == float("-inf") and _seconds(None) == float("-inf")


def test_looks_double_in_size_and_halve_their_level_so_they_spend_alpha_once() -> None:
    assert looks(49, 50, 0.05) == []
    assert looks(450, 50, 0.05) == [(50, 0.025), (100, 0.0125), (200, 0.00625), (400, 0.003125)]
    assert sum(level for _, level in looks(10**9, 1, 0.05)) < 0.05


def test_a_look_judges_the_first_answers_so_repeated_passes_repeat_it() -> None:
    seen: list[int] = []
    assert first_rejection(lambda n: seen.append(n) or 0.5, 130, 50, 0.05) is None
    assert seen == [50, 100]
    assert first_rejection(lambda n: 0.02 if n == 100 else 0.5, 130, 50, 0.05) is None
    assert first_rejection(lambda n: 0.01 if n == 100 else 0.5, 130, 50, 0.05) == (
        100,
        0.01,
        0.0125,
    )


def test_pairs_keep_the_order_they_were_complete_in_so_a_look_sees_the_same_pairs() -> None:
    records = _shadowed(6, lambda i, mel: mel)
    late = records.pop(1)  # the first request's shadow answer arrives after every other line
    first = [p.stable["request_id"] for p in pairs([*records, late], "1", "2")]
    assert first == ["r1", "r2", "r3", "r4", "r5", "r0"]
    more = [*records, late, *_shadowed(8, lambda i, mel: mel)[12:]]
    assert [p.stable["request_id"] for p in pairs(more, "1", "2")][:6] == first


def _equal_shadow(rng: random.Random, n: int) -> list[dict]:
    """An equal challenger: a tenth of the images are flagged by one version only, by either
    alike."""
    records = []
    for i in range(n):
        mel = other = 0.8 if rng.random() < 0.25 else 0.1
        if rng.random() < 0.1:
            mel, other = (0.8, 0.1) if rng.random() < 0.5 else (0.1, 0.8)
        records += [_record(f"r{i}", "1", mel), _record(f"r{i}", "2", other, True)]
    return records


def test_an_equal_challenger_judged_at_every_pass_is_rolled_back_at_most_alpha_of_the_time() -> (
    None
):
    """The monitor judges the stage every pass: 39 passes of 25 new pairs, 1,000 pairs in all.
    Testing at alpha at every pass would roll back far more equal challengers than alpha (the
    naive count below shows it); the looks keep it under alpha."""
    rng, runs, settings = random.Random(7), 200, JudgeSettings(min_pairs=50, alpha=0.05)
    rolled_back = naive = 0
    for _ in range(runs):
        found = pairs(_equal_shadow(rng, 1000), "1", "2")
        passes = range(50, 1001, 25)
        rolled_back += any(
            next(c for c in paired_checks(found[:n], settings) if c.name == "melanoma_flips")
            .verdict == "fail"
            for n in passes
        )  # fmt: skip
        naive += any(_worse_at_alpha(flips(found[:n]), 0.05) for n in passes)
    assert rolled_back / runs <= 0.05, f"{rolled_back} of {runs} equal challengers rolled back"
    assert naive / runs > 0.06, f"the naive repeated test: {naive} of {runs}, not above alpha"


def _worse_at_alpha(counts: tuple[int, int], alpha: float) -> bool:
    lost, gained = counts
    return lost > gained and mcnemar_p(lost, gained) < alpha


def test_the_card_section_says_how_the_rollout_ended_with_every_check() -> None:
    from dermaops.rollout.report import SECTION, rollout_markdown, with_rollout

    s = RolloutSettings(enabled=True, steps=[10], min_stage_s=0, judge=SMALL)
    r = start("dermaops", "1", "2", s, now=0)
    found = pairs(_shadowed(100, lambda i, mel: 0.2 if i % 4 == 0 else mel), "1", "2")
    r, action = advance(r, judge(paired_checks(found, SMALL), SMALL), 60, s)
    assert action == "roll_back"
    section = rollout_markdown(r)
    assert section.startswith(f"{SECTION}\n") and "**rolled back** in shadow" in section
    assert "| melanoma_flips | 25 | <= 0 | fail | yes | 100 | 25 flags lost, 0 gained;" in section
    assert "| top1_agreement | 0.75 | >= 0.9 | fail | no | 100 |" in section
    assert "critical check failed: melanoma_flips" in section
    card = "# Model card\n\nFigures.\n"
    once = with_rollout(card, r)
    assert once.startswith(card) and once.count(SECTION) == 1
    assert with_rollout(once, r) == once, "a second record replaces the section"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mann_whitney_is_scipys_asymptotic_one_sided_test_with_ties(seed: int) -> None:
    from scipy.stats import mannwhitneyu

    rng = random.Random(seed)
    slower = [round(rng.gauss(12, 3), 0) for _ in range(60)]  # rounded: many ties
    faster = [round(rng.gauss(11, 3), 0) for _ in range(80)]
    expected = mannwhitneyu(slower, faster, alternative="greater", method="asymptotic",
                            use_continuity=True).pvalue  # fmt: skip
    assert mann_whitney_greater_p(slower, faster) == pytest.approx(expected, rel=1e-9)
    assert mann_whitney_greater_p([], faster) == 1.0


def test_latency_fails_only_when_the_tail_is_slower_and_the_whole_significantly_so() -> None:
    rng = random.Random(3)
    stable = [rng.uniform(8, 12) for _ in range(200)]
    same = [rng.uniform(8, 12) for _ in range(200)]
    slow = [v * 2 for v in same]
    one_outlier = [*same[:-1], 500.0]  # a p99 of one slow request, the rest alike
    assert latency_check(stable, same, SMALL, 50).verdict == "pass"
    failed = latency_check(stable, slow, SMALL, 50)
    assert failed.verdict == "fail" and not failed.critical and failed.value == pytest.approx(
        2.0, rel=0.1)  # fmt: skip
    assert latency_check(stable, one_outlier[:100], SMALL, 50).verdict == "pass"
    assert latency_check(stable[:10], same[:10], SMALL, 50).verdict == "no_data"


def test_a_canary_that_refuses_more_images_loses_score_and_latency_is_judged_too() -> None:
    def canary(refuse_every: int, ms: float) -> list[dict]:
        return [_record(f"c{i}", "2", 0.8 if i % 4 == 0 else 0.1, latency_ms=ms + i % 5,
                        in_distribution=i % refuse_every != 0) for i in range(200)]  # fmt: skip

    stable = [_record(f"s{i}", "1", 0.8 if i % 4 == 0 else 0.1, latency_ms=10.0 + i % 5,
                      in_distribution=i % 50 != 0) for i in range(200)]  # fmt: skip
    checks = {c.name: c for c in split_checks(stable + canary(50, 10.0), "1", "2", SMALL)}
    assert checks["ood_refusal_rate_increase"].verdict == "pass"
    assert checks["latency_p99_ratio"].verdict == "pass"
    checks = {c.name: c for c in split_checks(stable + canary(5, 30.0), "1", "2", SMALL)}
    assert checks["ood_refusal_rate_increase"].value == pytest.approx(0.2 - 0.02)
    assert checks["ood_refusal_rate_increase"].verdict == "fail"
    assert checks["latency_p99_ratio"].verdict == "fail"
    assert judge(list(checks.values()), SMALL).verdict == "fail"  # 1 of 3 scored checks passed


def test_a_requests_latency_counts_once_however_many_images_it_held() -> None:
    from dermaops.rollout.judge import _latencies

    records = [_record("r1", "1", 0.1, latency_ms=40.0) for _ in range(32)]
    records += [_record("r2", "1", 0.1, latency_ms=10.0)]
    assert sorted(_latencies(records)) == [10.0, 40.0]


def _live(caught: int, melanomas: int) -> dict[str, Any]:
    """A version's live figures as the monitor scores clinicians' labels (exact intervals)."""
    from dermaops.evaluation.intervals import clopper_pearson

    return {"cases": 4 * melanomas, "melanomas": melanomas,
            "melanoma_sensitivity": caught / melanomas,
            "ci95": {"melanoma_sensitivity": clopper_pearson(caught, melanomas)}}  # fmt: skip


def test_labels_fail_a_candidate_only_where_its_sensitivity_is_surely_lower_and_never_wait() -> (
    None
):
    """Clinicians' labels, where both versions have labelled melanomas, are a critical check:
    45 of 50 caught against 3 of 12 fails; 10 of 12 passes; no labelled melanoma (labels come
    weeks late) leaves the check out, so it never holds a stage."""
    found = pairs(_shadowed(100, lambda i, mel: mel), "1", "2")

    def verdict(live: dict[str, Any]) -> Any:
        labelled = label_check(live, "1", "2")
        return judge([*paired_checks(found, SMALL), *([labelled] if labelled else [])], SMALL)

    worse = verdict({"1": _live(45, 50), "2": _live(3, 12)})
    assert (
        worse.verdict == "fail"
        and worse.reason == "critical check failed: live_melanoma_sensitivity"
    )
    check = next(c for c in worse.checks if c.name == "live_melanoma_sensitivity")
    assert check.detail.startswith("version 2: 25% of 12 labelled melanomas flagged")
    assert verdict({"1": _live(45, 50), "2": _live(10, 12)}).verdict == "pass"
    for live in ({}, {"1": _live(45, 50)}, {"1": _live(45, 50), "2": {"melanomas": 0}}):
        judged = verdict(live)
        assert judged.verdict == "pass", live
        assert all(c.name != "live_melanoma_sensitivity" for c in judged.checks)


def _answers(version: str, probs: Any, flag_at: float, refused: int = 0) -> list[dict[str, Any]]:
    """A version's answers as the inference log holds them: calibrated probabilities, the flag
    at ``flag_at``, the first ``refused`` refused by the guard."""
    from dermaops.inference_log import PROBABILITY_FIELDS

    return [{"model_version": version, "melanoma": bool(row[4] >= flag_at),
             "in_distribution": i >= refused, **dict(zip(PROBABILITY_FIELDS, row, strict=True))}
            for i, row in enumerate(probs.tolist())]  # fmt: skip


def test_the_label_free_estimate_fails_a_candidate_that_flags_fewer_and_never_waits() -> None:
    """Each version's melanoma sensitivity estimated from its calibrated answers: the same
    answers pass; a candidate that flags only its surest melanomas fails (not critically: the
    estimate rests on calibration); no source, too few answers or an unreliable estimate leave
    the check out."""
    from dermaops.evaluation.estimate import EstimateSettings
    from dermaops.evaluation.sources import Source
    from dermaops.labels import CLASSES
    from tests.unit.test_estimate import SOURCE, THRESHOLD, _window

    probs, _ = _window(SOURCE, 400, seed=3)
    assert CLASSES[4] == "mel"
    source, es = Source(SOURCE), EstimateSettings(draws=40)
    stable = _answers("1", probs, THRESHOLD)
    same = estimate_check(stable, _answers("2", probs, THRESHOLD), (source, source), SMALL, es)
    assert same is not None and same.verdict == "pass" and same.value == 0 and not same.critical
    shy = estimate_check(stable, _answers("2", probs, 0.7), (source, source), SMALL, es)
    assert shy is not None and shy.verdict == "fail", shy
    assert shy.value is not None and shy.value < -SMALL.max_estimated_sensitivity_drop
    assert shy.detail.startswith("estimated ") and "vs stable" in shy.detail
    verdict = judge([*paired_checks(pairs(_shadowed(100, lambda i, mel: mel), "1", "2"), SMALL),
                     shy], SMALL)  # fmt: skip
    # It weighs half of another check: lost alone, 3 of 3.5 is still a pass.
    assert verdict.verdict == "pass" and verdict.score == pytest.approx(3 / 3.5)
    few = _answers("2", probs[:50], THRESHOLD)
    refusing = _answers("2", probs, THRESHOLD, refused=200)
    for candidate, sources in ((few, (source, source)), (refusing, (source, source)),
                               (_answers("2", probs, THRESHOLD), (source, None))):  # fmt: skip
        assert estimate_check(stable, candidate, sources, SMALL, es) is None
