"""The ``dermaops`` command: every group assembled, the log level, and user errors as one line.

Each group lives in its own module and imports the layer it drives inside the command, so
``dermaops data ...`` never loads torch, kfp, KServe or MLflow.
"""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

from dermaops.cli import data, monitoring, pipeline, registry, rollout, serving, train
from dermaops.errors import DermaOpsError
from dermaops.exit import skip_final_collection

log = logging.getLogger("dermaops")

app = typer.Typer(
    help="DermaOps: train, register, serve and watch a HAM10000 dermoscopy classifier.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
bench_app = typer.Typer(
    help="Benchmarks that print a ratio against a baseline.", no_args_is_help=True
)
app.add_typer(data.data_app, name="data")
app.add_typer(data.feedback_app, name="feedback")
app.add_typer(bench_app, name="bench")
app.add_typer(pipeline.pipeline_app, name="pipeline")
app.add_typer(registry.registry_app, name="registry")
app.add_typer(rollout.rollout_app, name="rollout")
app.add_typer(monitoring.monitor_app, name="monitor")
app.command("train")(train.train_command)
app.command("baseline")(train.baseline_command)
app.command("evaluate")(train.evaluate_command)
app.command("gate")(train.gate_command)
app.command("deploy")(registry.deploy)
app.command("serve")(serving.serve)
app.command("predict")(serving.predict)
app.command("traffic")(serving.traffic)
app.command("ui")(serving.ui)
bench_app.command("prepare")(data.bench_prepare)
bench_app.command("train")(train.bench_train)
bench_app.command("serve")(serving.bench_serve)
bench_app.command("soak")(serving.bench_soak)
bench_app.command("estimate")(train.bench_estimate)
bench_app.command("rollout")(rollout.bench_rollout)


@app.callback()
def _main(
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")] = "INFO",
) -> None:
    level = log_level.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise typer.BadParameter("choose DEBUG, INFO, WARNING or ERROR", param_hint="--log-level")
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLevelName(level)))


def main() -> None:
    """Entry point: user errors become one line on stderr and exit code 1."""
    skip_final_collection()
    try:
        app()
    except DermaOpsError as e:
        log.debug("failed", exc_info=True)
        typer.echo(f"error: {e}", err=True)
        sys.exit(1)
