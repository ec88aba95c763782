"""The judge of a rollout phase: what the challenger answered, against the stable version.

In ``shadow`` the stable predictor mirrors live requests to the challenger, so both answered the
same images: the checks are *paired* (records joined on the request id), and far more powerful
than an unpaired comparison at the same traffic. In a ``canary`` step each request is answered
by one version only: the checks compare the two shares of traffic (*unpaired*).

Each check has a threshold and a direction, a minimum of data, and is ``critical`` (its failure
rolls back at once) or not (it counts in the phase's score), as in Kayenta's judge. A check
without enough data says so (``no_data``); the phase waits for it, never passes on silence.

The critical tests are judged at every pass of the monitor while the data grow, which would
inflate their false alarms (an equal challenger rolled back) far beyond ``alpha``. So each is a
sequence of *looks* (:func:`looks`): at the first ``min`` answers, then at twice as many, four
times, ..., look ``k`` at level ``alpha / 2**(k + 1)``, always on the first answers in the
order they were logged. A look's data never change once it is reached, however often a pass
repeats it, and the levels sum to ``alpha``: the chance that an equal challenger ever fails is
at most ``alpha`` however long the stage lasts (a union bound, so conservative).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeGuard

from pydantic import BaseModel, ConfigDict, Field

from dermaops.evaluation.estimate import EstimateError, EstimateSettings, Figure, estimate_answers
from dermaops.evaluation.sources import Source
from dermaops.labels import CLASSES
from dermaops.rollout.stats import (
    first_rejection,
    js_distance,
    looks,
    mann_whitney_greater_p,
    mcnemar_lost_p,
    p99,
    two_proportion_p,
)

Verdict = Literal["pass", "fail", "no_data"]
PhaseVerdict = Literal["pass", "fail", "wait"]


class JudgeSettings(BaseModel):
    """Each check's threshold (the chart's ``rollout.checks``), and the least data it needs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_pairs: int = Field(200, ge=1, description="shadowed requests before paired checks count")
    min_requests: int = Field(200, ge=1, description="requests per version in a canary step")
    alpha: float = Field(0.05, gt=0, lt=1, description="significance of the statistical tests")
    min_agreement: float = Field(0.9, ge=0, le=1, description="top-1 agreement with stable")
    max_melanoma_probability_drop: float = Field(
        0.05, ge=0, le=1, description="mean fall of P(melanoma) on the same images"
    )
    max_ood_change: float = Field(
        0.05, ge=0, le=1, description="share of images whose guard verdict changed"
    )
    max_flag_rate_drop: float = Field(
        0.25, ge=0, le=1, description="relative fall of the melanoma-flag rate (canary)"
    )
    max_class_mix_distance: float = Field(
        0.15, ge=0, le=1, description="Jensen-Shannon distance of the answered class mix"
    )
    max_ood_rate_increase: float = Field(
        0.05, ge=0, le=1, description="rise of the share of images the guard refused (canary)"
    )
    max_latency_ratio: float = Field(
        1.5, ge=1, description="p99 model latency over stable's, when also significantly slower"
    )
    max_error_share: float = Field(
        0.01, ge=0, le=1, description="share of the challenger's answers that were 5xx or none"
    )
    min_errors: int = Field(
        3, ge=1, description="failed answers before the error share can fail (one blip is not)"
    )
    max_estimated_sensitivity_drop: float = Field(
        0.1, ge=0, le=1, description="fall of the melanoma sensitivity estimated without labels"
    )
    estimate_weight: float = Field(
        0.5, ge=0, le=1, description="the estimate's part in the score (the others weigh 1)"
    )
    pass_score: float = Field(
        0.75, ge=0, le=1, description="share of non-critical checks that must pass"
    )


class Check(BaseModel):
    """One check's result: its value against its threshold."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    value: float | None
    threshold: float
    direction: Literal["at_least", "at_most"]
    verdict: Verdict
    critical: bool
    samples: int
    weight: float = Field(1.0, ge=0, description="its part in the score, when not critical")
    detail: str = ""


class Judgement(BaseModel):
    """A phase's checks and the verdict they add up to."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    verdict: PhaseVerdict
    score: float | None = Field(description="share of the non-critical checks' weight that passed")
    checks: list[Check]
    reason: str


