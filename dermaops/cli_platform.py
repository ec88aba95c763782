"""``dermaops pipeline ...`` and ``dermaops registry ...``: the KFP and MLflow layers.

Kept apart from :mod:`dermaops.cli` so that data and training commands never load kfp or
mlflow; every command imports its layer inside its body.
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
monitor_app = typer.Typer(
    help="Drift of live traffic against the training data.", no_args_is_help=True
)
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
ModelNameOpt = Annotated[str, typer.Option("--model-name", help="The registered model.")]

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
    gpus: Annotated[int | None, typer.Option(help="GPUs for train (0: CPU nodes).")] = None,
) -> None:
    """Write training_pipeline.yaml and retraining_pipeline.yaml for the KFP UI."""
    from dermaops.pipelines import PipelineSettings, compile_all
    from dermaops.settings import load_settings

    settings = load_settings(
        PipelineSettings, env_prefix="DERMAOPS_PIPELINE_", overrides={"image": image, "gpus": gpus}
    )
    for path in compile_all(out, settings):
        typer.echo(f"wrote {path}")


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


@registry_app.command("promote")
def registry_promote(
    version: Annotated[str, typer.Argument(help="The version to make champion.")],
    model_name: ModelNameOpt = "dermaops",
    must_beat: Annotated[
        bool, typer.Option(help="Require a higher macro-F1 than champion.")
    ] = False,
) -> None:
    """Promote a version by hand, through the same gate and champion comparison."""
    from dermaops.gate import GateThresholds
    from dermaops.registry import Registry, RegistrySettings
    from dermaops.registry.promotion import promote_stored

    reg = Registry(RegistrySettings(model_name=model_name))
    result = promote_stored(reg, version, GateThresholds(), must_beat)
    if not result.promoted:
        raise ConfigError(f"version {version} was not promoted: {'; '.join(result.reasons)}")
    typer.echo(f"version {version} is champion (was {result.champion_before or 'none'})")


@registry_app.command("rollback")
def registry_rollback(
    model_name: ModelNameOpt = "dermaops",
    reason: Annotated[str, typer.Option(help="Why, for the audit tags.")] = "",
) -> None:
    """Point champion back at the previous champion; both versions record it."""
    from dermaops.registry import Registry, RegistrySettings
    from dermaops.registry.promotion import rollback

    was, now = rollback(Registry(RegistrySettings(model_name=model_name)), reason)
    typer.echo(f"champion rolled back from version {was} to version {now}")


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
    registered = run.data.tags.get("dermaops.fact.registered_version", "-")
    typer.echo(f"MLflow run:      {run.info.run_id} ({reg.uri})")
    typer.echo(f"registered:      {reg.model_name} version {registered}")
    typer.echo(f"champion:        version {champion['version'] if champion else '-'}")
    typer.echo(f"report:          {outputs / 'evaluate' / 'report_html'} (HTML)")
    typer.echo(f"summary:         {outputs / 'notify' / 'summary'} (Markdown)")
    if reg.local:
        typer.echo(f"open MLflow UI:  .venv/bin/mlflow ui --backend-store-uri {reg.uri}")


def serve(
    model_uri: Annotated[
        str,
        typer.Option(help="Folder, file://, or models:/NAME@ALIAS (default: the deployed one)."),
    ] = "",
    http_port: Annotated[int, typer.Option(help="HTTP port (binds all interfaces).")] = 8080,
    grpc_port: Annotated[int, typer.Option(help="gRPC port (0: no gRPC).")] = 0,
    backend: Annotated[str, typer.Option(help="auto, onnx, torch or cuda.")] = "auto",
    model_name: ModelNameOpt = "dermaops",
) -> None:
    """Serve a model with the KServe predictor (v1, v2, explain, /metrics) until stopped."""
    from dermaops.serving.__main__ import main as serve_main

    argv = ["--model_name", model_name, "--http_port", str(http_port), "--backend", backend]
    argv += (
        ["--enable_grpc", "true", "--grpc_port", str(grpc_port)]
        if grpc_port
        else ["--enable_grpc", "false"]
    )
    if model_uri:
        argv += ["--model_uri", model_uri]
    serve_main(argv)


def predict(
    images: Annotated[list[Path], typer.Argument(help="JPEG or PNG files.", exists=True)],
    url: Annotated[str, typer.Option(help="The predictor.")] = "http://127.0.0.1:8080",
    model_name: ModelNameOpt = "dermaops",
    as_json: Annotated[bool, typer.Option("--json", help="Print the server's JSON.")] = False,
    wait: Annotated[float, typer.Option(help="Seconds to wait for the predictor to be ready.")] = 0,
) -> None:
    """Classify images with a running predictor (v1 protocol) and print a table."""
    import base64

    import httpx

    from dermaops.errors import DermaOpsError

    if wait:
        _wait_ready(url, wait)
    body = {"instances": [{"image_bytes": {"b64": base64.b64encode(p.read_bytes()).decode()}}
                          for p in images]}  # fmt: skip
    try:
        response = httpx.post(f"{url}/v1/models/{model_name}:predict", json=body, timeout=60)
    except httpx.HTTPError as e:
        raise DermaOpsError(f"no predictor at {url}: {e}") from e
    if response.status_code != 200:
        raise DermaOpsError(
            f"the predictor refused the request ({response.status_code}): {response.text}"
        )
    answer = response.json()
    if as_json:
        typer.echo(json.dumps(answer, indent=2))
        return
    typer.echo(f"model {answer['model_name']} version {answer['model_version']}")
    for path, p in zip(images, answer["predictions"], strict=True):
        top = ", ".join(f"{t['dx']} {t['probability']:.1%}" for t in p["top_k"])
        mel = p["melanoma"]
        flag = "MELANOMA FLAG" if mel["flag"] else "no melanoma flag"
        typer.echo(f"{path.name}: {top}; {flag} (P(mel) {mel['probability']:.3f}, "
                   f"threshold {mel['threshold']:.3f})")  # fmt: skip


def _wait_ready(url: str, seconds: float) -> None:
    import httpx

    from dermaops.errors import DermaOpsError

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise DermaOpsError(f"the predictor at {url} was not ready within {seconds:.0f} s")


def bench_serve(
    model_uri: Annotated[
        str,
        typer.Option(help="Folder, file://, or models:/NAME@ALIAS (default: the deployed one)."),
    ] = "",
    requests: Annotated[int, typer.Option(min=10, help="Requests at each concurrency.")] = 200,
    concurrency: Annotated[str, typer.Option(help="Comma-separated levels.")] = "1,8,32",
    backend: Annotated[str, typer.Option(help="auto, onnx, torch or cuda.")] = "auto",
    json_out: Annotated[
        Path | None,
        typer.Option("--json", help="Result file (default: $DERMAOPS_HOME/bench/serve.json)."),
    ] = None,
) -> None:
    """p50/p99 and images/s of the real predictor on loopback vs the same model in process."""
    from dermaops.bench import write_result
    from dermaops.serving.bench import bench_serve as run

    try:
        levels = tuple(int(c) for c in concurrency.split(","))
    except ValueError as e:
        raise ConfigError(f"--concurrency {concurrency!r}: expected numbers like 1,8,32") from e
    home = Home.from_env()
    result = run(model_uri, home, requests, levels, backend)
    path = json_out or home.bench / "serve.json"
    write_result(result, path)
    typer.echo(json.dumps(result, indent=2))
    typer.echo(
        f"served p50 is {result['ratio_p50_vs_in_process']}x the in-process decode + forward "
        f"({result['backend']}); {result['errors']} errors ({path})"
    )


@monitor_app.command("drift")
def monitor_drift(
    reference: Annotated[
        Path | None,
        typer.Option(help="reference_stats.csv (default: the deployed model's).", exists=True),
    ] = None,
    log_dir: Annotated[
        Path | None, typer.Option(help="Inference log folder (default: $DERMAOPS_HOME/inference).")
    ] = None,
    window: Annotated[int | None, typer.Option(help="Most recent rows compared.")] = None,
    out: Annotated[
        Path | None, typer.Option(help="Report folder (default: $DERMAOPS_HOME/monitoring).")
    ] = None,
) -> None:
    """One Evidently drift report: HTML, a JSON summary, and the verdict (exit 0 either way)."""
    from dermaops.monitoring.drift import (
        DriftSettings,
        compute_drift,
        deployed_reference,
        read_reference,
        read_window,
    )
    from dermaops.settings import load_settings

    home = Home.from_env()
    settings = load_settings(
        DriftSettings, env_prefix="DERMAOPS_DRIFT_", overrides={"window": window}
    )
    ref = read_reference(reference or deployed_reference(home), settings.reference_split)
    current = read_window(log_dir or home.inference_log, settings.window)
    target = out or home.root / "monitoring"
    summary = compute_drift(ref, current, settings, target)
    verdict = "DRIFT" if summary.drifted else "no drift"
    typer.echo(
        f"{verdict}: {summary.drift_share:.0%} of columns drifted "
        f"({', '.join(summary.drifted_columns) or 'none'}); {summary.current_rows} recent rows "
        f"against {summary.reference_rows} reference rows"
    )
    typer.echo(f"report: {target / 'drift_report.html'}  summary: {target / 'drift_summary.json'}")


@monitor_app.command("serve")
def monitor_serve(
    port: Annotated[int, typer.Option(help="HTTP port.")] = 8000,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    reference: Annotated[
        Path | None,
        typer.Option(help="reference_stats.csv (default: the deployed model's).", exists=True),
    ] = None,
    log_dir: Annotated[
        Path | None, typer.Option(help="Inference log folder (default: $DERMAOPS_HOME/inference).")
    ] = None,
    interval: Annotated[float, typer.Option(help="Seconds between scheduled drift runs.")] = 900,
    cooldown: Annotated[
        float, typer.Option(help="Seconds before a second retraining run.")
    ] = 21600,
    retrain_command: Annotated[
        str | None, typer.Option(help="What a retraining trigger runs.")
    ] = None,
) -> None:
    """The monitor: scheduled drift, /metrics, /report, and Alertmanager's /alerts webhook."""
    import uvicorn

    from dermaops.monitoring.drift import deployed_reference
    from dermaops.monitoring.service import MonitorSettings, build_app

    home = Home.from_env()
    settings = MonitorSettings(
        reference=str(reference or deployed_reference(home)),
        inference_log=str(log_dir or home.inference_log),
        out=str(home.root / "monitoring"),
        interval_s=interval,
        cooldown_s=cooldown,
        **({"retrain_command": retrain_command} if retrain_command else {}),
    )
    uvicorn.run(build_app(settings), host=host, port=port, log_level="info")
