"""The monitor's Prometheus metrics, in its own registry: drift, the records predictors send,
retraining decisions, the reconciler, and the served versions scored on clinicians' labels."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge


@dataclass(frozen=True)
class MonitorMetrics:
    share: Gauge
    detected: Gauge
    column: Gauge
    window: Gauge
    last_drift: Gauge
    failures: Counter
    outputs_compared: Gauge
    records: Counter
    unauthorized: Counter
    triggers: Counter
    champion: Gauge
    served: Gauge
    reconcile_failures: Counter
    feedback_cases: Gauge
    feedback_melanomas: Gauge
    live_sensitivity: Gauge
    live_sensitivity_lower: Gauge
    live_f1: Gauge
    registered_sensitivity: Gauge
    disagreements: Counter
    rollout_phase: Gauge
    rollout_weight: Gauge
    rollout_check: Gauge
    rollout_check_value: Gauge
    rollout_check_samples: Gauge
    estimated_balanced_accuracy: Gauge
    estimated_balanced_accuracy_lower: Gauge
    estimated_sensitivity: Gauge
    estimated_sensitivity_lower: Gauge
    estimated_sensitivity_upper: Gauge
    estimated_melanoma_prior: Gauge
    estimate_reliable: Gauge
    estimate_images: Gauge
    estimate_error: Gauge
    estimate_disagrees: Gauge

    @classmethod
    def create(cls, r: CollectorRegistry) -> MonitorMetrics:
        """Every metric, registered in ``r``."""

        def per_version(name: str, description: str) -> Gauge:
            return Gauge(name, description, ["version"], registry=r)

        return cls(
            share=Gauge("dermaops_drift_share", "Share of drifted columns.", registry=r),
            detected=Gauge("dermaops_drift_detected", "1 when the set drifted.", registry=r),
            column=Gauge(
                "dermaops_drift_column", "1 when a column drifted.", ["column"], registry=r
            ),
            window=Gauge("dermaops_drift_window_rows", "Rows of traffic compared.", registry=r),
            last_drift=Gauge(
                "dermaops_drift_last_run_timestamp_seconds", "When drift last ran.", registry=r
            ),
            failures=Counter("dermaops_drift_failures", "Drift runs that failed.", registry=r),
            outputs_compared=Gauge(
                "dermaops_drift_model_outputs_compared",
                "1 when the last run compared the model's outputs (traffic of the reference's "
                "version), 0 when image statistics only.",
                registry=r,
            ),
            records=Counter(
                "dermaops_monitor_received_records",
                "Records from predictors, by outcome (dropped: valid, the log unwritable).",
                ["outcome"],
                registry=r,
            ),
            unauthorized=Counter(
                "dermaops_monitor_unauthorized",
                "Refused requests without the right token.",
                ["path"],
                registry=r,
            ),
            triggers=Counter(
                "dermaops_retraining_triggers",
                "Retraining decisions, by outcome.",
                ["outcome"],
                registry=r,
            ),
            champion=Gauge(
                "dermaops_champion_version",
                "The registry's champion version (0: none).",
                registry=r,
            ),
            served=Gauge(
                "dermaops_served_version",
                "The version served, as last read (0: none).",
                registry=r,
            ),
            reconcile_failures=Counter(
                "dermaops_reconcile_failures",
                "Reconciler passes that could not serve the champion.",
                registry=r,
            ),
            feedback_cases=per_version(
                "dermaops_feedback_cases", "Labelled cases scored, per served version."
            ),
            feedback_melanomas=per_version(
                "dermaops_feedback_melanomas", "Melanomas among them (clinicians' labels)."
            ),
            live_sensitivity=per_version(
                "dermaops_live_melanoma_sensitivity",
                "Melanomas the model flagged at its operating point, of those clinicians labelled.",
            ),
            live_sensitivity_lower=per_version(
                "dermaops_live_melanoma_sensitivity_lower",
                "Lower end of its exact (Clopper-Pearson) 95% interval.",
            ),
            live_f1=per_version(
                "dermaops_live_macro_f1",
                "Macro-F1 over the classes present, on clinicians' labels.",
            ),
            registered_sensitivity=per_version(
                "dermaops_registered_melanoma_sensitivity",
                "Melanoma sensitivity the version was registered with (its test split).",
            ),
            disagreements=Counter(
                "dermaops_feedback_disagreements",
                "Labelled cases where the clinician's diagnosis differs from the model's, by both.",
                ["dx", "predicted"],
                registry=r,
            ),
            rollout_phase=Gauge(
                "dermaops_rollout_phase",
                "1 for the rollout's phase (shadow, canary, full) and status (running, held, "
                "promoted, rolled_back), 0 for the others.",
                ["phase", "status"],
                registry=r,
            ),
            rollout_weight=Gauge(
                "dermaops_rollout_canary_weight",
                "Percent of traffic the challenger answers in the rollout's phase.",
                registry=r,
            ),
            rollout_check=Gauge(
                "dermaops_rollout_check",
                "1 for each check's verdict (pass, fail, no_data) in the last judgement.",
                ["check", "verdict"],
                registry=r,
            ),
            rollout_check_value=Gauge(
                "dermaops_rollout_check_value",
                "Each check's value in the last judgement (absent: not measured).",
                ["check"],
                registry=r,
            ),
            rollout_check_samples=Gauge(
                "dermaops_rollout_check_samples",
                "The samples each check counted in the last judgement (paired images in a "
                "shadow, requests per version in a canary step).",
                ["check"],
                registry=r,
            ),
            estimated_balanced_accuracy=per_version(
                "dermaops_estimated_balanced_accuracy",
                "Balanced accuracy estimated from the answers' calibrated probabilities, before "
                "any label (re-weighted to the window's estimated class priors).",
            ),
            estimated_balanced_accuracy_lower=per_version(
                "dermaops_estimated_balanced_accuracy_lower", "Lower end of its 95% interval."
            ),
            estimated_sensitivity=per_version(
                "dermaops_estimated_melanoma_sensitivity",
                "Melanoma sensitivity of the flags, estimated without labels.",
            ),
            estimated_sensitivity_lower=per_version(
                "dermaops_estimated_melanoma_sensitivity_lower", "Lower end of its 95% interval."
            ),
            estimated_sensitivity_upper=per_version(
                "dermaops_estimated_melanoma_sensitivity_upper", "Upper end of its 95% interval."
            ),
            estimated_melanoma_prior=per_version(
                "dermaops_estimated_melanoma_prior",
                "Share of melanomas in the window, estimated from the answers (EM).",
            ),
            estimate_reliable=per_version(
                "dermaops_estimate_reliable",
                "1 when the estimate's assumptions are plausible (few refused images).",
            ),
            estimate_images=per_version(
                "dermaops_estimate_images", "Answers the estimate was made from."
            ),
            estimate_error=Gauge(
                "dermaops_estimate_error",
                "A figure estimated from the answers minus the value clinicians' labels gave.",
                ["version", "figure"],
                registry=r,
            ),
            estimate_disagrees=Gauge(
                "dermaops_estimate_disagrees",
                "1 when a figure's estimate and its value from labels have intervals that do not "
                "meet: the estimator no longer holds for this traffic.",
                ["version", "figure"],
                registry=r,
            ),
        )


class SeriesPass:
    """One pass's values of some labelled gauges: each series set as it comes, and at the end
    (:meth:`finish`) the series the pass did not set removed. A gauge is never empty between
    two passes, as it was when cleared and set again: a scrape in between saw no series, and
    every alert on it started its ``for`` anew."""

    def __init__(self, *gauges: Gauge) -> None:
        self._touched: dict[int, set[tuple[str, ...]]] = {id(g): set() for g in gauges}
        self._gauges = gauges

    def set(self, gauge: Gauge, labels: tuple[str, ...], value: float) -> None:
        gauge.labels(*labels).set(value)
        self._touched[id(gauge)].add(labels)

    def finish(self) -> None:
        for gauge in self._gauges:
            present = {tuple(s.labels.values()) for m in gauge.collect() for s in m.samples}
            for labels in present - self._touched[id(gauge)]:
                gauge.remove(*labels)