@dataclass(frozen=True)
class ErrorCounts:
    """Requests the challenger answered, and how many of them with a 5xx (from Prometheus)."""

    errors: float
    requests: float


def _check(
    name: str, value: float | None, threshold: float, direction: Literal["at_least", "at_most"],
    samples: int, needed: int, critical: bool, detail: str = "", failed: bool | None = None,
) -> Check:  # fmt: skip
    """A check; ``failed`` overrides the plain comparison (a statistical test decides)."""
    if value is None or samples < needed or math.isnan(value):
        verdict: Verdict = "no_data"
        detail = detail or f"{samples} of {needed} samples"
    else:
        if failed is None:
            failed = value < threshold if direction == "at_least" else value > threshold
        verdict = "fail" if failed else "pass"
    return Check(name=name, value=None if value is None or math.isnan(value) else round(value, 6),
                 threshold=threshold, direction=direction, verdict=verdict, critical=critical,
                 samples=samples, detail=detail)  # fmt: skip


def latency_check(old_ms: Sequence[float], new_ms: Sequence[float], s: JudgeSettings,
                  needed: int) -> Check:  # fmt: skip
    """The challenger's p99 model latency over stable's: fails when over ``max_latency_ratio``
    and the challenger is significantly slower overall (Mann-Whitney U at ``alpha``), so one
    slow outlier alone does not fail it. Not critical: it counts in the score."""
    n = min(len(old_ms), len(new_ms))
    if n < needed or not old_ms or p99(old_ms) <= 0:
        return _check("latency_p99_ratio", None, s.max_latency_ratio, "at_most", n, needed,
                      critical=False)  # fmt: skip
    ratio, p_value = p99(new_ms) / p99(old_ms), mann_whitney_greater_p(new_ms, old_ms)
    return _check("latency_p99_ratio", ratio, s.max_latency_ratio, "at_most", n, needed,
                  critical=False, failed=ratio > s.max_latency_ratio and p_value < s.alpha,
                  detail=f"p99 {p99(new_ms):.1f} vs {p99(old_ms):.1f} ms; Mann-Whitney "
                  f"p = {p_value:.3g}")  # fmt: skip


def _latencies(records: Iterable[Mapping[str, Any]]) -> list[float]:
    """One latency per request: every image of a request carries the request's, and counting
    it once per image would weigh large requests more and shrink the test's p-value."""
    seen: dict[object, float] = {}
    for i, r in enumerate(records):
        if r.get("latency_ms") is not None:
            seen.setdefault(r.get("request_id") or i, float(r["latency_ms"]))
    return list(seen.values())


@dataclass(frozen=True)
class Pair:
    """One image answered by both versions."""

    stable: Mapping[str, Any]
    candidate: Mapping[str, Any]


def pairs(records: Iterable[Mapping[str, Any]], stable: str, candidate: str) -> list[Pair]:
    """The images both versions answered: the stable's live records and the challenger's shadow
    records of one request id, image by image in the order the request held them (a request
    answered twice by one side cannot be paired and is left out), in the order the pairs were
    complete in the log."""
    records_in_order = list(records)
    live: dict[str, list[Mapping[str, Any]]] = {}
    shadow: dict[str, list[Mapping[str, Any]]] = {}
    for record in records_in_order:
        request_id, version = record.get("request_id"), str(record.get("model_version"))
        if not request_id:
            continue
        if version == stable and not record.get("shadow"):
            live.setdefault(request_id, []).append(record)
        elif version == candidate and record.get("shadow"):
            shadow.setdefault(request_id, []).append(record)
    # In the order each request's answers were both in the log (its later side's last line):
    # new pairs come after the old ones, so the first n pairs stay the same as the log grows.
    complete: dict[str, int] = {}
    for position, record in enumerate(records_in_order):
        request_id = record.get("request_id")
        if request_id in live and request_id in shadow:
            complete[request_id] = position
    return [
        Pair(old, new)
        for rid in sorted(complete, key=complete.__getitem__)
        if len(live[rid]) == len(shadow[rid])
        for old, new in zip(live[rid], shadow[rid], strict=True)
    ]


