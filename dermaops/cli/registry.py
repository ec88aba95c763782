"""``dermaops registry ...`` and ``dermaops deploy``: the MLflow registry and where its
champion is served.

Every command imports its layer inside its body, so no other command loads mlflow.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from dermaops.cli.options import ConfigOpt, ModelNameOpt, NamespaceOpt, ReleaseOpt
from dermaops.errors import ConfigError

registry_app = typer.Typer(
    help="The MLflow model registry: versions, promotion, rollback.", no_args_is_help=True
)

ServeOnOpt = Annotated[
    str,
    typer.Option(
        "--serve-on",
        help="Where the champion is served, reconciled after the aliases move: local (the "
        "pointer `dermaops serve` reads), kubernetes (the chart's --release in --namespace), "
        "or none.",
    ),
]


@registry_app.command("list")
def registry_list(
    model_name: ModelNameOpt = "dermaops",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Every version with its aliases, headline metrics and last audit event."""
    from dermaops.registry import Registry, RegistrySettings
    from dermaops.registry.promotion import versions

    rows = versions(Registry(RegistrySettings(model_name=model_name)))
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo(f"no versions of {model_name} yet: run `dermaops pipeline run --local`")
    for r in rows:
        aliases = ",".join(r["aliases"]) or "-"
        typer.echo(
            f"v{r['version']:<4} {aliases:<20} macro-F1 {r['f1_macro'] or '?':<7} "
            f"mel-sens {r['melanoma_sensitivity'] or '?':<7} {r['created']}  {r['last_event']}"
        )


@registry_app.command("register")
def registry_register(
    run: Annotated[
        Path, typer.Option(exists=True, file_okay=False, help="A run folder from `dermaops train`.")
    ],
    eval_dir: Annotated[
        Path,
        typer.Option(
            "--eval", exists=True, file_okay=False, help="Its evaluation from `dermaops evaluate`."
        ),
    ],
    data: Annotated[
        Path, typer.Option(exists=True, file_okay=False, help="The prepared set it was scored on.")
    ],
    baseline: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            file_okay=False,
            help="The baseline's evaluation on the same set (`dermaops baseline`).",
        ),
    ] = None,
    model_name: ModelNameOpt = "dermaops",
    config: ConfigOpt = None,
) -> None:
    """Register a run trained and evaluated by hand, as the pipeline's register stage does,
    after its quality gate (DERMAOPS_GATE_*); exit 3 with the reasons when it fails. Promote
    it with `registry promote`."""
    from dermaops.evaluation.gate import GateFailedError, GateThresholds
    from dermaops.registry import Registry, RegistrySettings
    from dermaops.registry.model import register_by_hand
    from dermaops.settings import load_settings

    thresholds = load_settings(GateThresholds, env_prefix="DERMAOPS_GATE_", config_file=config)
    reg = Registry(RegistrySettings(model_name=model_name))
    try:
        version = register_by_hand(reg, run, eval_dir, data, baseline, thresholds)
    except GateFailedError as e:
        for reason in e.reasons:
            typer.echo(f"gate failed: {reason}", err=True)
        raise typer.Exit(3) from e
    typer.echo(f"registered {model_name} version {version} (gate: {thresholds.model_dump()}); "
               f"promote it with: dermaops registry promote {version}")  # fmt: skip


@registry_app.command("promote")
def registry_promote(
    version: Annotated[str, typer.Argument(help="The version to make champion.")],
    model_name: ModelNameOpt = "dermaops",
    must_beat: Annotated[
        bool, typer.Option(help="Require a higher macro-F1 than champion.")
    ] = False,
    serve_on: ServeOnOpt = "local",
    release: ReleaseOpt = "dermaops",
    namespace: NamespaceOpt = "dermaops",
) -> None:
    """Promote a version by hand, through the gate the pipeline that made it recorded and the
    champion comparison, then serve the champion."""
    from dermaops.registry import Registry, RegistrySettings
    from dermaops.registry.promotion import promote_stored

    reg = Registry(RegistrySettings(model_name=model_name))
    result = promote_stored(reg, version, None, must_beat)
    if not result.promoted:
        raise ConfigError(f"version {version} was not promoted: {'; '.join(result.reasons)}")
    typer.echo(f"version {version} is champion (was {result.champion_before or 'none'})")
    _reconcile(reg, serve_on, release, namespace)


@registry_app.command("rollback")
def registry_rollback(
    model_name: ModelNameOpt = "dermaops",
    reason: Annotated[str, typer.Option(help="Why, for the audit tags.")] = "",
    to: Annotated[
        str | None,
        typer.Option("--to", help="Any earlier champion (default: the previous one)."),
    ] = None,
    serve_on: ServeOnOpt = "local",
    release: ReleaseOpt = "dermaops",
    namespace: NamespaceOpt = "dermaops",
) -> None:
    """Point champion back at the previous champion, or --to any earlier one, through the gate
    of its own metrics (both versions record it), then serve it."""
    from dermaops.registry import Registry, RegistrySettings
    from dermaops.registry.promotion import rollback

    reg = Registry(RegistrySettings(model_name=model_name))
    was, now = rollback(reg, reason, to)
    typer.echo(f"champion rolled back from version {was} to version {now}")
    _reconcile(reg, serve_on, release, namespace)


