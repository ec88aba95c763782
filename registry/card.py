"""Each registered version's model card, logged to MLflow beside it and read back by version."""

from __future__ import annotations

import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from mlflow.entities.model_registry import ModelVersion

from dermaops.evaluation.card import CARD_HTML, CARD_MD, Lineage, write_card
from dermaops.evaluation.result import EvaluationMetrics
from dermaops.registry.client import Registry, RegistryError, run_of
from dermaops.registry.tags import CARD_TAG, KFP_RUN_TAG

CARD_ARTIFACT = "model_card"


def log_card(
    reg: Registry,
    version: ModelVersion,
    metrics: EvaluationMetrics,
    model_dir: Path,
    prepared: Path,
    parent_champion: str | None,
    out: Path | None = None,
) -> Path:
    """Write the card of ``version``, log it to its run, tag the version with where it is.

    Returns:
        The Markdown card (in ``out`` when given, else in a folder that is removed: read it
        from MLflow).
    """
    run_id = run_of(version)
    run = reg.client.get_run(run_id)
    lineage = Lineage(
        model_name=reg.model_name,
        version=str(version.version),
        run_id=run_id,
        pipeline_run=run.data.tags.get(KFP_RUN_TAG, ""),
        parent_champion=parent_champion or "",
        registered_at=datetime.fromtimestamp(version.creation_timestamp / 1000, UTC).isoformat(
            timespec="seconds"
        ),
    )
    folder = out or Path(tempfile.mkdtemp(prefix="dermaops-card-"))
    try:
        md, _ = write_card(metrics, model_dir, prepared, lineage, folder)
        path = f"{CARD_ARTIFACT}/v{version.version}"
        reg.client.log_artifacts(run_id, str(folder), path)
        reg.client.set_model_version_tag(reg.model_name, str(version.version), CARD_TAG, path)
    except RegistryError as e:
        raise RegistryError(f"could not store the model card: {e}", e.error_code) from e
    finally:
        if out is None:
            shutil.rmtree(folder, ignore_errors=True)
    return md


def fetch_card(reg: Registry, version: str, dest: Path) -> Path:
    """Download ``version``'s card (Markdown and HTML) into ``dest``; return the Markdown."""
    try:
        found = reg.client.get_model_version(reg.model_name, version)
    except RegistryError as e:
        if not e.not_found:
            raise
        raise RegistryError(f"{reg.model_name} has no version {version}: {e}", e.error_code) from e
    path = found.tags.get(CARD_TAG)
    if not path:
        raise RegistryError(
            f"{reg.model_name} v{version} has no model card (registered before cards existed)"
        )
    dest.mkdir(parents=True, exist_ok=True)
    try:
        local = reg.client.download_artifacts(run_of(found), path, str(dest))
    except RegistryError as e:
        raise RegistryError(f"could not fetch the card of v{version}: {e}", e.error_code) from e
    md = Path(local) / CARD_MD
    if not md.is_file() or not (Path(local) / CARD_HTML).is_file():
        raise RegistryError(f"the card of v{version} is incomplete in MLflow ({path})")
    return md
