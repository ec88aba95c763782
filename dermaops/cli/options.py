"""Options more than one command group takes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config", exists=True, dir_okay=False, help="YAML settings file (below env and flags)."
    ),
]
WorkersOpt = Annotated[int | None, typer.Option(help="Worker processes (default: all cores).")]
ModelNameOpt = Annotated[str, typer.Option("--model-name", help="The registered model.")]
NamespaceOpt = Annotated[str, typer.Option(help="Namespace of the chart's release.")]
ReleaseOpt = Annotated[str, typer.Option(help="The Helm release of the chart.")]