def paired_checks(found: Sequence[Pair], s: JudgeSettings) -> list[Check]:
    """Agreement, melanoma flips (McNemar), the change of P(melanoma), guard verdict changes."""
    n = len(found)
    agree = sum(p.stable.get("prediction") == p.candidate.get("prediction") for p in found)
    lost, gained = flips(found)

    def worse(size: int) -> float:  # one-sided: only flags lost can fail the challenger
        return mcnemar_lost_p(*flips(found[:size]))

    rejected = first_rejection(worse, n, s.min_pairs, s.alpha)
    deltas = [
        float(p.candidate["p_mel"]) - float(p.stable["p_mel"])
        for p in found
        if p.candidate.get("p_mel") is not None and p.stable.get("p_mel") is not None
    ]
    judged = [
        p for p in found
        if p.stable.get("in_distribution") is not None
        and p.candidate.get("in_distribution") is not None
    ]  # fmt: skip
    changed = sum(p.stable["in_distribution"] != p.candidate["in_distribution"] for p in judged)
    checks = [
        _check("melanoma_flips", lost - gained, 0, "at_most", n, s.min_pairs, critical=True,
               detail=f"{lost} flags lost, {gained} gained; " + _looked(rejected, "McNemar", n,
                                                                      s.min_pairs, s.alpha),
               failed=rejected is not None),
        _check("top1_agreement", agree / n if n else None, s.min_agreement, "at_least", n,
               s.min_pairs, critical=False),
        _check("melanoma_probability_change", sum(deltas) / len(deltas) if deltas else None,
               -s.max_melanoma_probability_drop, "at_least", len(deltas), s.min_pairs,
               critical=False),
    ]  # fmt: skip
    guarded = any(p.stable.get("in_distribution") is not None for p in found)
    if guarded or not found:  # without a guard there are no verdicts to compare: left out
        checks.append(_check("ood_verdict_changes", changed / len(judged) if judged else None,
                             s.max_ood_change, "at_most", len(judged), s.min_pairs,
                             critical=False))  # fmt: skip
    # No latency check here: a mirrored request reaches the challenger after the stable one
    # answered, from a queue, under another load (measured here: p99 1.6x on the same model).
    return checks


def flips(found: Sequence[Pair]) -> tuple[int, int]:
    """Melanoma flags the challenger lost, and gained, on the same images."""
    lost = sum(bool(p.stable.get("melanoma")) and not p.candidate.get("melanoma") for p in found)
    gained = sum(not p.stable.get("melanoma") and bool(p.candidate.get("melanoma")) for p in found)
    return lost, gained


def _looked(
    rejected: tuple[int, float, float] | None, test: str, n: int, first: int, alpha: float
) -> str:
    """What the looks of a critical test found, in words."""
    if rejected is not None:
        size, p_value, level = rejected
        return f"{test} p = {p_value:.3g} < {level:.3g} on the first {size}"
    done = looks(n, first, alpha)
    if not done:
        return f"first look at {first}"
    size, level = done[-1]
    return f"{test} at {len(done)} look(s), last on the first {size} at level {level:.3g}"


