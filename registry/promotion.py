"""Promotion by alias: ``champion`` moves only through the quality gate, and can roll back.

Every move leaves an audit tag on each version it touches, ``dermaops.audit.<UTC time>``:
who, what and why. Tags are never overwritten, so a version's tags are its history.

Alias moves are serialized by the promotion lock (:mod:`dermaops.registry.locks`), so
promotions and rollbacks started at once take turns; and a promotion moves ``champion`` only if
it is still the version the challenger was compared with (compare-and-set), otherwise it is
refused with a message and an audit entry.

The aliases a promotion or rollback moves (champion, previous, challenger) are one recorded
transition: the target is written to the registered model's ``dermaops.transition`` tag first,
then the aliases, then the audit entries, then the tag is marked done. A transition cut short
(a killed process, a lost connection) is finished by the next promotion, rollback or reconcile,
before it reads anything.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.entities.model_registry import ModelVersion

from dermaops.evaluation.gate import GateResult, GateThresholds, check, compare
from dermaops.evaluation.result import METRICS, EvaluationMetrics, MetricsFileError
from dermaops.registry.client import Registry, RegistryError, alias_version, run_of
from dermaops.registry.locks import actor, promotion_lock
from dermaops.registry.model import (
    CHALLENGER,
    CHAMPION,
    PREVIOUS,
    download,
    recorded_thresholds,
)
from dermaops.registry.tags import (
    AUDIT_PREFIX,
    F1_MACRO_TAG,
    MELANOMA_SENSITIVITY_TAG,
    TEST_SPLIT_TAG,
    TRANSITION_TAG,
)

log = logging.getLogger(__name__)

# Audit events that make a version champion: the versions a rollback may return to.
BECAME_CHAMPION = ("promoted to champion", "champion again after rollback")


@dataclass(frozen=True)
class PromotionResult:
    version: str
    promoted: bool
    champion_before: str | None
    reasons: list[str] = field(default_factory=list)


def promote(
    reg: Registry,
    version: str,
    verdicts: list[GateResult],
    why: str,
    compared_with: str | None = None,
) -> PromotionResult:
    """Make ``version`` the champion if every verdict passed; record the decision either way.

    Args:
        verdicts: the quality gate and the comparison with the champion.
        why: what the decision rests on, for the audit tag (e.g. the figures compared).
        compared_with: the champion the verdicts were reached against (None: there was none);
            if another promotion moved ``champion`` meanwhile, this one is refused.
    """
    with promotion_lock(reg):
        repair(reg)
        before = alias_version(reg, CHAMPION)
        reasons = [r for v in verdicts for r in v.reasons]
        if before not in (compared_with, version):
            reasons.append(
                f"the champion changed from {_named(compared_with)} to {_named(before)} while "
                f"version {version} was being compared; compare it again"
            )
        if reasons:
            audit(reg, version, f"not promoted: {'; '.join(reasons)}")
            log.warning("version %s stays %s: %s", version, CHALLENGER, "; ".join(reasons))
            return PromotionResult(version, False, before, reasons)
        if before == version:
            reason = f"version {version} is already champion"
            return PromotionResult(version, False, before, [reason])
        events = [(version, f"promoted to champion (was {before or 'none'}): {why}")]
        if before is not None:
            events.insert(0, (before, f"replaced as champion by version {version}"))
        transition(reg, {CHAMPION: version, PREVIOUS: before, CHALLENGER: None}, events)
    log.info("version %s is now %s (was %s)", version, CHAMPION, before)
    return PromotionResult(version, True, before)


def rollback(
    reg: Registry, why: str = "", to: str | None = None, thresholds: GateThresholds | None = None
) -> tuple[str, str]:
    """Point ``champion`` back at ``previous``, or at ``to``, any earlier champion; returns
    (from_version, to_version). The version returned to passes the gate again on its own
    logged metrics (with ``thresholds``, else those recorded with it).

    ``previous`` is then cleared, so a second rollback does not bounce back; ``to`` walks further.

    Raises:
        RegistryError: nothing to return to, ``to`` was never champion, or it fails the gate.
    """
    with promotion_lock(reg):
        repair(reg)
        current, previous = alias_version(reg, CHAMPION), alias_version(reg, PREVIOUS)
        earlier = [v for v in former_champions(reg) if v != current]
        target = to or previous
        if current is None or target is None:
            hint = f"; earlier champions: {', '.join(earlier)} (--to)" if earlier else ""
            raise RegistryError(
                f"nothing to roll back to: {reg.model_name} has champion={current}, "
                f"previous={previous}{hint}"
            )
        if target == current:
            raise RegistryError(f"version {target} is the champion already")
        if target not in earlier:
            raise RegistryError(
                f"version {target} was never champion of {reg.model_name}, so it cannot be "
                f"rolled back to (earlier champions: {', '.join(earlier) or 'none'}); promote it"
            )
        verdict = check(stored_metrics(reg, target), thresholds or _thresholds(reg, target))
        if not verdict.passed:
            raise RegistryError(
                f"version {target} fails the gate on its own metrics: {'; '.join(verdict.reasons)}"
            )
        note = f": {why}" if why else ""
        transition(reg, {CHAMPION: target, PREVIOUS: None}, [
            (current, f"rolled back: champion returned to version {target}{note}"),
            (target, f"champion again after rollback from version {current}{note}"),
        ])  # fmt: skip
    return current, target


def former_champions(reg: Registry) -> list[str]:
    """Every version that was ever champion, by its audit entries, most recent first."""
    became: list[tuple[str, str]] = []
    for v in reg.client.search_model_versions(f"name = '{reg.model_name}'"):
        for key, event in v.tags.items():
            if key.startswith(AUDIT_PREFIX) and event.startswith(BECAME_CHAMPION):
                became.append((key, str(v.version)))
    ordered = [version for _, version in sorted(became, reverse=True)]
    return list(dict.fromkeys(ordered))


def transition(reg: Registry, target: dict[str, str | None], events: list[tuple[str, str]]) -> None:
    """Move the aliases to ``target`` (None: unset) as one recorded transition, then write the
    audit ``events`` (version, event). Call under :func:`promotion_lock`."""
    record = {"target": target, "events": events, "state": "started",
              "at": datetime.now(UTC).isoformat(timespec="seconds"), "by": actor()}  # fmt: skip
    _record(reg, record)
    _finish(reg, record)


def repair(reg: Registry) -> bool:
    """Finish a transition that was cut short; whether there was one. Call under the lock."""
    try:
        found = reg.client.get_registered_model(reg.model_name).tags.get(TRANSITION_TAG)
    except RegistryError as e:
        if e.not_found:
            return False  # nothing registered yet
        raise
    if not found:
        return False
    record = json.loads(found)
    if record.get("state") == "done":
        return False
    log.warning("finishing an interrupted alias transition of %s from %s (by %s): %s",
                reg.model_name, record["at"], record["by"], record["target"])  # fmt: skip
    record["events"] = [[v, f"{e} (finished after an interruption)"] for v, e in record["events"]]
    _finish(reg, record)
    return True


def _finish(reg: Registry, record: dict[str, Any]) -> None:
    for alias, version in record["target"].items():
        if version is None:
            _delete_alias(reg, alias)
        else:
            reg.client.set_registered_model_alias(reg.model_name, alias, version)
    for version, event in record["events"]:
        audit(reg, version, event)
    _record(reg, record | {"state": "done"})


def _record(reg: Registry, record: dict[str, Any]) -> None:
    reg.client.set_registered_model_tag(reg.model_name, TRANSITION_TAG, json.dumps(record))


def _thresholds(reg: Registry, version: str) -> GateThresholds:
    """The gate recorded with ``version`` by the pipeline that made it, else the defaults."""
    recorded = recorded_thresholds(reg, version)
    if recorded is None:
        log.warning("version %s has no recorded gate thresholds: using the defaults", version)
        return GateThresholds()
    return recorded


def _named(version: str | None) -> str:
    return f"version {version}" if version is not None else "none"


def versions(reg: Registry) -> list[dict[str, Any]]:
    """Every version, newest first, with its aliases and headline tags."""
    found = reg.client.search_model_versions(f"name = '{reg.model_name}'")
    if not found:
        return []
    # search_model_versions leaves aliases empty; the registered model maps them.
    aliases: dict[str, list[str]] = {}
    for alias, number in reg.client.get_registered_model(reg.model_name).aliases.items():
        aliases.setdefault(str(number), []).append(alias)
    rows = []
    for v in sorted(found, key=lambda v: int(v.version), reverse=True):
        audit = sorted(k for k in v.tags if k.startswith(AUDIT_PREFIX))
        rows.append(
            {
                "version": str(v.version),
                "aliases": sorted(aliases.get(str(v.version), [])),
                "f1_macro": v.tags.get(F1_MACRO_TAG, ""),
                "melanoma_sensitivity": v.tags.get(MELANOMA_SENSITIVITY_TAG, ""),
                "created": datetime.fromtimestamp(v.creation_timestamp / 1000, UTC).isoformat(
                    timespec="seconds"
                ),
                "last_event": v.tags[audit[-1]] if audit else "",
                "run_id": v.run_id,
            }
        )
    return rows


def stored_metrics(reg: Registry, version: str) -> EvaluationMetrics:
    """The evaluation metrics logged with a version's run (``evaluation/metrics.json``)."""
    run_id = run_of(model_version(reg, version))
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = reg.client.download_artifacts(run_id, f"evaluation/{METRICS}", tmp)
        except RegistryError as e:
            if not e.not_found:
                raise
            raise RegistryError(
                f"version {version} has no logged evaluation: {e}", e.error_code
            ) from e
        try:
            return EvaluationMetrics.read(Path(path))
        except MetricsFileError as e:
            raise RegistryError(f"version {version}'s logged evaluation: {e}") from e


