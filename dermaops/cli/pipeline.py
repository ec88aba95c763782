"""``dermaops pipeline ...``: the KFP layer (compile, run on the local runner, submit).

Every command imports its layer inside its body, so no other command loads kfp.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from dermaops.errors import ConfigError
from dermaops.settings import Home

pipeline_app = typer.Typer(help="Compile, run and submit the KFP pipelines.", no_args_is_help=True)

KindOpt = Annotated[
    str, typer.Option("--kind", help="training, or retraining (feedback; must beat champion).")
]
ParamOpt = Annotated[
    list[str] | None,
    typer.Option("--param", help="Any pipeline parameter as NAME=VALUE (JSON values parsed)."),
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
