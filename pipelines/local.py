"""Run a pipeline on this machine with KFP's local runner: no cluster, no Docker.

Each task runs as a subprocess of this Python; KFP's local cache lets a rerun with the same
inputs skip the cached stages (ingest, prepare, baseline), as on a cluster.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kfp import local
from kfp.dsl.base_component import BaseComponent

from dermaops.errors import ConfigError, DermaOpsError
from dermaops.pipelines.settings import PipelineSettings
from dermaops.pipelines.training import Kind, build_pipeline
from dermaops.settings import HOME_ENV, Home

log = logging.getLogger(__name__)


class PipelineFailedError(DermaOpsError):
    """A local pipeline run ended with a failed task."""


@dataclass(frozen=True)
class LocalRun:
    kind: Kind
    seconds: float
    pipeline_root: str


def run_local(
    kind: Kind,
    arguments: dict[str, Any],
    home: Home,
    settings: PipelineSettings | None = None,
) -> LocalRun:
    """Run the ``kind`` pipeline here with ``arguments`` (its parameters).

    Tasks inherit this process's environment: ``DERMAOPS_HOME`` (made absolute) and
    ``MLFLOW_TRACKING_URI`` when set, else MLflow on sqlite under the home.

    Raises:
        PipelineFailedError: a task failed; the message names it.
    """
    root = home.pipelines.resolve()
    root.mkdir(parents=True, exist_ok=True)
    os.environ[HOME_ENV] = str(home.root.resolve())
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(root),
        enable_caching=True,
        cache_root=str(root / ".kfp_cache"),
    )
    pipeline = build_pipeline(kind, settings)
    here = {"deploy_target": "local", "checkpoints": str(home.root.resolve() / "checkpoints")}
    typed = typed_arguments(pipeline, {**here, **arguments})
    started = time.monotonic()
    try:
        pipeline(**typed)
    except RuntimeError as e:
        raise PipelineFailedError(_plain(str(e))) from e
    return LocalRun(kind, time.monotonic() - started, str(root))


def typed_arguments(pipeline: BaseComponent, arguments: dict[str, Any]) -> dict[str, Any]:
    """``arguments`` converted to the pipeline's parameter types (KFP refuses 0 for a float).

    Raises:
        ConfigError: an unknown parameter, or a value that is not of its parameter's type.
    """
    inputs = pipeline.component_spec.inputs or {}
    typed = {}
    for name, value in arguments.items():
        if name not in inputs:
            raise ConfigError(f"the pipeline has no parameter {name!r}; it has {', '.join(inputs)}")
        kind = inputs[name].type
        try:
            typed[name] = _CONVERTERS[kind](value) if kind in _CONVERTERS else value
        except (TypeError, ValueError) as e:
            raise ConfigError(f"parameter {name}={value!r} is not a {kind}") from e
    return typed


def _integer(value: Any) -> int:
    if isinstance(value, bool) or float(value) != int(float(value)):
        raise ValueError(value)
    return int(float(value))


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "false"):
        return str(value).lower() == "true"
    raise ValueError(value)


def _mapping(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(value)
    return value


_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "Float": float,
    "Integer": _integer,
    "Boolean": _boolean,
    "String": str,
    "Dict": _mapping,
}


def _plain(message: str) -> str:
    """KFP's local error without terminal colour codes."""
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", message)
