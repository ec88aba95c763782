"""Each registered version's model card, logged to MLflow beside it and read back by version;
the rollout that put it in front of clinicians (or did not) is added when it ends."""

from __future__ import annotations

import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from mlflow.entities.model_registry import ModelVersion

from dermaops.evaluation.card import CARD_HTML, CARD_MD, Lineage, write_card
from dermaops.evaluation.report import write_html
from dermaops.evaluation.result import EvaluationMetrics
from dermaops.registry.client import Registry, RegistryError, run_of
from dermaops.registry.tags import CARD_TAG, KFP_RUN_TAG
from dermaops.rollout.plan import Rollout
from dermaops.rollout.report import with_rollout

CARD_ARTIFACT = "model_card"
ROLLOUT_JSON = "rollout.json"  # beside the card: the finished rollout, as the monitor kept it


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


def record_rollout(reg: Registry, r: Rollout) -> str:
    """Keep how ``r`` ended with its candidate version: ``rollout.json`` beside the version's
    card, and the card's rollout section (its HTML rendered again). Where the version has no
    card (registered before cards existed), the JSON alone. Returns where it is in MLflow.

    Raises:
        RegistryError: the version, its run or its card cannot be read or written.
    """
    found = reg.client.get_model_version(reg.model_name, r.candidate)
    path = found.tags.get(CARD_TAG) or f"{CARD_ARTIFACT}/v{r.candidate}"
    with tempfile.TemporaryDirectory(prefix="dermaops-rollout-") as tmp:
        folder = Path(tmp) / "card"
        if CARD_TAG in found.tags:
            md = fetch_card(reg, r.candidate, Path(tmp) / "fetched")
            shutil.copytree(md.parent, folder)
            (folder / CARD_MD).write_text(with_rollout(md.read_text(), r))
            write_html(folder / CARD_MD, folder / CARD_HTML,
                       title=f"Model card: {reg.model_name} v{r.candidate}")  # fmt: skip
        else:
            folder.mkdir()
        (folder / ROLLOUT_JSON).write_text(r.model_dump_json(indent=2) + "\n")
        reg.client.log_artifacts(run_of(found), str(folder), path)
    return f"{path}/{ROLLOUT_JSON}"
