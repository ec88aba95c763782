"""``dermaops rollout ...``: the rollout of a new champion, its checks, and the hand controls.

The monitor drives rollouts on a cluster; these commands show one, move it by hand, or drive
it locally (``step``: one judgement, as the monitor's loop makes them).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from dermaops.cli.options import ConfigOpt, ModelNameOpt, NamespaceOpt, ReleaseOpt
from dermaops.settings import Home

if TYPE_CHECKING:
    from dermaops.registry.rollout import RolloutDriver
    from dermaops.rollout.plan import Rollout

rollout_app = typer.Typer(
    help="Roll a new champion out in stages (shadow, canary, full), judged on its answers.",
    no_args_is_help=True,
)

StateOpt = Annotated[
    Path | None,
    typer.Option("--state-dir", help="Where rollouts are kept (default: the local monitor's)."),
]
LogOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--log-dir",
        help="Inference logs to judge (repeat for each predictor; default: the local one).",
    ),
]
PrometheusOpt = Annotated[
    str, typer.Option(help="Prometheus to ask for the challenger's request counts (empty: none).")
]
ServeOnOpt = Annotated[
    str, typer.Option("--serve-on", help="local, or kubernetes (the chart's --release).")
]


def driver(
    model_name: str,
    serve_on: str,
    release: str,
    namespace: str,
    state_dir: Path | None,
    log_dirs: list[Path] | None,
    config: Path | None,
    prometheus: str = "",
) -> RolloutDriver:
    """The rollout driver of ``model_name`` as these commands build it: each version's
    calibration for the judge's estimates comes from its model folder in the registry."""
    from dermaops.evaluation.estimate import EstimateSettings
    from dermaops.evaluation.sources import Sources
    from dermaops.registry import Registry, RegistrySettings
    from dermaops.registry.rollout import RolloutDriver, log_records, no_error_counts
    from dermaops.registry.serving import serving_for
    from dermaops.rollout.plan import RolloutSettings, RolloutStore
    from dermaops.rollout.queries import PrometheusCounts
    from dermaops.settings import load_settings

    home = Home.from_env()
    settings = load_settings(RolloutSettings, env_prefix="DERMAOPS_ROLLOUT_", config_file=config)
    return RolloutDriver(
        reg=Registry(RegistrySettings(model_name=model_name)),
        serving=serving_for(serve_on, home, release, namespace),
        store=RolloutStore(state_dir or home.monitoring),
        settings=settings,
        records=log_records(*(log_dirs or [home.inference_log])),
        errors=PrometheusCounts(prometheus) if prometheus else no_error_counts,
        sources=Sources(model_name).get,
        estimates=load_settings(EstimateSettings, env_prefix="DERMAOPS_ESTIMATE_"),
    )


@rollout_app.command("status")
def status(
    model_name: ModelNameOpt = "dermaops",
    state_dir: StateOpt = None,
) -> None:
    """The rollout in progress (or the last one): stage, weights, each check's value,
    threshold and verdict, and what happened so far."""
    from dermaops.rollout.plan import RolloutStore

    r = RolloutStore(state_dir or Home.from_env().monitoring).load()
    if r is None:
        typer.echo(f"no rollout of {model_name} yet")
        return
    typer.echo(describe(r, time.time()))


def describe(r: Rollout, now: float) -> str:
    """A rollout as ``rollout status`` prints it."""
    stage = r.current
    lines = [
        f"rollout of {r.model} version {r.candidate} (stable: version {r.stable}): {r.status}",
        f"stage {r.stage + 1} of {len(r.stages)}: {stage.label}, for {now - r.stage_started:.0f} s;"
        f" traffic: version {r.stable} {100 - stage.weight}%, version {r.candidate} "
        f"{stage.weight}%" + (" (and every mirrored request)" if stage.name == "shadow" else ""),
        "stages: " + " -> ".join(s.label for s in r.stages),
    ]
    if r.last is not None:
        score = "" if r.last.score is None else f", score {r.last.score:.2f}"
        lines += ["", f"last verdict: {r.last.verdict} ({r.last.reason}{score})"]
        lines.append(f"{'check':<30} {'value':>10} {'threshold':>14} {'verdict':<8} samples")
        for c in r.last.checks:
            value = "-" if c.value is None else f"{c.value:.4g}"
            bound = ("<= " if c.direction == "at_most" else ">= ") + f"{c.threshold:g}"
            name = c.name + (" (critical)" if c.critical else "")
            lines.append(f"{name:<30} {value:>10} {bound:>14} {c.verdict:<8} {c.samples}"
                         + (f"  {c.detail}" if c.detail else ""))  # fmt: skip
    lines += ["", "events:"]
    for e in r.events:
        at = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e.at))
        lines.append(f"  {at}Z  {e.stage:<11} {e.action:<9} by {e.by}: {e.reason}")
    return "\n".join(lines)


