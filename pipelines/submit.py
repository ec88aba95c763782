"""Submit a compiled pipeline to a Kubeflow Pipelines cluster."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dermaops.errors import ConfigError, DermaOpsError

log = logging.getLogger(__name__)


class SubmitError(DermaOpsError):
    """The KFP API refused the pipeline or could not be reached."""


def daily_cron(at: str) -> str:
    """KFP's six-field cron (seconds first) for every day at ``HH:MM``."""
    try:
        hour, minute = (int(part) for part in at.split(":"))
    except ValueError as e:
        raise ConfigError(f"--daily-at {at!r}: expected HH:MM") from e
    if not (0 <= hour < 24 and 0 <= minute < 60):
        raise ConfigError(f"--daily-at {at!r}: no such time of day")
    return f"0 {minute} {hour} * * *"


def submit(
    host: str,
    package: Path,
    experiment: str,
    arguments: dict[str, Any],
    daily_at: str | None = None,
    namespace: str | None = None,
) -> Iterator[str]:
    """Create a run of ``package`` (and a daily recurring run); yields what was created."""
    if not package.is_file():
        raise ConfigError(f"no compiled pipeline at {package}: run `dermaops pipeline compile`")
    cron = daily_cron(daily_at) if daily_at else None
    import kfp

    try:
        client = kfp.Client(host=host, namespace=namespace)
        made = client.create_experiment(experiment, namespace=namespace)
        run = client.create_run_from_pipeline_package(
            str(package), arguments=arguments, experiment_name=experiment, namespace=namespace
        )
        yield f"run {run.run_id} in experiment {experiment}: {host}/#/runs/details/{run.run_id}"
        if cron:
            job = client.create_recurring_run(
                made.experiment_id, f"{package.stem}-daily", pipeline_package_path=str(package),
                params=arguments, cron_expression=cron, max_concurrency=1,
            )  # fmt: skip
            yield f"recurring run {job.recurring_run_id}: daily at {daily_at} UTC"
    except Exception as e:  # kfp raises urllib3, ApiException and ValueError alike
        raise SubmitError(
            f"KFP at {host} did not take the pipeline: {type(e).__name__}: {e}"
        ) from e
