"""``dermaops data ...``, ``dermaops feedback purge`` and ``dermaops bench prepare``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from dermaops.cli.options import ConfigOpt, WorkersOpt
from dermaops.settings import Home, load_settings

data_app = typer.Typer(help="Fetch, generate and prepare HAM10000 data.", no_args_is_help=True)
feedback_app = typer.Typer(help="Clinician feedback and retained images.", no_args_is_help=True)


@data_app.command("synth")
def data_synth(
    out: Annotated[
        Path | None, typer.Option(help="Folder to write (default: $DERMAOPS_HOME/data/synth).")
    ] = None,
    n: Annotated[int | None, typer.Option("--n", help="Number of images (default 1000).")] = None,
    seed: Annotated[int | None, typer.Option(help="Same seed, same bytes (default 0).")] = None,
    workers: WorkersOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Generate a set in HAM10000's exact Kaggle layout (GENERATED data, never clinical)."""
    from dermaops.data.synth import SynthSettings, synthesize

    settings = load_settings(
        SynthSettings, env_prefix="DERMAOPS_SYNTH_", config_file=config,
        overrides={"n": n, "seed": seed, "workers": workers},
    )  # fmt: skip
    target = out or Home.from_env().data / "synth"
    metadata = synthesize(target, settings)
    typer.echo(f"wrote {len(metadata)} generated images to {target}")


@data_app.command("prepare")
def data_prepare(
    raw: Annotated[
        Path, typer.Option(help="Raw data folder (Kaggle, Dataverse or ISIC 2018 layout).")
    ],
    out: Annotated[
        Path | None, typer.Option(help="Output folder (default: $DERMAOPS_HOME/data/prepared).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Redo even when the inputs are unchanged.")] = False,
    cache_height: Annotated[
        int | None, typer.Option(help="Cached image height (default 225).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Split seed (default 42).")] = None,
    workers: WorkersOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Validate, split 80/10/10 by lesion, decode once into a uint8 cache, and report."""
    from dermaops.data.prepare import PrepareSettings, prepare

    settings = load_settings(
        PrepareSettings, env_prefix="DERMAOPS_PREPARE_", config_file=config,
        overrides={"cache_height": cache_height, "seed": seed, "workers": workers},
    )  # fmt: skip
    result = prepare(raw, out or Home.from_env().data / "prepared", settings, force=force)
    report = result.report
    verb = "up to date" if result.skipped else "prepared"
    typer.echo(
        f"{verb}: {result.out} ({report['images']['prepared']} images, "
        f"{report['images']['quarantined']} quarantined, "
        f"{report['split_check']['shared_lesions']} lesions shared between splits)"
    )
    if report["dataset"]["generated"]:
        typer.echo(report["dataset"]["notice"])


@data_app.command("fetch")
def data_fetch(
    source: Annotated[str, typer.Option(help="isic2018, dataverse or kaggle.")],
    out: Annotated[
        Path | None, typer.Option(help="Raw data folder (default: $DERMAOPS_HOME/data/SOURCE).")
    ] = None,
    base_url: Annotated[str | None, typer.Option(help="A mirror with the source's paths.")] = None,
    checksums: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, help="sha256sum-style file to verify against."),
    ] = None,
    retries: Annotated[int, typer.Option(min=1, help="Tries per file.")] = 6,
) -> None:
    """Download a public HAM10000 source (resumable, verified) and extract it safely."""
    from dermaops.data.download import RetryPolicy
    from dermaops.data.fetch import fetch
    from dermaops.data.sources import SOURCES

    if source not in SOURCES:
        raise typer.BadParameter(f"choose one of {', '.join(SOURCES)}", param_hint="--source")
    home = Home.from_env()
    target = out or home.data / source
    fetch(source, target, home.downloads, base_url, checksums, RetryPolicy(attempts=retries))
    typer.echo(f"{source} is in {target}; next: dermaops data prepare --raw {target}")


@feedback_app.command("purge")
def feedback_purge(
    older_than: Annotated[
        float, typer.Option(min=0, help="Delete what is older than this many days.")
    ],
    dry_run: Annotated[bool, typer.Option(help="Only count what would go.")] = False,
) -> None:
    """Delete feedback rows and images, and retained served images, past their retention."""
    from dermaops.data.feedback import purge_feedback
    from dermaops.data.privacy import purge

    home = Home.from_env()
    rows = purge_feedback(home.feedback, older_than, dry_run)
    retained = purge(home.root / "retained", older_than, dry_run)
    verb = "would delete" if dry_run else "deleted"
    typer.echo(f"{verb} {rows} feedback rows with their images ({home.feedback}) and "
               f"{retained.files} retained images, {retained.bytes / 1e6:.1f} MB "
               f"({home.root / 'retained'}), older than {older_than:g} days")  # fmt: skip


def bench_prepare(
    raw: Annotated[
        Path | None, typer.Option(help="Raw data to time (default: generate --n images).")
    ] = None,
    n: Annotated[
        int, typer.Option("--n", help="Images to generate when --raw is not given.")
    ] = 1000,
    workers: WorkersOpt = None,
    json_out: Annotated[
        Path | None,
        typer.Option("--json", help="Result file (default: $DERMAOPS_HOME/bench/prepare.json)."),
    ] = None,
) -> None:
    """Images/s of prepare against a plain full-decode PIL loop, on the same files."""
    from dermaops.bench import bench_prepare as run
    from dermaops.bench import write_result
    from dermaops.data.prepare import PrepareSettings

    settings = load_settings(
        PrepareSettings, env_prefix="DERMAOPS_PREPARE_", overrides={"workers": workers}
    )
    result = run(raw, n, settings)
    path = json_out or Home.from_env().bench / "prepare.json"
    result = write_result(result, path)
    typer.echo(json.dumps(result, indent=2))
    typer.echo(f"prepare is {result['ratio']}x the plain PIL loop ({path})")
