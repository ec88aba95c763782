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
