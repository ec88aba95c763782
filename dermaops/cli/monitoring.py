"""``dermaops monitor drift|estimate|serve``: the monitoring layer (Evidently, the monitor's
service, the estimates).

Every command imports its layer inside its body, so no other command loads evidently or
FastAPI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dermaops.cli.options import NamespaceOpt, ReleaseOpt
from dermaops.deploy import REFERENCE_VERSION_ENV
from dermaops.errors import ConfigError
from dermaops.settings import Home

monitor_app = typer.Typer(
    help="What the served model sees: drift, estimates before labels, the monitor service.",
    no_args_is_help=True,
)
ReferenceOpt = Annotated[
    Path | None,
    typer.Option(
        help="reference_stats.csv, or a model folder holding one (default: the deployed model's).",
        exists=True,
    ),
]
ReferenceVersionOpt = Annotated[
    str,
    typer.Option(
        envvar=REFERENCE_VERSION_ENV,
        help="Registered version --reference belongs to; traffic from other versions is "
        "compared on image statistics only (default: the deployed model's, else unknown).",
    ),
]
LogDirOpt = Annotated[
    Path | None, typer.Option(help="Inference log folder (default: $DERMAOPS_HOME/inference).")
]


@monitor_app.command("drift")
def monitor_drift(
    reference: ReferenceOpt = None,
    reference_version: ReferenceVersionOpt = "",
    log_dir: LogDirOpt = None,
    window: Annotated[int | None, typer.Option(help="Most recent rows compared.")] = None,
    out: Annotated[
        Path | None, typer.Option(help="Report folder (default: $DERMAOPS_HOME/monitoring).")
    ] = None,
) -> None:
    """One Evidently drift report: HTML, a JSON summary, and the verdict (exit 0 either way)."""
    from dermaops.monitoring.drift import DriftSettings, deployed_reference, drift_job, read_window
    from dermaops.settings import load_settings

    home = Home.from_env()
    settings = load_settings(
        DriftSettings, env_prefix="DERMAOPS_DRIFT_", overrides={"window": window}
    )
    if reference is None:
        reference, reference_version = deployed_reference(home)
    current = read_window(log_dir or home.inference_log, settings.window)
    target = out or home.monitoring
    summary, _ = drift_job(reference, reference_version, current, settings, target)
    verdict = "DRIFT" if summary.drifted else "no drift"
    typer.echo(
        f"{verdict}: {summary.drift_share:.0%} of columns drifted "
        f"({', '.join(summary.drifted_columns) or 'none'}); {summary.current_rows} recent rows "
        f"against {summary.reference_rows} reference rows"
    )
    if summary.note:
        typer.echo(f"note: {summary.note}")
    typer.echo(f"report: {target / 'drift_report.html'}  summary: {target / 'drift_summary.json'}")


@monitor_app.command("estimate")
def monitor_estimate(
    reference: ReferenceOpt = None,
    reference_version: ReferenceVersionOpt = "",
    log_dir: LogDirOpt = None,
    window: Annotated[int | None, typer.Option(help="Latest answers of each version.")] = None,
    model_name: Annotated[
        str,
        typer.Option(
            "--model-name",
            help="The registered model whose versions are each corrected on their own "
            "calibration (fetched from the registry; empty: the reference's version only).",
        ),
    ] = "",
) -> None:
    """Each served version's performance estimated from its answers, before any label: balanced
    accuracy, macro-F1, melanoma sensitivity and specificity with 95% intervals, re-weighted to
    the window's estimated class priors (the reference's version, and with --model-name each
    registered version on its own calibration) and as plain CBPE."""
    from dermaops.evaluation.estimate import EstimateSettings
    from dermaops.evaluation.sources import Sources
    from dermaops.inference_log import read_records
    from dermaops.monitoring.drift import deployed_reference
    from dermaops.monitoring.estimates import estimate_each
    from dermaops.settings import load_settings

    home = Home.from_env()
    settings = load_settings(
        EstimateSettings, env_prefix="DERMAOPS_ESTIMATE_", overrides={"window": window}
    )
    if reference is None:
        reference, reference_version = deployed_reference(home)
    given = reference
    sources = Sources(model_name, lambda: (given, reference_version))
    if reference_version:
        sources(reference_version)  # a reference without calibration is refused here, loudly
    results = estimate_each(read_records(log_dir or home.inference_log), sources, settings)
    if not results:
        typer.echo("no answers in the inference log yet")
    for version, found in results.items():
        if isinstance(found, str):
            typer.echo(f"version {version}: no estimate ({found})")
            continue
        state = "reliable" if found.reliable else "UNRELIABLE: " + "; ".join(found.reasons)
        typer.echo(f"version {version}: {found.images} answers, {state}")
        for figures in (found.corrected, found.plain):
            if figures is None:
                continue
            typer.echo(f"  assuming {figures.assumption}")
            typer.echo(f"    melanoma share {figures.priors['mel']:.1%}")
            for name in ("balanced_accuracy", "f1_macro", "melanoma_sensitivity",
                         "melanoma_specificity"):  # fmt: skip
                f = getattr(figures, name)
                shown = "-" if f.value is None else f"{f.value:.3f}"
                bounds = f" (95% {f.lower:.3f} to {f.upper:.3f})" if f.lower is not None else ""
                typer.echo(f"    {name.replace('_', ' '):<22} {shown}{bounds}")
    typer.echo("Estimates from the model's own probabilities, not from labels; on generated "
               "images they say the method works, nothing about patients.")  # fmt: skip


@monitor_app.command("serve")
def monitor_serve(
    port: Annotated[int, typer.Option(help="HTTP port.")] = 8000,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    reference: ReferenceOpt = None,
    reference_version: ReferenceVersionOpt = "",
    registry_model: Annotated[
        str,
        typer.Option(
            help="Registered model (MLflow) to fetch a new version's reference from when "
            "traffic moves to it (default: none; the monitor keeps its reference)."
        ),
    ] = "",
    log_dir: LogDirOpt = None,
    interval: Annotated[float, typer.Option(help="Seconds between scheduled drift runs.")] = 900,
    cooldown: Annotated[
        float, typer.Option(help="Seconds before a second retraining run.")
    ] = 21600,
    retrain_command: Annotated[
        str | None, typer.Option(help="What a retraining trigger runs.")
    ] = None,
    reconcile_every: Annotated[
        float,
        typer.Option(
            min=0,
            help="Seconds between passes of the reconciler that serves --registry-model's "
            "champion (0: off).",
        ),
    ] = 0,
    serve_on: Annotated[
        str, typer.Option(help="Where the reconciler serves it: local or kubernetes.")
    ] = "local",
    release: ReleaseOpt = "dermaops",
    namespace: NamespaceOpt = "dermaops",
    feedback_dir: Annotated[
        Path | None,
        typer.Option(
            help="The clinicians' feedback store, scored per served version "
            "(default: none; DERMAOPS_LIVE_* set its window and intervals)."
        ),
    ] = None,
    prometheus_url: Annotated[
        str,
        typer.Option(help="Prometheus the rollout judge asks for the challenger's request counts."),
    ] = "",
) -> None:
    """The monitor: scheduled drift, /metrics, /report, Alertmanager's /alerts webhook, and
    optionally the reconciler that keeps the champion served (rolling a newer one out with
    DERMAOPS_ROLLOUT_ENABLED=true).

    POST paths need a bearer token: $DERMAOPS_MONITOR_TOKEN or the file in
    $DERMAOPS_MONITOR_TOKEN_FILE, else one made at $DERMAOPS_HOME/monitoring/token.
    """
    import uvicorn
    from pydantic import SecretStr

    from dermaops.evaluation.estimate import EstimateSettings
    from dermaops.evaluation.live import LiveSettings
    from dermaops.monitoring.drift import DriftSettings, deployed_reference
    from dermaops.monitoring.service import MonitorSettings, build_app
    from dermaops.rollout.plan import RolloutSettings
    from dermaops.settings import load_settings
    from dermaops.tokens import MONITOR_TOKEN_ENV, ensure_token, read_token

    if serve_on not in ("local", "kubernetes"):
        raise ConfigError(f"--serve-on {serve_on!r}: use local or kubernetes")
    if reconcile_every and not registry_model:
        raise ConfigError("--reconcile-every serves --registry-model's champion: give both")
    home = Home.from_env()
    token = read_token()
    if token is None:
        token_file = home.monitoring / "token"
        token = ensure_token(token_file)
        typer.echo(f"no {MONITOR_TOKEN_ENV}: the POST paths take the bearer token in {token_file}")
    if reference is None:
        reference, reference_version = deployed_reference(home)
    settings = MonitorSettings(
        token=SecretStr(token),
        drift=load_settings(DriftSettings, env_prefix="DERMAOPS_DRIFT_"),
        reference=str(reference),
        reference_version=reference_version,
        registry_model=registry_model,
        inference_log=str(log_dir or home.inference_log),
        out=str(home.monitoring),
        interval_s=interval,
        cooldown_s=cooldown,
        reconcile_every_s=reconcile_every,
        feedback_dir=str(feedback_dir or ""),
        live=load_settings(LiveSettings, env_prefix="DERMAOPS_LIVE_"),
        rollout=load_settings(RolloutSettings, env_prefix="DERMAOPS_ROLLOUT_"),
        estimate=load_settings(EstimateSettings, env_prefix="DERMAOPS_ESTIMATE_"),
        prometheus_url=prometheus_url,
        serve_on=serve_on,
        release=release,
        namespace=namespace,
        **({"retrain_command": retrain_command} if retrain_command else {}),
    )
    uvicorn.run(build_app(settings), host=host, port=port, log_level="info")