def split_checks(
    records: Iterable[Mapping[str, Any]], stable: str, candidate: str, s: JudgeSettings
) -> list[Check]:
    """A canary step: the melanoma-flag rate and the class mix of each version's own traffic.

    The flag-rate test's looks take the challenger's first ``size`` answers against every stable
    answer logged before the challenger's ``size``-th: the same span of time whatever the
    canary's share (at 10 %, the stable's first ``size`` would be nine times more recent)."""
    old: list[Mapping[str, Any]] = []
    new: list[Mapping[str, Any]] = []
    stable_before: list[int] = []  # for each challenger answer: the stable answers before it
    for record in records:
        version = str(record.get("model_version"))
        if record.get("shadow"):
            continue
        if version == stable:
            old.append(record)
        elif version == candidate:
            new.append(record)
            stable_before.append(len(old))
    n = min(len(old), len(new))
    old_rate, new_rate = _flag_rate(old), _flag_rate(new)
    drop = _drop(old_rate, new_rate)

    def fell(size: int) -> float:
        before, after = old[: stable_before[size - 1]], new[:size]
        if len(before) < s.min_requests:
            return 1.0
        if _drop(_flag_rate(before), _flag_rate(after)) <= s.max_flag_rate_drop:
            return 1.0
        hits = [sum(bool(r.get("melanoma")) for r in rows) for rows in (before, after)]
        return two_proportion_p(hits[0], len(before), hits[1], size)

    rejected = first_rejection(fell, len(new) if n else 0, s.min_requests, s.alpha)

    def mix(rows: list[Mapping[str, Any]]) -> list[float]:
        counts = [sum(r.get("prediction") == c for r in rows) for c in CLASSES]
        return [c / max(1, len(rows)) for c in counts]

    distance = js_distance(mix(old), mix(new)) if old and new else None
    checks = [
        _check("melanoma_flag_rate_drop", drop if old and new else None, s.max_flag_rate_drop,
               "at_most", n, s.min_requests, critical=True,
               detail=f"flag rate {new_rate:.3f} vs stable {old_rate:.3f}; "
               + _looked(rejected, "two-proportion", n, s.min_requests, s.alpha),
               failed=rejected is not None),
        _check("class_mix_distance", distance, s.max_class_mix_distance, "at_most", n,
               s.min_requests, critical=False),
    ]  # fmt: skip
    guarded = [[r for r in rows if r.get("in_distribution") is not None] for rows in (old, new)]
    if all(guarded) or not (old and new):  # without a guard there is nothing refused: left out
        refused = [sum(not r["in_distribution"] for r in rows) / max(1, len(rows))
                   for rows in guarded]  # fmt: skip
        checks.append(_check(
            "ood_refusal_rate_increase", refused[1] - refused[0] if all(guarded) else None,
            s.max_ood_rate_increase, "at_most", min(map(len, guarded)), s.min_requests,
            critical=False, detail=f"refused {refused[1]:.3f} vs stable {refused[0]:.3f}",
        ))  # fmt: skip
    if _latencies(old) or not (old and new):  # records from before latency was logged: none
        checks.append(latency_check(_latencies(old), _latencies(new), s, s.min_requests))
    return checks


def _flag_rate(rows: Sequence[Mapping[str, Any]]) -> float:
    return sum(bool(r.get("melanoma")) for r in rows) / len(rows) if rows else math.nan


def _drop(old_rate: float, new_rate: float) -> float:
    """The relative fall of the flag rate (0 when there is nothing to fall from)."""
    return (old_rate - new_rate) / old_rate if old_rate and not math.isnan(new_rate) else 0.0


def error_check(counts: ErrorCounts, s: JudgeSettings, needed: int) -> Check:
    """The challenger's share of failed answers (5xx, or none at all). Critical, and judged as
    soon as ``min_errors`` failed: waiting for more requests would only fail more of them."""
    share = counts.errors / counts.requests if counts.requests else None
    enough = needed if counts.errors >= s.min_errors else int(counts.requests)
    return _check("error_share", share, s.max_error_share, "at_most", enough, needed, True,
                  detail=f"{counts.errors:g} of {counts.requests:g} requests failed")  # fmt: skip


def label_check(live: Mapping[str, Mapping[str, Any]], stable: str, candidate: str) -> Check | None:
    """Clinicians' labels, where both versions have labelled melanomas (``live``: the monitor's
    live figures per version, :func:`dermaops.evaluation.live.live_performance`): the
    candidate's melanoma sensitivity fails, critically, when its 95 % interval (exact) lies
    wholly below the stable's, the truth the other checks stand in for. None without labelled
    melanomas of both: labels come weeks late, and their absence never holds a stage."""
    intervals = []
    for version in (stable, candidate):
        figures = live.get(version) or {}
        low, high = (figures.get("ci95") or {}).get("melanoma_sensitivity") or (None, None)
        if not figures.get("melanomas") or not (_finite(low) and _finite(high)):
            return None
        intervals.append((low, high))
    (old_low, old_high), (new_low, new_high) = intervals
    caught = live[candidate].get("melanoma_sensitivity")
    detail = (f"version {candidate}: {_share(caught)} of {live[candidate]['melanomas']} "
              f"labelled melanomas flagged ({new_low:.0%} to {new_high:.0%}); version {stable}: "
              f"{_share(live[stable].get('melanoma_sensitivity'))} of "
              f"{live[stable]['melanomas']} ({old_low:.0%} to {old_high:.0%})")  # fmt: skip
    return _check("live_melanoma_sensitivity", new_high, old_low, "at_least",
                  int(live[candidate]["melanomas"]), 1, critical=True, detail=detail)  # fmt: skip


