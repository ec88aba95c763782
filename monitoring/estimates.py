"""Each served version's performance estimated from its traffic, before any label comes back.

The inference log holds each answer's calibrated probabilities and melanoma flag; each
version's model folder holds the labels of the data it was calibrated on, whose class shares are
the priors the estimate re-weights from, and the class bias it calibrates with
(:func:`dermaops.evaluation.sources.calibration_source`), read for every version the log holds
(:class:`dermaops.evaluation.sources.Sources`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from fastapi import APIRouter

from dermaops.evaluation.estimate import (
    Estimate,
    EstimateError,
    EstimateSettings,
    against_labels,
    estimate_answers,
)
from dermaops.evaluation.sources import EstimateSourceError, Source, Sources, UncalibratedModelError
from dermaops.inference_log import PROBABILITY_FIELDS
from dermaops.monitoring.metrics import MonitorMetrics, SeriesPass
from dermaops.monitoring.records import RecordLog

log = logging.getLogger(__name__)


def by_version(
    records: Iterable[Mapping[str, Any]], window: int
) -> dict[str, list[Mapping[str, Any]]]:
    """The last ``window`` answers of each version (a rollout's shadow answers left out)."""
    found: dict[str, list[Mapping[str, Any]]] = {}
    for record in records:
        if record.get("shadow") or record.get("model_version") is None:
            continue
        if any(record.get(name) is None for name in PROBABILITY_FIELDS):
            continue  # written before the log kept probabilities
        found.setdefault(str(record["model_version"]), []).append(record)
    return {version: rows[-window:] for version, rows in found.items()}


def export(version: str, found: Estimate, metrics: MonitorMetrics, p: SeriesPass) -> None:
    """One version's estimate as the ``dermaops_estimated_*`` gauges (the corrected figures
    where there are priors, else CBPE's), in the pass ``p``."""
    figures = found.corrected or found.plain
    pairs = (
        (metrics.estimated_balanced_accuracy, metrics.estimated_balanced_accuracy_lower,
         figures.balanced_accuracy),
        (metrics.estimated_sensitivity, metrics.estimated_sensitivity_lower,
         figures.melanoma_sensitivity),
    )  # fmt: skip
    for value_gauge, lower_gauge, figure in pairs:
        if figure.value is not None:
            p.set(value_gauge, (version,), figure.value)
        if figure.lower is not None:
            p.set(lower_gauge, (version,), figure.lower)
    if figures.melanoma_sensitivity.upper is not None:
        p.set(metrics.estimated_sensitivity_upper, (version,), figures.melanoma_sensitivity.upper)
    p.set(metrics.estimated_melanoma_prior, (version,), figures.priors["mel"])
    p.set(metrics.estimate_reliable, (version,), int(found.reliable))
    p.set(metrics.estimate_images, (version,), found.images)


def estimate_pass(metrics: MonitorMetrics) -> SeriesPass:
    """A pass over every version's estimate gauges: a version without an estimate now keeps
    no old value once it ends."""
    m = metrics
    return SeriesPass(m.estimated_balanced_accuracy, m.estimated_balanced_accuracy_lower,
                      m.estimated_sensitivity, m.estimated_sensitivity_lower,
                      m.estimated_sensitivity_upper, m.estimated_melanoma_prior,
                      m.estimate_reliable, m.estimate_images)  # fmt: skip


def estimate_each(
    records: Iterable[Mapping[str, Any]], sources: Sources, s: EstimateSettings
) -> dict[str, Estimate | str]:
    """Each version's estimate from its latest ``s.window`` answers on its calibration source
    from ``sources``, or why there is none (too few answers; a model never calibrated); a
    version without a source to be had (no registry, say) is estimated as plain CBPE."""
    results: dict[str, Estimate | str] = {}
    for version, rows in by_version(records, s.window).items():
        try:
            source: Source | None = sources(version)
        except UncalibratedModelError as e:  # nothing an estimate can read
            results[version] = str(e)
            continue
        except EstimateSourceError as e:  # no priors to be had: CBPE only
            log.debug("estimates of version %s without its priors: %s", version, e)
            source = None
        try:
            results[version] = estimate_answers(rows, source, s)
        except EstimateError as e:
            results[version] = str(e)
    return results


class Estimates:
    """Each version's latest estimate, or why there is none; ``lock`` guards them while a
    refresh publishes. A version with its calibration source (:class:`Sources`) gets the
    corrected estimate, one without CBPE's."""

    def __init__(
        self, settings: EstimateSettings, records: RecordLog, sources: Sources,
        metrics: MonitorMetrics,
    ) -> None:  # fmt: skip
        self.settings = settings
        self.records = records
        self.sources = sources
        self.metrics = metrics
        self.lock = threading.Lock()
        self.by_version: dict[str, Estimate | str] = {}
        self.compared: dict[str, Any] = {}  # version -> estimates against labels

    def refresh(self) -> dict[str, Estimate | str]:
        """Estimate every version in the log; the gauges and :attr:`by_version` follow."""
        results = estimate_each(self.records.read(), self.sources, self.settings)
        with self.lock:
            p = estimate_pass(self.metrics)
            for name, found in results.items():
                if isinstance(found, Estimate):
                    export(name, found, self.metrics, p)
            p.finish()
            self.by_version = results
        return results

    def against_labels(self, scored: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """Each version's estimates against the figures its clinicians' labels gave
        (``scored``: :attr:`FeedbackScores.scored`); ``dermaops_estimate_error`` and
        ``dermaops_estimate_disagrees`` follow (versions without both are cleared)."""
        with self.lock:
            found = {v: e for v, e in self.by_version.items() if isinstance(e, Estimate)}
            p = SeriesPass(self.metrics.estimate_error, self.metrics.estimate_disagrees)
            compared: dict[str, Any] = {}
            for version, live in scored.items():
                if version not in found:
                    continue
                checks = against_labels(found[version], live)
                for c in checks:
                    p.set(self.metrics.estimate_error, (version, c.figure), c.error)
                    p.set(self.metrics.estimate_disagrees, (version, c.figure), int(c.disagrees))
                compared[version] = [c.model_dump() for c in checks]
            p.finish()
            self.compared = compared
        return compared

    def answer(self) -> dict[str, Any]:
        """Each version's estimate as JSON, or why there is none."""
        with self.lock:
            found, compared = dict(self.by_version), dict(self.compared)
        answer: dict[str, Any] = {}
        for version, e in found.items():
            answer[version] = e if isinstance(e, str) else e.model_dump()
            if version in compared and not isinstance(e, str):
                answer[version]["against_labels"] = compared[version]
        return answer


def router(estimates: Estimates) -> APIRouter:
    """GET /estimates: each version's performance estimated without labels, or why not."""
    routes = APIRouter()

    @routes.get("/estimates")
    def estimated() -> dict[str, Any]:
        return estimates.answer()

    return routes
