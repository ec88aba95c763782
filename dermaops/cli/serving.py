"""``dermaops serve|predict|traffic|ui|bench serve|bench soak``: the KServe layer and the UI.

Every command imports its layer inside its body, so no other command loads kserve or FastAPI.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from dermaops.cli.options import ModelNameOpt
from dermaops.errors import ConfigError
from dermaops.settings import Home

ModelUriOpt = Annotated[
    str, typer.Option(help="Folder, file://, or models:/NAME@ALIAS (default: the deployed one).")
]
BackendOpt = Annotated[str, typer.Option(help="auto, onnx, torch or cuda.")]
PrecisionOpt = Annotated[
    str,
    typer.Option(help="auto, fp32 or int8 (ONNX; auto: INT8 where the registration kept it)."),
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
    client_cores: Annotated[
        int,
        typer.Option(
            min=0,
            help="Cores of its own for the client (Linux); the predictor and the in-process "
            "reference share the rest, each with a thread per core, as a client on another "
            "machine would leave them. 0: everything shares every core.",
        ),
    ] = 0,
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
    result = run(model_uri, home, requests, levels, backend, precision, profile=profile,
                 client_cores=client_cores)  # fmt: skip
    path = json_out or home.bench / "serve.json"
    result = write_result(result, path)
    typer.echo(json.dumps(result, indent=2))
    extra = result["served"][0]["p50_ms"] - result["in_process"]["p50_ms"]
    typer.echo(
        f"served p50 is {result['ratio_p50_vs_in_process']}x the in-process decode + forward "
        f"({result['backend']}), {extra:.2f} ms more; {result['errors']} errors ({path})"
    )
    found = result["predictor_threads"]
    typer.echo(f"{result['cores']['described']}; the predictor sized its worker threads "
               f"for {found} CPU{'s' * (found != 1)}")  # fmt: skip
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