@rollout_app.command("step")
def step(
    model_name: ModelNameOpt = "dermaops",
    serve_on: ServeOnOpt = "local",
    release: ReleaseOpt = "dermaops",
    namespace: NamespaceOpt = "dermaops",
    state_dir: StateOpt = None,
    log_dir: LogOpt = None,
    config: ConfigOpt = None,
    prometheus_url: PrometheusOpt = "",
) -> None:
    """Judge the stage in progress once and act on the verdict (what the monitor does on a
    schedule); a new champion's rollout is started by the reconciler (registry reconcile)."""
    d = driver(model_name, serve_on, release, namespace, state_dir, log_dir, config,
               prometheus_url)  # fmt: skip
    r, action = d.tick()
    if r is None:
        typer.echo(f"no rollout of {model_name} yet")
        return
    typer.echo(f"{action}: {r.status} in {r.current.label}"
               + (f" ({r.last.reason})" if r.last else ""))  # fmt: skip


def _by_hand(action: str, model_name: str, serve_on: str, release: str, namespace: str,
             state_dir: Path | None) -> None:  # fmt: skip
    d = driver(model_name, serve_on, release, namespace, state_dir, None, None)
    r = d.by_hand(action)
    typer.echo(f"rollout of version {r.candidate}: {r.status} ({r.events[-1].reason}, "
               f"by {r.events[-1].by})")  # fmt: skip


@rollout_app.command("promote")
def promote(
    model_name: ModelNameOpt = "dermaops",
    serve_on: ServeOnOpt = "local",
    release: ReleaseOpt = "dermaops",
    namespace: NamespaceOpt = "dermaops",
    state_dir: StateOpt = None,
) -> None:
    """Skip the remaining stages: serve the candidate to everyone now (audited)."""
    _by_hand("promote", model_name, serve_on, release, namespace, state_dir)


@rollout_app.command("abort")
def abort(
    model_name: ModelNameOpt = "dermaops",
    serve_on: ServeOnOpt = "local",
    release: ReleaseOpt = "dermaops",
    namespace: NamespaceOpt = "dermaops",
    state_dir: StateOpt = None,
) -> None:
    """Roll back now: the stable version is champion and served again (audited)."""
    _by_hand("abort", model_name, serve_on, release, namespace, state_dir)


def bench_rollout(
    evaluation: Annotated[
        Path,
        typer.Option(
            exists=True,
            file_okay=False,
            help="An evaluation folder (test_predictions.npz, metrics.json).",
        ),
    ],
    drop: Annotated[
        float,
        typer.Option(min=0.01, max=1.0, help="The challenger's fall in melanoma sensitivity."),
    ] = 0.10,
    noise: Annotated[
        float, typer.Option(min=0.0, max=0.5, help="Share of images it answers otherwise, alike.")
    ] = 0.02,
    share: Annotated[
        float, typer.Option(min=0.01, max=0.5, help="The canary's share of the traffic.")
    ] = 0.10,
    runs: Annotated[int, typer.Option(min=20, help="Simulated rollouts.")] = 200,
    requests: Annotated[int, typer.Option(min=1000, help="Most requests per rollout.")] = 20_000,
    json_out: Annotated[
        Path | None,
        typer.Option("--json", help="Result file (default: $DERMAOPS_HOME/bench/rollout.json)."),
    ] = None,
) -> None:
    """How many requests the judge needs to catch a challenger whose melanoma sensitivity
    fell by DROP: paired in shadow against an unpaired canary at SHARE of the traffic."""
    from dermaops.bench import write_result
    from dermaops.rollout.power import WAYS
    from dermaops.rollout.power import bench_rollout as run

    try:
        result = run(evaluation, drop, noise, share, runs, requests)
    except (OSError, ValueError) as e:
        raise typer.BadParameter(str(e), param_hint="--evaluation") from e
    path = json_out or Home.from_env().bench / "rollout.json"
    result = write_result(result, path)
    typer.echo(
        f"{result['test_images']} test images, {result['melanomas']} melanomas, sensitivity "
        f"{result['sensitivity']:.2f}; the challenger loses {drop:.0%} of it "
        f"({noise:.0%} other differences); {runs} rollouts; generated data, not clinical"
    )
    typer.echo(f"{'requests':>9}  " + "  ".join(f"{way:>16}" for way in WAYS))
    for i, n in enumerate(result["requests"]):
        cells = "  ".join(f"{result['caught'][way][i]:>16.2f}" for way in WAYS)
        typer.echo(f"{n:>9}  {cells}")
    for way in WAYS:
        found = result["requests_needed"][way]
        part = f"{result['power']:.0%} of the rollouts"
        said = f"{part} caught by {found} requests" if found else (
            f"fewer than {part} caught within {requests} requests")  # fmt: skip
        typer.echo(f"{way}: {said}")
    typer.echo(f"result: {path}")
