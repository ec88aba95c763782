"""What every component process needs: logging, and recording which stage failed.

Imported inside component bodies (in the image), so it stays light: MLflow is imported only
when a stage fails and its failure must be recorded.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from dermaops.exit import skip_final_collection
from dermaops.settings import ACTOR_ENV

log = logging.getLogger("dermaops.components")


@contextmanager
def stage(
    name: str, kfp_run_id: str = "", model_name: str = "dermaops", pipeline: str = ""
) -> Iterator[None]:
    """Run one stage: configure logging; name the run as the actor of what it records in the
    registry's audit (unless ``DERMAOPS_ACTOR`` names one); on failure, tag the pipeline's
    MLflow run and re-raise.

    Stages that KFP may cache get no run id (it would change every cache key) and record
    nothing; the exit handler then falls back to KFP's own error message.

    The stage is its process's work (KFP runs each task's component in a process of its own),
    so the process ends without the collector's last sweep
    (:func:`~dermaops.exit.skip_final_collection`; a test that runs stages in its own process
    gets that at its exit too).
    """
    skip_final_collection()
    if kfp_run_id and not os.environ.get(ACTOR_ENV):
        os.environ[ACTOR_ENV] = f"KFP run {kfp_run_id}" + (
            f" of the {pipeline} pipeline" if pipeline else ""
        )
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        yield
    except Exception as e:
        log.error("stage %s failed: %s: %s", name, type(e).__name__, e)
        if kfp_run_id:
            _record(name, kfp_run_id, model_name, e)
        raise


def _record(name: str, kfp_run_id: str, model_name: str, error: Exception) -> None:
    try:
        from dermaops.registry.client import Registry, RegistrySettings

        Registry(RegistrySettings(model_name=model_name)).record_failure(kfp_run_id, name, error)
    except Exception as record_error:  # a process boundary: keep the stage's own error
        log.warning("could not record the failure of %s in MLflow: %s", name, record_error)
