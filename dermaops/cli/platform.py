"""``dermaops pipeline ...`` and ``dermaops registry ...``: the KFP and MLflow layers.

Every command imports its layer inside its body, so no other command loads kfp or mlflow.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from dermaops.cli.options import ConfigOpt, ModelNameOpt, NamespaceOpt, ReleaseOpt
from dermaops.errors import ConfigError
from dermaops.settings import Home

pipeline_app = typer.Typer(help="Compile, run and submit the KFP pipelines.", no_args_is_help=True)
registry_app = typer.Typer(
    help="The MLflow model registry: versions, promotion, rollback.", no_args_is_help=True
)

KindOpt = Annotated[
    str, typer.Option("--kind", help="training, or retraining (feedback; must beat champion).")
]
ParamOpt = Annotated[
    list[str] | None,
    typer.Option("--param", help="Any pipeline parameter as NAME=VALUE (JSON values parsed)."),
]
ServeOnOpt = Annotated[
    str,
    typer.Option(
        "--serve-on",
        help="Where the champion is served, reconciled after the aliases move: local (the "
        "pointer `dermaops serve` reads), kubernetes (the chart's --release in --namespace), "
        "or none.",
    ),
]

GATE_FAILED, GATE_EXIT = "Inner task failed: 'gate'", 3  # a model stopped by the gate

# What `pipeline run --local` trains unless told otherwise: small enough for 2 CPU cores.
LOCAL_DEFAULTS: dict[str, Any] = {
    "n": 1500,
    "arch": "resnet18",
    "weights": "none",
    "image_size": 96,
    "epochs": 10,
    "batch_size": 32,
}


@pipeline_app.command("compile")
def pipeline_compile(
    out: Annotated[Path, typer.Option(help="Folder for the two YAML files.")] = Path(
        "pipelines/compiled"
    ),
    image: Annotated[str | None, typer.Option(help="Project image every task runs.")] = None,
    gpus: Annotated[int | None, typer.Option(help="GPUs for train, per node (0: CPU).")] = None,
    train_nodes: Annotated[
        int | None,
        typer.Option(min=1, help="Nodes for train: more than 1 trains on a Trainer TrainJob."),
    ] = None,
) -> None:
    """Write training_pipeline.yaml and retraining_pipeline.yaml for the KFP UI."""
    from dermaops.pipelines import PipelineSettings, compile_all
    from dermaops.settings import load_settings

    settings = load_settings(
        PipelineSettings, env_prefix="DERMAOPS_PIPELINE_",
        overrides={"image": image, "gpus": gpus, "train_nodes": train_nodes},
    )  # fmt: skip
    for path in compile_all(out, settings):
        typer.echo(f"wrote {path}")


@pipeline_app.command("trainjob")
def pipeline_trainjob(
    run_id: Annotated[str, typer.Option("--run-id", help="The pipeline run it trains for.")],
    nodes: Annotated[
        int | None,
        typer.Option(min=2, help="Training nodes, one pod each (default: the settings')."),
    ] = None,
    gpus_per_node: Annotated[
        int | None,
        typer.Option(min=0, help="Accelerators per node, 0: CPU nodes (default: the settings')."),
    ] = None,
    namespace: Annotated[
        str, typer.Option(help="Where the pipelines run (the chart's pipelines.namespace).")
    ] = "kubeflow",
    image: Annotated[
        str | None, typer.Option(help="Trainer image (default: the pipelines').")
    ] = None,
    runtime: Annotated[
        str | None,
        typer.Option(help="ClusterTrainingRuntime (default: the release's, <fullname>-torch)."),
    ] = None,
) -> None:
    """Print the TrainJob a train stage would create to train RUN_ID on NODES nodes, and the
    NetworkPolicy that lets only its own nodes reach each other (YAML)."""
    import yaml
    from pydantic import ValidationError

    from dermaops.pipelines import PipelineSettings
    from dermaops.settings import load_settings
    from dermaops.train.trainjob import network_policy, trainjob

    pipeline = load_settings(PipelineSettings, env_prefix="DERMAOPS_PIPELINE_")
    given = {"image": image, "runtime": runtime, "nodes": nodes, "gpus_per_node": gpus_per_node}
    try:
        s = pipeline.train_job(**{k: v for k, v in given.items() if v is not None and v != ""})
        docs = [trainjob(run_id, namespace, s), network_policy(run_id, namespace)]
    except (ValidationError, ValueError) as e:
        raise typer.BadParameter(str(e)) from e
    typer.echo(yaml.safe_dump_all(docs, sort_keys=False), nl=False)


@pipeline_app.command("run")
def pipeline_run(
    local: Annotated[bool, typer.Option("--local", help="Run here with KFP's local runner.")],
    kind: KindOpt = "training",
    data: Annotated[
        str, typer.Option(help="synthetic, a raw data folder, or isic2018/dataverse/kaggle.")
    ] = "synthetic",
    n: Annotated[int | None, typer.Option("--n", help="Generated images (synthetic).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs.")] = None,
    feedback: Annotated[
        Path | None, typer.Option(help="Feedback folder (retraining; default: the home's).")
    ] = None,
    param: ParamOpt = None,
) -> None:
    """Run a pipeline on this machine (exit 3: the quality gate stopped the model).

    MLflow is sqlite under DERMAOPS_HOME unless MLFLOW_TRACKING_URI is set; a promoted model is
    deployed to the local predictor.
    """
    if not local:
        raise ConfigError("only --local runs here; use `dermaops pipeline submit` for a cluster")
    from dermaops.pipelines.local import PipelineFailedError, run_local
    from dermaops.pipelines.training import KINDS

    if kind not in KINDS:
        raise ConfigError(f"--kind must be one of {', '.join(KINDS)}")
    home = Home.from_env()
    arguments = dict(LOCAL_DEFAULTS) | _data_arguments(data)
    arguments |= {k: v for k, v in {"n": n, "epochs": epochs}.items() if v is not None}
    if kind == "retraining":
        arguments["feedback"] = str((feedback or home.feedback).resolve())
    arguments |= _parse_params(param)
    started = int(time.time() * 1000)
    try:
        result = run_local(kind, arguments, home)
    except PipelineFailedError as e:
        _print_where(home, kind, started, str(home.pipelines.resolve()))
        if GATE_FAILED in str(e):
            typer.echo(f"error: {e}\nthe quality gate stopped this model (exit code 3)", err=True)
            raise typer.Exit(GATE_EXIT) from e
        raise
    typer.echo(f"\n{kind} pipeline finished in {result.seconds:.0f} s")
    _print_where(home, kind, started, result.pipeline_root)


@pipeline_app.command("submit")
def pipeline_submit(
    host: Annotated[str, typer.Option(help="KFP API endpoint, e.g. http://localhost:8080.")],
    kind: KindOpt = "training",
    experiment: Annotated[str, typer.Option(help="KFP experiment.")] = "dermaops",
    package: Annotated[
        Path | None, typer.Option(help="Compiled YAML (default: the committed one).")
    ] = None,
    daily_at: Annotated[
        str | None, typer.Option(help="Also schedule a daily recurring run at HH:MM (UTC).")
    ] = None,
    namespace: Annotated[str | None, typer.Option(help="Multi-user KFP namespace.")] = None,
    param: ParamOpt = None,
) -> None:
    """Submit a compiled pipeline to a KFP cluster as a run (and optionally a daily schedule)."""
    from dermaops.pipelines.submit import submit
    from dermaops.pipelines.training import COMPILED

    path = package or COMPILED / f"{kind}_pipeline.yaml"
    for line in submit(host, path, experiment, _parse_params(param), daily_at, namespace):
        typer.echo(line)


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


def _data_arguments(data: str) -> dict[str, Any]:
    if data == "synthetic":
        return {"source": "synthetic"}
    if data in ("isic2018", "dataverse", "kaggle"):
        return {"source": data}
    if not Path(data).is_dir():
        raise ConfigError(f"--data {data}: not synthetic, a public source, or an existing folder")
    return {"source": "path", "data_path": str(Path(data).resolve())}


def _parse_params(pairs: list[str] | None) -> dict[str, Any]:
    parsed: dict[str, Any] = {}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ConfigError(f"--param {pair!r}: expected NAME=VALUE")
        try:
            parsed[name] = json.loads(value)
        except json.JSONDecodeError:
            parsed[name] = value
    return parsed


def _print_where(home: Home, kind: str, since_ms: int, pipeline_root: str) -> None:
    from dermaops.registry import Registry
    from dermaops.registry.promotion import versions

    runs = sorted(Path(pipeline_root).glob(f"dermaops-{kind}-*"), key=lambda p: p.stat().st_mtime)
    outputs = runs[-1] if runs else Path(pipeline_root)
    reg = Registry()
    run = reg.latest_pipeline_run(kind, since_ms)
    if run is None:
        typer.echo(f"task outputs:    {outputs}")
        return
    champion = next((v for v in versions(reg) if "champion" in v["aliases"]), None)
    registered = reg.facts_of(run).registered_version or "-"
    typer.echo(f"MLflow run:      {run.info.run_id} ({reg.uri})")
    typer.echo(f"registered:      {reg.model_name} version {registered}")
    typer.echo(f"champion:        version {champion['version'] if champion else '-'}")
    typer.echo(f"report:          {outputs / 'evaluate' / 'report_html'} (HTML)")
    typer.echo(f"summary:         {outputs / 'notify' / 'summary'} (Markdown)")
    if registered != "-":
        typer.echo(f"model card:      {outputs / 'register' / 'card'} "
                   f"(or: dermaops registry card {registered})")  # fmt: skip
    if reg.local:
        typer.echo(f"open MLflow UI:  .venv/bin/mlflow ui --backend-store-uri {reg.uri}")


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