@registry_app.command("reconcile")
def registry_reconcile(
    model_name: ModelNameOpt = "dermaops",
    serve_on: ServeOnOpt = "local",
    release: ReleaseOpt = "dermaops",
    namespace: NamespaceOpt = "dermaops",
) -> None:
    """Serve the champion where something else is served (after a failed deploy, say); exit 1
    when it cannot be."""
    from dermaops.registry import Registry, RegistrySettings

    if serve_on == "none":
        raise ConfigError("--serve-on none: reconcile needs local or kubernetes")
    _reconcile(Registry(RegistrySettings(model_name=model_name)), serve_on, release, namespace)


def _reconcile(reg: Any, serve_on: str, release: str, namespace: str) -> None:
    """Serve the champion; with ``DERMAOPS_ROLLOUT_ENABLED``, a newer one is rolled out."""
    from dermaops.cli.rollout import driver
    from dermaops.registry.reconcile import reconcile

    if serve_on == "none":
        return
    rollouts = driver(reg.model_name, serve_on, release, namespace, None, None, None)
    done = reconcile(reg, rollouts.serving, rollouts)
    typer.echo(f"{rollouts.serving.where}: {done.action}")


@registry_app.command("card")
def registry_card(
    version: Annotated[str, typer.Argument(help="A registered version, e.g. 3.")],
    model_name: ModelNameOpt = "dermaops",
    out: Annotated[
        Path | None, typer.Option(help="Write model_card.md and .html here instead of printing.")
    ] = None,
) -> None:
    """The model card of a registered version: provenance, metrics, subgroups, limitations."""
    import shutil
    import tempfile

    from dermaops.registry import Registry, RegistrySettings
    from dermaops.registry.card import fetch_card

    reg = Registry(RegistrySettings(model_name=model_name))
    with tempfile.TemporaryDirectory() as tmp:
        card = fetch_card(reg, version, Path(tmp))
        if out is None:
            typer.echo(card.read_text())
            return
        out.mkdir(parents=True, exist_ok=True)
        for path in card.parent.iterdir():
            shutil.copy2(path, out / path.name)
    typer.echo(f"wrote {out / card.name} and {out / 'model_card.html'}")


def deploy(
    version: Annotated[str, typer.Argument(help="The registered version to serve, e.g. 3.")],
    model_name: ModelNameOpt = "dermaops",
    namespace: NamespaceOpt = "dermaops",
    release: ReleaseOpt = "dermaops",
    serve_on: Annotated[
        str,
        typer.Option(
            "--serve-on",
            help="kubernetes (the chart's --release in --namespace) or local (the pointer "
            "`dermaops serve` reads).",
        ),
    ] = "kubernetes",
    mode: Annotated[
        str | None,
        typer.Option(
            help="kserve (InferenceService) or deployment (kserve.enabled=false); default: "
            "what the cluster holds, else kserve."
        ),
    ] = None,
    canary: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=100,
            help="The new version's share of traffic (KServe, either mode; "
            "without KServe, the chart's canary Deployment: predictor.canary.enabled).",
        ),
    ] = None,
    storage_uri: Annotated[
        str,
        typer.Option(help="The version's files in the artifact store (default: the registry's)."),
    ] = "",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the JSON patches; send nothing.")
    ] = False,
) -> None:
    """Serve a version now: on the cluster, patch the storage URI, version and canary of the
    chart's predictor and monitor (JSON patches guarded by tests of the chart's layout), under
    the promotion lock, as the reconciler does. The reconciler serves the champion again where
    the version is not the champion: promote it to keep it served."""
    from dermaops.deploy import MODES
    from dermaops.registry import Registry, RegistrySettings
    from dermaops.registry.client import alias_version
    from dermaops.registry.model import CHAMPION
    from dermaops.registry.serving import ClusterServing, deploy_version, serving_for

    expected = next((m for m in MODES if m == mode), None)
    if mode is not None and expected is None:
        raise ConfigError(f"--mode {mode!r}: use one of {', '.join(MODES)}")
    serving = serving_for(serve_on, release=release, namespace=namespace, canary_percent=canary,
                          mode=expected)  # fmt: skip
    reg = Registry(RegistrySettings(model_name=model_name))
    if dry_run:
        if not isinstance(serving, ClusterServing):
            raise ConfigError("--dry-run shows the JSON patches of --serve-on kubernetes")
        for patch in serving.plan(reg, version, storage_uri):
            typer.echo(json.dumps(patch.as_dict()))
        return
    done = deploy_version(reg, serving, version, storage_uri)
    typer.echo(f"{done.action}: version {version} (was {done.was or 'nothing'})")
    champion = alias_version(reg, CHAMPION)
    if champion is not None and champion != version:
        typer.echo(f"note: the champion is version {champion}; the reconciler serves it again "
                   f"unless version {version} is promoted")  # fmt: skip
