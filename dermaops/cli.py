"""The ``dermaops`` command line. Each subcommand imports only the layer it needs."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from dermaops.cli_platform import deploy, pipeline_app, registry_app
from dermaops.cli_serving import bench_serve, monitor_app, predict, serve, traffic, ui
from dermaops.errors import DermaOpsError
from dermaops.settings import Home, load_settings

log = logging.getLogger("dermaops")

app = typer.Typer(
    help="DermaOps: train, register, serve and watch a HAM10000 dermoscopy classifier.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Fetch, generate and prepare HAM10000 data.", no_args_is_help=True)
bench_app = typer.Typer(
    help="Benchmarks that print a ratio against a baseline.", no_args_is_help=True
)
app.add_typer(data_app, name="data")
app.add_typer(bench_app, name="bench")
app.add_typer(pipeline_app, name="pipeline")
app.add_typer(registry_app, name="registry")
app.add_typer(monitor_app, name="monitor")
feedback_app = typer.Typer(help="Clinician feedback and retained images.", no_args_is_help=True)
app.add_typer(feedback_app, name="feedback")
app.command("serve")(serve)
app.command("predict")(predict)
app.command("traffic")(traffic)
app.command("ui")(ui)
app.command("deploy")(deploy)
bench_app.command("serve")(bench_serve)

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config", exists=True, dir_okay=False, help="YAML settings file (below env and flags)."
    ),
]
WorkersOpt = Annotated[int | None, typer.Option(help="Worker processes (default: all cores).")]


@app.callback()
def _main(
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")] = "INFO",
) -> None:
    level = log_level.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise typer.BadParameter("choose DEBUG, INFO, WARNING or ERROR", param_hint="--log-level")
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLevelName(level)))


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


@bench_app.command("prepare")
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
    write_result(result, path)
    typer.echo(json.dumps(result, indent=2))
    typer.echo(f"prepare is {result['ratio']}x the plain PIL loop ({path})")


@app.command("train")
def train_command(
    data: Annotated[Path, typer.Option(help="A prepared data folder.")],
    out: Annotated[Path, typer.Option(help="Run folder (checkpoints, history, model/).")],
    model: Annotated[
        str | None,
        typer.Option(
            help="resnet50 (default), resnet18, efficientnet_b0, convnext_tiny, mobilenet_v3_large."
        ),
    ] = None,
    weights: Annotated[
        str | None, typer.Option(help="imagenet (default), none, or a state-dict file.")
    ] = None,
    epochs: Annotated[
        int | None, typer.Option(help="Epochs over both phases (default 15).")
    ] = None,
    image_size: Annotated[int | None, typer.Option(help="Model input size (default 224).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size (default 64).")] = None,
    balance: Annotated[
        str | None,
        typer.Option(help="sampler (class-balanced, default), loss (class-weighted) or none."),
    ] = None,
    label_smoothing: Annotated[
        float | None, typer.Option(help="Label smoothing (default 0).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed (default 0).")] = None,
    device: Annotated[str | None, typer.Option(help="auto (default), cpu or cuda.")] = None,
    export_onnx: Annotated[
        bool | None, typer.Option(help="Write model/model.onnx, checked for parity (default on).")
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="Continue the run in --out from its last checkpoint.")
    ] = False,
    config: ConfigOpt = None,
) -> None:
    """Fine-tune a torchvision model in two phases (or from scratch) on a prepared set."""
    from dermaops.train.loop import train
    from dermaops.train.settings import TrainSettings

    flags = {"model": model, "weights": weights, "epochs": epochs, "image_size": image_size,
             "batch_size": batch_size, "balance": balance, "label_smoothing": label_smoothing,
             "seed": seed, "device": device, "export_onnx": export_onnx}  # fmt: skip
    settings = load_settings(
        TrainSettings, env_prefix="DERMAOPS_TRAIN_", config_file=config, overrides=flags
    )
    result = train(data, out, settings, resume=resume)
    if not result.is_main:
        return
    typer.echo(
        f"trained {result.epochs_run} epochs; best val macro-F1 {result.best_val_f1:.4f} at epoch "
        f"{result.best_epoch}; model in {result.run_dir / 'model'}"
    )


@app.command("baseline")
def baseline_command(
    data: Annotated[Path, typer.Option(help="A prepared data folder.")],
    out: Annotated[Path, typer.Option(help="Where the forest and its evaluation go.")],
    class_weight: Annotated[
        str, typer.Option(help="balanced (default) or none (the earlier system).")
    ] = "balanced",
    trees: Annotated[int, typer.Option(min=1, help="Number of trees.")] = 300,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
) -> None:
    """Random Forest on hand-made colour and texture features, scored like the CNN."""
    from dermaops.train.baseline import run_baseline

    if class_weight not in ("balanced", "none"):
        raise typer.BadParameter("choose balanced or none", param_hint="--class-weight")
    metrics = run_baseline(data, out, class_weight, trees, seed)  # type: ignore[arg-type]
    typer.echo(
        f"baseline test macro-F1 {metrics['f1_macro']:.4f}, melanoma sensitivity "
        f"{metrics['melanoma']['test_sensitivity']:.1%}; {out}"
    )


@app.command("evaluate")
def evaluate_command(
    data: Annotated[
        Path, typer.Option(help="A prepared data folder (its val and test splits are used).")
    ],
    run: Annotated[
        Path, typer.Option(help="A run folder from `dermaops train`, or a model directory.")
    ],
    out: Annotated[Path, typer.Option(help="Where metrics.json, the plots and report.md go.")],
    target_sensitivity: Annotated[
        float,
        typer.Option(
            min=0.01, max=1.0, help="Melanoma sensitivity the threshold aims for on validation."
        ),
    ] = 0.85,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    min_support: Annotated[
        int, typer.Option(min=1, help="Smallest subgroup (test images) reported with figures.")
    ] = 30,
    gap_margin: Annotated[
        float, typer.Option(min=0.001, max=1.0, help="Flag a subgroup this far below overall.")
    ] = 0.10,
) -> None:
    """Evaluate on the test split: metrics.json (with subgroups), plots, report."""
    from dermaops.evaluation.run import evaluate
    from dermaops.evaluation.subgroups import SubgroupSettings

    model_dir = run / "model" if (run / "model").is_dir() else run
    groups = SubgroupSettings(min_support=min_support, gap_margin=gap_margin)
    metrics = evaluate(data, model_dir, out, target_sensitivity, device, subgroups=groups)
    mel = metrics["melanoma"]
    typer.echo(
        f"test macro-F1 {metrics['f1_macro']:.4f}, accuracy {metrics['accuracy']:.2%}, melanoma "
        f"sensitivity {mel['test_sensitivity']:.1%} at P(mel) >= {mel['threshold']:.3f}; {out}"
    )
    for gap in metrics["subgroups"]["gaps"]:
        if gap["flagged"]:
            typer.echo(f"subgroup gap: {gap['metric']} {gap['value']:.3f} for {gap['attribute']} = "
                       f"{gap['group']} vs {gap['overall']:.3f} overall")  # fmt: skip
    if metrics["generated"]:
        typer.echo(metrics["notice"])


@app.command("gate")
def gate_command(
    metrics: Annotated[
        Path,
        typer.Option(exists=True, dir_okay=False, help="metrics.json from `dermaops evaluate`."),
    ],
    config: ConfigOpt = None,
) -> None:
    """The quality gate: exit 0 if the model may be promoted, 1 with the reasons if not."""
    from dermaops.evaluation.gate import GateThresholds, check

    thresholds = load_settings(GateThresholds, env_prefix="DERMAOPS_GATE_", config_file=config)
    result = check(json.loads(metrics.read_text()), thresholds)
    if result.passed:
        typer.echo("gate passed")
        return
    for reason in result.reasons:
        typer.echo(f"gate failed: {reason}", err=True)
    raise typer.Exit(1)


@bench_app.command("train")
def bench_train(
    data: Annotated[
        Path | None, typer.Option(help="A prepared set (default: generate 200 images).")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="Default: resnet50 on CUDA, resnet18 on CPU.")
    ] = None,
    image_size: Annotated[
        int | None, typer.Option(help="Default: 224 on CUDA, 128 on CPU.")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Default: 128 on CUDA, 32 on CPU.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    precision: Annotated[
        str, typer.Option(help="auto (bf16 where supported), bf16, fp16, fp32.")
    ] = "auto",
    compile: Annotated[bool, typer.Option(help="torch.compile the model.")] = False,
    steps: Annotated[int, typer.Option(min=1, help="Timed steps of each kind.")] = 10,
    json_out: Annotated[
        Path | None,
        typer.Option("--json", help="Result file (default: $DERMAOPS_HOME/bench/train.json)."),
    ] = None,
) -> None:
    """Training-step images/s against the same step on random tensors, and their ratio."""
    from dermaops.bench import write_result
    from dermaops.model.inference import resolve_device
    from dermaops.train.bench import bench_train as run
    from dermaops.train.settings import TrainSettings

    cuda = resolve_device(device).type == "cuda"
    settings = TrainSettings(
        model=model or ("resnet50" if cuda else "resnet18"),
        image_size=image_size or (224 if cuda else 128),
        batch_size=batch_size or (128 if cuda else 32),
        device=device,
        precision=precision,
        compile=compile,
    )
    result = run(data, settings, steps=steps)
    path = json_out or Home.from_env().bench / "train.json"
    write_result(result, path)
    typer.echo(json.dumps(result, indent=2))
    typer.echo(f"the training step runs at {result['ratio']}x the bare model step ({path})")


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


def main() -> None:
    """Entry point: user errors become one line on stderr and exit code 1."""
    try:
        app()
    except DermaOpsError as e:
        log.debug("failed", exc_info=True)
        typer.echo(f"error: {e}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