def model_version(reg: Registry, version: str) -> ModelVersion:
    """One version of the registered model.

    Raises:
        RegistryError: there is no such version.
    """
    try:
        return reg.client.get_model_version(reg.model_name, version)
    except RegistryError as e:
        if not e.not_found:
            raise
        raise RegistryError(
            f"{reg.model_name} has no version {version!r}: {e}", e.error_code
        ) from e


def audit(reg: Registry, version: str, event: str) -> None:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    reg.client.set_model_version_tag(
        reg.model_name, version, f"{AUDIT_PREFIX}{stamp}", f"{event} (by {actor()})"
    )


def _delete_alias(reg: Registry, alias: str) -> None:
    if alias_version(reg, alias) is not None:
        reg.client.delete_registered_model_alias(reg.model_name, alias)


def promote_challenger(
    reg: Registry,
    version: str,
    metrics: EvaluationMetrics,
    prepared: Path,
    thresholds: GateThresholds,
    must_beat: bool,
) -> PromotionResult:
    """The pipeline's promotion: the gate, then the champion re-evaluated on this test split.

    The champion is scored again on ``prepared`` rather than trusted from its own run, so the
    two models are compared on exactly the same images, and only on test lesions neither
    trained or validated on: should the champion have seen some of them (a split made apart
    from its own), both are scored without those, and the audit says how many were left out.
    """
    verdicts = [check(metrics, thresholds)]
    champion = alias_version(reg, CHAMPION)
    why = f"macro-F1 {metrics.f1_macro:.4f}, gate passed"
    if champion is not None and champion != version:
        from dermaops.evaluation.run import evaluate  # torch: only this comparison scores models

        tests = _lesions(prepared / "split_info.csv", ("test",))
        with tempfile.TemporaryDirectory() as tmp:
            seen = _lesions(logged_split(reg, champion, Path(tmp)), ("train", "val"))
            touched = frozenset(tests & seen)
            champion_dir = download(reg, champion, Path(tmp) / "champion")
            theirs = evaluate(prepared, champion_dir, Path(tmp) / "theirs", leave_out=touched)
            ours = metrics
            if touched:
                ours_dir = download(reg, version, Path(tmp) / "challenger")
                ours = evaluate(prepared, ours_dir, Path(tmp) / "ours", leave_out=touched)
        verdicts.append(compare(ours, theirs, must_beat))
        why += (f"; on the {len(tests - touched)} test lesions neither model trained or "
                f"validated on, version {version} scored {ours.f1_macro:.4f} and champion "
                f"v{champion} {theirs.f1_macro:.4f}")  # fmt: skip
        if touched:
            why += f" ({len(touched)} test lesions the champion trained or validated on left out)"
            log.warning("champion v%s trained or validated on %d of this split's test lesions: "
                        "both compared without them", champion, len(touched))  # fmt: skip
    return promote(reg, version, verdicts, why, compared_with=champion)


