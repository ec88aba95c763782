"""Every MLflow tag DermaOps writes or reads: one name each, here and nowhere else.

What a tag marks, who writes it and who reads it. Runs and versions recorded by earlier versions
carry these same names, so a name changed here is a migration, not a rename.
"""

from __future__ import annotations

# On the MLflow run of a pipeline run (one per KFP run).

# The KFP run it records; Registry.pipeline_run finds the run by it, the model card names it.
KFP_RUN_TAG = "dermaops.kfp_run_id"
# Which pipeline (training, retraining); Registry.latest_pipeline_run filters on it (the CLI).
PIPELINE_TAG = "dermaops.pipeline"
# The stage that failed (components.runtime.stage writes it); the notify exit handler names it.
FAILED_STAGE_TAG = "dermaops.failed_stage"
# Why that stage failed, "Type: message"; the notify exit handler quotes it.
FAILURE_TAG = "dermaops.failure"
# + a dermaops.notify.RunFacts field (promoted, deployed, ...): the run summary's facts.
FACT_PREFIX = "dermaops.fact."

# On a registered model version (register writes them; reviewers, promotion and monitors read).

# Test macro-F1 at registration, 4 decimals; `dermaops registry versions` lists it.
F1_MACRO_TAG = "dermaops.f1_macro"
# Test melanoma sensitivity at registration, 4 decimals; the versions list and the live
# performance check (monitoring.feedback) compare with it.
MELANOMA_SENSITIVITY_TAG = "dermaops.melanoma_sensitivity"
# The melanoma operating threshold the version flags at, 6 decimals; for reviewers.
MELANOMA_THRESHOLD_TAG = "dermaops.melanoma_threshold"
# "true" when measured on generated images (not a clinical result); for reviewers.
GENERATED_DATA_TAG = "dermaops.generated_data"
# A digest of the test split's image ids; a promotion by hand compares only equal digests.
TEST_SPLIT_TAG = "dermaops.test_split"
# + each GateThresholds field: the gate the version passed; hand promotion and rollback reuse it.
GATE_TAG_PREFIX = "dermaops.gate."
# The version's files in the artifact store; deploy hands it to KServe's storage initializer.
STORAGE_URI_TAG = "dermaops.storage_uri"
# Where the version's model card is among its run's artifacts; `dermaops registry card` reads it.
CARD_TAG = "dermaops.evaluation.card"
# + a UTC time: one audit entry (who, what, why), never overwritten; promotion reads the history.
AUDIT_PREFIX = "dermaops.audit."
# How the version's rollout ended, and why (the rollout driver writes it); for reviewers.
ROLLOUT_TAG = "dermaops.rollout"

# On the registered model.

# The alias transition in progress or last done (JSON); promotion.repair finishes a cut-short one.
TRANSITION_TAG = "dermaops.transition"
