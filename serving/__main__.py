"""``python -m dermaops.serving``: the predictor process KServe runs (and ``dermaops serve``).

KServe's own flags (``--http_port``, ``--grpc_port``, ``--enable_grpc``, ``--workers``,
``--model_name``...) come from ``kserve.model_server.parser``; ours are added beside them and
every one of ours can also be set as ``DERMAOPS_SERVING_<NAME>``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from collections.abc import Mapping

from dermaops.errors import DermaOpsError
from dermaops.exit import skip_final_collection
from dermaops.serving.settings import ENV_PREFIX, ServingSettings
from dermaops.settings import load_settings


def build_parser() -> argparse.ArgumentParser:
    from kserve import model_server

    parser = argparse.ArgumentParser(
        parents=[model_server.parser], description="DermaOps KServe predictor"
    )
    parser.set_defaults(model_name="dermaops")
    ours = parser.add_argument_group("dermaops")
    ours.add_argument(
        "--model_dir", "--model_uri", "--model-uri", dest="model_uri", default=None,
        help="folder (KServe: /mnt/models), file://, or models:/NAME@ALIAS (MLflow)",
    )  # fmt: skip
    ours.add_argument("--model_version", default=None, help="version label in responses")
    ours.add_argument("--backend", default=None, choices=["auto", "onnx", "torch", "cuda"])
    ours.add_argument(
        "--precision", default=None, choices=["auto", "fp32", "int8"],
        help="ONNX graph: auto serves the INT8 graph where the registration kept it",
    )  # fmt: skip
    ours.add_argument("--max_batch", type=int, default=None, help="micro-batch size")
    ours.add_argument("--max_wait_ms", type=float, default=None, help="micro-batch wait")
    ours.add_argument("--max_instances", type=int, default=None, help="images per request")
    ours.add_argument("--no_inference_log", action="store_true", help="do not log predictions")
    return parser


def settings_from(
    argv: list[str] | None = None, environ: Mapping[str, str] | None = None
) -> tuple[argparse.Namespace, ServingSettings]:
    """KServe's flags, and our settings from ``DERMAOPS_SERVING_*`` overridden by our flags:
    what a pod's args and env (the chart's) make of the predictor."""
    args, _ = build_parser().parse_known_args(argv)
    overrides = {
        "model_uri": args.model_uri,
        "model_version": args.model_version,
        "backend": args.backend,
        "precision": args.precision,
        "max_batch": args.max_batch,
        "max_wait_ms": args.max_wait_ms,
        "max_instances": args.max_instances,
        "inference_log": False if args.no_inference_log else None,
    }
    settings = load_settings(
        ServingSettings, env_prefix=ENV_PREFIX, overrides=overrides, environ=environ
    )
    return args, settings


def _log_as_kserve_does() -> None:
    """Our lines in KServe's format and stream, from INFO (the threads chosen, what is served
    and how, the shadow mirror opening and shutting): KServe's logging names only its own
    loggers, so ours fell to Python's last resort, warnings alone."""
    from kserve.logging import KSERVE_LOGGER_NAME, configure_logging

    configure_logging()  # KServe's own, as its ModelServer would later (it keeps this one)
    kserve = logging.getLogger(KSERVE_LOGGER_NAME)
    ours = logging.getLogger("dermaops")
    ours.setLevel(kserve.level or logging.INFO)  # KSERVE_LOGLEVEL, as KServe's lines
    if kserve.handlers:  # else logging was set up before KServe's (which then kept out)
        ours.handlers = list(kserve.handlers)
        ours.propagate = False


def main(argv: list[str] | None = None) -> None:
    """Load the model (ready only after a warm-up inference), then serve until stopped."""
    skip_final_collection()
    import kserve
    from kserve.logging import KSERVE_TRACE_LOGGER_NAME as TRACE_LOGGER
    from kserve.model_server import app

    from dermaops.serving.admission import (
        Admission,
        CountedResponses,
        OneVersion,
        ReadOnlyRepository,
        admission_limits,
    )
    from dermaops.serving.binary import BinaryTensors
    from dermaops.serving.model import DermaOpsModel, PlatformDataPlane
    from dermaops.serving.openapi import publish_v1

    args, settings = settings_from(argv)
    _log_as_kserve_does()
    if args.workers > 1:  # KServe's workers import its app afresh, without the middleware
        logging.getLogger("dermaops.serving").warning(
            "--workers %d: KServe's worker processes import its app afresh, without the binary "
            "tensor middleware, so raw BYTES requests get KServe's own 500; run one worker per "
            "pod and scale with replicas",
            args.workers,
        )
    model = DermaOpsModel(args.model_name, settings)
    model.load()
    app.add_middleware(BinaryTensors)  # before KServe's decoder, which reads BYTES as UTF-8
    app.add_middleware(OneVersion, name=model.name, version=model.version)
    app.add_middleware(ReadOnlyRepository)
    limits = admission_limits(settings, model.threads)  # after the load: what the model holds
    app.add_middleware(Admission, limits=limits)  # before anything reads a body
    app.add_middleware(CountedResponses, version=model.version)  # outermost: refusals count
    publish_v1(app)
    server = kserve.ModelServer(
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        enable_grpc=args.enable_grpc,
        workers=args.workers,
    )
    server.dataplane = PlatformDataPlane(model_registry=server.registered_models)
    # After the server configured logging: KServe's two lines per request, uvicorn's one.
    if not settings.trace_log:
        logging.getLogger(TRACE_LOGGER).setLevel(logging.WARNING)
    if not settings.access_log:
        logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    # KServe answers v1 with FastAPI's ORJSONResponse, which FastAPI deprecates with a warning
    # at every answer: KServe's to change, not ours; said once here instead of at each request.
    logging.getLogger("dermaops.serving").info(
        "FastAPI's ORJSONResponse warning: KServe's, ignored"
    )
    warnings.filterwarnings("ignore", message="ORJSONResponse is deprecated")
    server.start([model])


if __name__ == "__main__":
    try:
        main()
    except DermaOpsError as e:
        logging.getLogger("dermaops.serving").error("cannot serve: %s", e)
        sys.exit(1)