def estimate_check(
    stable: Sequence[Mapping[str, Any]], candidate: Sequence[Mapping[str, Any]],
    sources: tuple[Source | None, Source | None], s: JudgeSettings, es: EstimateSettings,
) -> Check | None:  # fmt: skip
    """The candidate's melanoma sensitivity estimated from its latest answers before any label
    (:func:`dermaops.evaluation.estimate.estimate_answers`, each version with its own
    calibration ``sources``, corrected for the window's priors) against the stable's: fails
    when it fell by more than ``max_estimated_sensitivity_drop`` and the candidate's interval
    lies wholly below the stable's estimate. Not critical, and weighs ``estimate_weight`` in
    the score (so it alone does not roll a candidate back): it rests on each model's
    calibration holding under this traffic. None (left out, never waited for) where a version
    has no calibration source, too few answers to estimate, or an estimate its own checks mark
    unreliable (many images the guard refused, say)."""
    old_source, new_source = sources
    if old_source is None or new_source is None:
        return None
    try:
        old = estimate_answers(stable[-es.window :], old_source, es)
        new = estimate_answers(candidate[-es.window :], new_source, es)
    except EstimateError:
        return None
    if not (old.reliable and new.reliable):
        return None
    before = (old.corrected or old.plain).melanoma_sensitivity
    after = (new.corrected or new.plain).melanoma_sensitivity
    if before.value is None or after.value is None or after.upper is None:
        return None
    change, bound = after.value - before.value, -s.max_estimated_sensitivity_drop
    check = _check("estimated_melanoma_sensitivity", change, bound, "at_least",
                   min(old.images, new.images), 1, critical=False,
                   failed=change < bound and after.upper < before.value,
                   detail=f"estimated {_figure(after)} vs stable {_figure(before)} on the "
                   f"latest {new.images} and {old.images} answers")  # fmt: skip
    return check.model_copy(update={"weight": s.estimate_weight})


def _figure(f: Figure) -> str:
    interval = f" ({f.lower:.0%} to {f.upper:.0%})" if _finite(f.lower) and _finite(f.upper) else ""
    return f"{f.value or 0:.0%}{interval}"


def _finite(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and math.isfinite(value)


def _share(value: Any) -> str:
    return f"{value:.0%}" if _finite(value) else "?"


def judge(checks: Sequence[Check], s: JudgeSettings) -> Judgement:
    """A critical failure fails the phase; else it waits while a check lacks data; else it
    passes when enough of the non-critical checks pass."""
    failed = [c.name for c in checks if c.critical and c.verdict == "fail"]
    scored = [c for c in checks if not c.critical]
    weight = sum(c.weight for c in scored)
    score = sum(c.weight for c in scored if c.verdict == "pass") / weight if weight else None
    waiting = [c.name for c in checks if c.verdict == "no_data"]
    if failed:
        return Judgement(verdict="fail", score=score, checks=list(checks),
                         reason="critical check failed: " + ", ".join(failed))  # fmt: skip
    if waiting:
        return Judgement(verdict="wait", score=score, checks=list(checks),
                         reason="not enough data for " + ", ".join(waiting))  # fmt: skip
    if score is not None and score < s.pass_score:
        lost = [c.name for c in scored if c.verdict == "fail"]
        return Judgement(
            verdict="fail",
            score=score,
            checks=list(checks),
            reason=f"score {score:.2f} < {s.pass_score:.2f}: " + ", ".join(lost),
        )
    return Judgement(verdict="pass", score=score, checks=list(checks), reason="every check passed"
                     if score in (None, 1.0) else f"score {score:.2f}")  # fmt: skip
