"""``dermaops serve|predict|bench serve|bench soak|monitor ...``: the KServe and monitoring layers.

Every command imports its layer inside its body, so no other command loads kserve, evidently
or FastAPI.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from dermaops.cli.options import ModelNameOpt, NamespaceOpt, ReleaseOpt
from dermaops.deploy import REFERENCE_VERSION_ENV
from dermaops.errors import ConfigError
from dermaops.settings import Home

monitor_app = typer.Typer(
    help="Drift of live traffic against the training data.", no_args_is_help=True
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
ModelUriOpt = Annotated[
    str, typer.Option(help="Folder, file://, or models:/NAME@ALIAS (default: the deployed one).")
]
BackendOpt = Annotated[str, typer.Option(help="auto, onnx, torch or cuda.")]
PrecisionOpt = Annotated[
    str,
    typer.Option(help="auto, fp32 or int8 (ONNX; auto: INT8 where the registration kept it)."),
]
LogDirOpt = Annotated[
    Path | None, typer.Option(help="Inference log folder (default: $DERMAOPS_HOME/inference).")
]


def serve(
    model_uri: ModelUriOpt = "",
    http_port: Annotated[int, typer.Option(help="HTTP port (binds all interfaces).")] = 8080,
    grpc_port: Annotated[int, typer.Option(help="gRPC port (0: no gRPC).")] = 0,
    backend: BackendOpt = "auto",
    precision: PrecisionOpt = "auto",
    model_name: ModelNameOpt = "dermaops",
) -> None:
    """Serve a model with the KServe predictor (v1, v2, explain, /metrics) until stopped."""
    from dermaops.serving.__main__ import main as serve_main

    argv = ["--model_name", model_name, "--http_port", str(http_port), "--backend", backend,
            "--precision", precision]  # fmt: skip
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
    from dermaops.client import PredictorClient

    if wait:
        from dermaops.net import wait_until_ready

        wait_until_ready(f"{url}/v2/health/ready", wait)
    with PredictorClient(url, model_name) as client:
        answer = client.predict([p.read_bytes() for p in images])
    if as_json:
        typer.echo(answer.model_dump_json(indent=2))
        return
    typer.echo(f"model {answer.model_name} version {answer.model_version}")
    for path, p in zip(images, answer.predictions, strict=True):
        top = ", ".join(f"{t.dx} {t.probability:.1%}" for t in p.top_k)
        mel = p.melanoma
        flag = "MELANOMA FLAG" if mel.flag else "no melanoma flag"
        line = (f"{path.name}: {top}; {flag} (P(mel) {mel.probability:.3f}, "
                f"threshold {mel.threshold:.3f})")  # fmt: skip
        if p.in_distribution is False and p.ood is not None:  # the guard: unlike training images
            line = (f"{path.name}: OUT OF DISTRIBUTION (guard score {p.ood.score:.4g} above "
                    f"{p.ood.threshold:.4g}): not judged; the model would say {top}")  # fmt: skip
        typer.echo(line)


def traffic(
    folder: Annotated[
        Path,
        typer.Argument(help="Folder searched for JPEG/PNG files.", exists=True, file_okay=False),
    ],
    url: Annotated[str, typer.Option(help="The predictor.")] = "http://127.0.0.1:8080",
    n: Annotated[int, typer.Option(min=1, help="Images to send (the first N, sorted).")] = 60,
    shifted: Annotated[
        bool, typer.Option(help="Darker, blurred and bluer: what drift looks like.")
    ] = False,
    model_name: ModelNameOpt = "dermaops",
    wait: Annotated[float, typer.Option(help="Seconds to wait for the predictor to be ready.")] = 0,
) -> None:
    """Send images one request each to a running predictor (for the demo and drift checks)."""
    from dermaops.errors import DermaOpsError
    from dermaops.traffic import send

    images = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[
        :n
    ]
    if not images:
        raise ConfigError(f"no JPEG or PNG files under {folder}")
    if wait:
        from dermaops.net import wait_until_ready

        wait_until_ready(f"{url}/v2/health/ready", wait)
    result = send(url, images, shifted, model_name)
    kind = "shifted " if shifted else ""
    typer.echo(f"sent {result.sent} {kind}images to {url}: {result.sent - result.failed} answered")
    if result.failed:
        raise DermaOpsError(f"{result.failed} requests refused: " + "; ".join(result.errors))


def ui(
    predictor_url: Annotated[str, typer.Option(help="The predictor.")] = "http://127.0.0.1:8080",
    port: Annotated[int, typer.Option(help="HTTP port of the page.")] = 8501,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    model_name: ModelNameOpt = "dermaops",
    feedback_dir: Annotated[
        Path | None, typer.Option(help="Feedback store (default: $DERMAOPS_HOME/feedback).")
    ] = None,
    max_image_bytes: Annotated[
        int,
        typer.Option(
            min=0,
            envvar="DERMAOPS_UI_MAX_IMAGE_BYTES",
            help="The predictor's image limit (its DERMAOPS_SERVING_MAX_IMAGE_BYTES); uploads "
            "over it are refused on the page (0: the predictor's default).",
        ),
    ] = 0,
) -> None:
    """The clinician page: upload an image, see the answer and Grad-CAM, send a diagnosis."""
    import importlib.util
    import os
    import sys

    spec = importlib.util.find_spec("dermaops.ui.app")
    if spec is None or spec.origin is None:
        raise ConfigError("dermaops.ui is not installed: pip install -e . (or the ui image)")
    from dermaops.imaging import ImageLimits
    from dermaops.ui.client import upload_limit_mb

    app = Path(spec.origin)
    store = feedback_dir or Home.from_env().feedback
    max_image_bytes = max_image_bytes or ImageLimits.max_bytes
    upload_mb = upload_limit_mb(max_image_bytes)  # Streamlit's unit; the page checks the bytes
    command = [sys.executable, "-m", "streamlit", "run", str(app),
               "--server.port", str(port), "--server.address", host, "--server.headless", "true",
               "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
               "--server.maxUploadSize", str(upload_mb), "--client.toolbarMode", "minimal",
               "--", "--predictor-url", predictor_url, "--model-name", model_name,
               "--feedback-dir", str(store), "--max-image-bytes", str(max_image_bytes)]  # fmt: skip
    typer.echo(
        f"clinician UI on http://{host}:{port} (predictor {predictor_url}, feedback {store})"
    )
    sys.stdout.flush()
    # Become Streamlit, so that a stop (a test, a kubelet's SIGTERM) reaches the server itself
    # instead of orphaning it behind a waiting parent.
    os.execv(sys.executable, command)


def bench_serve(
    model_uri: ModelUriOpt = "",
    requests: Annotated[int, typer.Option(min=10, help="Requests at each concurrency.")] = 200,
    concurrency: Annotated[str, typer.Option(help="Comma-separated levels.")] = "1,8,32",
    backend: BackendOpt = "auto",
    precision: Annotated[
        str,
        typer.Option(
            help="auto, fp32 or int8; compare: the INT8 and fp32 graphs each served, "
            "alternating, with the accuracy deltas their registration measured."
        ),
    ] = "auto",
    json_out: Annotated[
        Path | None,
        typer.Option("--json", help="Result file (default: $DERMAOPS_HOME/bench/serve.json)."),
    ] = None,
    profile: Annotated[
        bool,
        typer.Option(
            help="Then sample the predictor with py-spy over as many requests more (at "
            "least 1,000): milliseconds of work per request in each step of the request path."
        ),
    ] = False,
) -> None:
    """p50/p99 and images/s of the real predictor on loopback vs the same model in process."""
    from dermaops.bench import write_result
    from dermaops.serving.bench import bench_precision
    from dermaops.serving.bench import bench_serve as run

    home = Home.from_env()
    if precision == "compare":
        compared = bench_precision(model_uri, home, requests)
        path = json_out or home.bench / "serve-precision.json"
        compared = write_result(compared, path)
        typer.echo(json.dumps(compared, indent=2))
        deltas = ", ".join(f"{k} {v:+.2f}" for k, v in compared["accuracy_deltas_points"].items())
        typer.echo(
            f"INT8 served p50 is {compared['ratio_int8_vs_fp32_served_p50']}x the fp32 served "
            f"p50 ({compared['arch']} at {compared['image_size']} px, {compared['recipe']}); "
            f"test-split change in points: {deltas}; {compared['errors']} errors ({path})"
        )
        return

    try:
        levels = tuple(int(c) for c in concurrency.split(","))
    except ValueError as e:
        raise ConfigError(f"--concurrency {concurrency!r}: expected numbers like 1,8,32") from e
    if profile:
        from dermaops.serving.profile import py_spy

        py_spy()  # before the minutes of benchmark, not after
    result = run(model_uri, home, requests, levels, backend, precision, profile=profile)
    path = json_out or home.bench / "serve.json"
    result = write_result(result, path)
    typer.echo(json.dumps(result, indent=2))
    typer.echo(
        f"served p50 is {result['ratio_p50_vs_in_process']}x the in-process decode + forward "
        f"({result['backend']}); {result['errors']} errors ({path})"
    )
    phases = result["server_phases_ms"]
    if phases:
        inside = sum(phases.values())
        typer.echo(
            "inside the predictor (mean ms): "
            + ", ".join(f"{k} {v}" for k, v in phases.items())
            + f"; the rest of the round trip at p50 (HTTP, routing, the client): "
            f"{result['served'][0]['p50_ms'] - inside:.2f} ms"
        )
    if "profile" in result:
        sampled = result["profile"]
        typer.echo(
            f"work per request, sampled by py-spy over {sampled['requests']} requests "
            f"(p50 {sampled['p50_ms_sampled']} ms while sampled), ms: "
            + ", ".join(f"{step} {ms}" for step, ms in sampled["ms_per_request"].items())
        )


def bench_soak(
    model_uri: ModelUriOpt = "",
    requests: Annotated[int, typer.Option(min=10, help="Measured, after warm-up.")] = 20_000,
    concurrency: Annotated[int, typer.Option(min=1, help="Requests in flight.")] = 8,
    bad_share: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of bad payloads in the mix.")
    ] = 0.1,
    warmup: Annotated[int, typer.Option(min=0, help="Requests before measuring.")] = 500,
    backend: BackendOpt = "auto",
    json_out: Annotated[
        Path | None,
        typer.Option("--json", help="Result file (default: $DERMAOPS_HOME/bench/soak.json)."),
    ] = None,
    url: Annotated[
        str,
        typer.Option(help="Drive the predictor already serving here (default: start one)."),
    ] = "",
    pid: Annotated[
        int,
        typer.Option(min=0, help="With --url: its process id on this machine, for memory."),
    ] = 0,
) -> None:
    """The predictor under a long mix of good and bad requests: errors, p50/p99 over time,
    resident memory at rest and its growth after warm-up; exit 1 when a target is missed."""
    from dermaops.bench import write_result
    from dermaops.serving.soak import soak

    home = Home.from_env()
    if pid and not url:
        raise ConfigError("--pid names the process behind --url; give --url too")
    result = soak(model_uri, home, requests, concurrency, bad_share, backend, warmup,
                  url=url, pid=pid)  # fmt: skip
    path = json_out or home.bench / "soak.json"
    result = write_result(result, path)
    typer.echo(json.dumps(result, indent=2))
    typer.echo(
        f"{result['requests']} requests ({result['bad_requests']} bad) at concurrency "
        f"{concurrency}: {result['good_errors']} good-request errors, {result['bad_not_4xx']} bad "
        f"requests not 4xx, {result['connection_errors']} connection errors; p50 "
        f"{result['p50_ms']} ms, p99 {result['p99_ms']} ms; {result['images_per_s']} images/s, "
        f"{result['throughput_vs_in_process']}x one in-process decode + forward loop; "
        f"{_memory(result)} ({path})"
    )
    if not result["held"]:
        typer.echo(f"missed: {'; '.join(result['missed'])}", err=True)
        raise typer.Exit(1)


def _memory(result: dict[str, object]) -> str:
    if result["idle_rss_mb"] is None:
        return "resident memory not measured (give --pid)"
    return (f"{result['idle_rss_mb']} MB resident at rest, {result['rss_growth']:+.1%} after "
            "warm-up")  # fmt: skip


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
