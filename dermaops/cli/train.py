"""``dermaops train|baseline|evaluate|gate`` and ``dermaops bench train``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from dermaops.cli.options import ConfigOpt
from dermaops.settings import Home, load_settings


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
        f"baseline test macro-F1 {metrics.f1_macro:.4f}, melanoma sensitivity "
        f"{metrics.melanoma_sensitivity:.1%}; {out}"
    )


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
    guard: Annotated[
        str,
        typer.Option(
            help="The out-of-distribution guard registered with the model: mahalanobis (on the "
            "embedding) or energy (on the logits); both are measured."
        ),
    ] = "mahalanobis",
    int8: Annotated[
        bool,
        typer.Option(
            help="Quantize the ONNX serving graph (static INT8, the fastest recipe here) and "
            "keep it only within 1 point of fp32 on macro-F1, melanoma sensitivity and ECE."
        ),
    ] = True,
    int8_tolerance: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="Points (1 = 1%) the INT8 graph may lose on macro-F1 and melanoma "
            "sensitivity, and add to ECE, against fp32 on the test split.",
        ),
    ] = 1.0,
) -> None:
    """Evaluate on the test split: metrics.json (with subgroups and the guard), plots, report."""
    from dermaops.evaluation.run import evaluate
    from dermaops.evaluation.subgroups import SubgroupSettings
    from dermaops.model.guard import METHODS

    model_dir = run / "model" if (run / "model").is_dir() else run
    groups = SubgroupSettings(min_support=min_support, gap_margin=gap_margin)
    if guard not in METHODS:
        raise typer.BadParameter(f"choose one of {', '.join(METHODS)}", param_hint="--guard")
    from dermaops.model.quantize import Tolerance

    tolerance = Tolerance(int8_tolerance, int8_tolerance, int8_tolerance)
    metrics = evaluate(data, model_dir, out, target_sensitivity, device, subgroups=groups,
                       guard=guard, int8=int8, int8_tolerance=tolerance)  # fmt: skip
    mel = metrics.melanoma
    typer.echo(
        f"test macro-F1 {metrics.f1_macro:.4f}, accuracy {metrics.accuracy:.2%}, melanoma "
        f"sensitivity {mel.test_sensitivity:.1%} at P(mel) >= {mel.threshold:.3f}; {out}"
    )
    ood = metrics.ood or {}
    typer.echo(
        f"out-of-distribution guard ({ood['method']}): AUROC {ood['auroc']:.3f} on generated "
        f"images it should refuse, {ood['caught']:.0%} of them refused, "
        f"{ood['held_out_passed']:.0%} of held-out lesions pass"
    )
    if metrics.precision is not None:
        decision = metrics.precision
        typer.echo(f"serving graph: {decision.serve} ({decision.reason})")
    for gap in (metrics.subgroups or {}).get("gaps", []):
        if gap["flagged"]:
            typer.echo(f"subgroup gap: {gap['metric']} {gap['value']:.3f} for {gap['attribute']} = "
                       f"{gap['group']} vs {gap['overall']:.3f} overall")  # fmt: skip
    if metrics.generated:
        typer.echo(metrics.notice)


def gate_command(
    metrics: Annotated[
        Path,
        typer.Option(exists=True, dir_okay=False, help="metrics.json from `dermaops evaluate`."),
    ],
    config: ConfigOpt = None,
) -> None:
    """The quality gate: exit 0 if the model may be promoted, 1 with the reasons if not."""
    from dermaops.evaluation.gate import GateThresholds, check
    from dermaops.evaluation.result import EvaluationMetrics

    thresholds = load_settings(GateThresholds, env_prefix="DERMAOPS_GATE_", config_file=config)
    result = check(EvaluationMetrics.read(metrics), thresholds)
    if result.passed:
        typer.echo("gate passed")
        return
    for reason in result.reasons:
        typer.echo(f"gate failed: {reason}", err=True)
    raise typer.Exit(1)


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
    result = write_result(result, path)
    typer.echo(json.dumps(result, indent=2))
    typer.echo(f"the training step runs at {result['ratio']}x the bare model step ({path})")


def bench_estimate(
    evaluation: Annotated[
        Path,
        typer.Option(
            exists=True,
            file_okay=False,
            help="An evaluation folder (test_predictions.npz, metrics.json).",
        ),
    ],
    model: Annotated[
        Path,
        typer.Option(
            exists=True,
            file_okay=False,
            help="The registered model folder: its drift reference gives the priors.",
        ),
    ],
    windows: Annotated[int, typer.Option(min=10, help="Windows per scenario.")] = 100,
    size: Annotated[int, typer.Option(min=50, help="Images per window.")] = 500,
    json_out: Annotated[
        Path | None,
        typer.Option("--json", help="Result file (default: $DERMAOPS_HOME/bench/estimate.json)."),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            file_okay=False,
            help="The prepared set the evaluation scored: adds the device-shift scenarios "
            "(its test images scored again as a darker, warmer camera sends them).",
        ),
    ] = None,
) -> None:
    """Label-free estimates against the labels in windows with the melanoma share moved
    (x0.5 to x3), and with --data under a device shift: errors, interval coverage and width, plain
    CBPE's errors, the noise floor, the windows the estimate marked unreliable, and the targets."""
    from dermaops.bench import write_result
    from dermaops.evaluation.estimate_bench import bench_estimate as run

    result = run(evaluation, model, windows, size, data=data)
    path = json_out or Home.from_env().bench / "estimate.json"
    result = write_result(result, path)
    typer.echo(f"{'scenario':<26} {'figure':<21} {'ours MAE':>8} {'CBPE MAE':>8} "
               f"{'floor':>6} {'coverage':>8} {'width':>6} {'unreliable':>10}")  # fmt: skip
    for name, r in result["scenarios"].items():
        for figure in ("balanced_accuracy", "melanoma_sensitivity"):
            cells = [r[f"mae_ours_{figure}"], r[f"mae_cbpe_{figure}"], r.get(f"floor_{figure}"),
                     r[f"coverage_{figure}"], r.get(f"width_{figure}"),
                     r["unreliable_windows"]]  # fmt: skip
            shown = ["-" if c is None else f"{c:.3f}" for c in cells]
            typer.echo(f"{name:<26} {figure:<21} {shown[0]:>8} {shown[1]:>8} {shown[2]:>6} "
                       f"{shown[3]:>8} {shown[4]:>6} {shown[5]:>10}")  # fmt: skip
    typer.echo(
        "floor: the error expected of the estimate if each image's probability were exactly "
        "right (the realized sensitivity's own noise in a window this size; a reference, not "
        "a bound)"
    )
    failed = [c for c in result["checks"] if not c["passed"]]
    for c in result["checks"]:
        typer.echo(f"{'PASS' if c['passed'] else 'FAIL'}  {c['check']}: {c['value']} "
                   f"(target {c['target']})")  # fmt: skip
    typer.echo(f"{len(result['checks']) - len(failed)} of {len(result['checks'])} targets met "
               f"on {result['test_images']} test images ({path}); on generated images these "
               "figures say the method works, nothing about patients")  # fmt: skip