def _lesions(split_info: Path, splits: tuple[str, ...]) -> set[str]:
    info = pd.read_csv(split_info, dtype=str)
    return set(info.loc[info["split"].isin(splits), "lesion_id"])


def promote_stored(
    reg: Registry, version: str, thresholds: GateThresholds | None, must_beat: bool
) -> PromotionResult:
    """A promotion by hand: the gate (``thresholds``, else those the pipeline that made the
    version recorded with it) and the comparison on the metrics logged with each run.

    Logged metrics are comparable only on one test split; versions judged on different splits
    are refused (run the retraining pipeline, which re-scores the champion, instead).
    """
    metrics = stored_metrics(reg, version)
    verdicts = [check(metrics, thresholds or _thresholds(reg, version))]
    champion = alias_version(reg, CHAMPION)
    why = f"by hand; macro-F1 {metrics.f1_macro:.4f}, gate passed"
    if champion is not None and champion != version:
        ours, theirs = (_split_digest(reg, v) for v in (version, champion))
        if ours != theirs:
            raise RegistryError(
                f"version {version} and champion v{champion} were tested on different splits "
                f"({ours} vs {theirs}): their metrics cannot be compared"
            )
        verdicts.append(compare(metrics, stored_metrics(reg, champion), must_beat))
        why += f"; compared with champion v{champion} on test split {ours}"
    return promote(reg, version, verdicts, why, compared_with=champion)


def _split_digest(reg: Registry, version: str) -> str:
    tags = model_version(reg, version).tags
    return str(tags.get(TEST_SPLIT_TAG, "unknown"))


def champion_split(reg: Registry, dest: Path) -> Path | None:
    """The champion's ``split_info.csv`` (to keep its split), or None without a champion."""
    champion = alias_version(reg, CHAMPION)
    if champion is None:
        log.info("no champion yet: the split is made fresh")
        return None
    return logged_split(reg, champion, dest)


def logged_split(reg: Registry, version: str, dest: Path) -> Path:
    """The ``split_info.csv`` logged with ``version``'s run: which lesion went where.

    Raises:
        RegistryError: the version's run logged none.
    """
    run_id = run_of(model_version(reg, version))
    try:
        return Path(reg.client.download_artifacts(run_id, "data/split_info.csv", str(dest)))
    except RegistryError as e:
        if not e.not_found:
            raise
        raise RegistryError(
            f"version {version} has no logged split_info.csv: {e}", e.error_code
        ) from e
