"""The docs' benchmark and reliability tables, generated from the committed result files.

Usage: python scripts/result_tables.py [--check | --publish RESULT.json ...]

Every `dermaops bench ...` (and the container test) writes a JSON result stamped with the
machine, the versions and the date (`dermaops.bench.write_result`); the ones the docs show are
committed in docs/results/. Each table stands in a page between `<!-- results:NAME:start -->`
and `<!-- results:NAME:end -->`; this script rewrites those blocks from the files, and with
`--check` only names the blocks that differ (exit 1). tests/unit/test_docs.py runs the check,
so no figure in those tables is typed by hand. `--publish` copies result files into
docs/results/ without what only the measuring machine knows (absolute paths become their last
part, loopback URLs "loopback", the kernel its version), then rewrites the tables.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dermaops.bench import STAMP_KEYS
from dermaops.cpus import SHARED

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
RESULTS = DOCS / "results"
#: The result files the tables show.
SHOWN = ("prepare", "train", "serve", "serve-client-apart", "serve-profile-before",
         "serve-precision", "serve-precision-resnet50", "estimate", "estimate-2000",
         "rollout", "soak", "soak-32", "container-memory", "trainjob-local")  # fmt: skip

Result = dict[str, Any]


def load(name: str) -> Result:
    """docs/results/<name>.json, which must carry the stamp `write_result` adds."""
    path = RESULTS / f"{name}.json"
    try:
        result: Result = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise SystemExit(f"{path}: {e} (copy the result file the benchmark wrote here)") from e
    missing = [key for key in STAMP_KEYS if key not in result]
    if missing:
        raise SystemExit(f"{path}: no {', '.join(missing)}: written by an older bench")
    return result


def _n(value: float) -> str:
    """A figure as the docs print it: thousands separated, no trailing zeros."""
    if isinstance(value, int) or float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.2f}".rstrip("0").rstrip(".")


def _pct(share: float) -> str:
    return f"{share * 100:.0f} %"


def _points(share: float) -> str:
    return f"{share * 100:.1f}"


def _link(name: str) -> str:
    return f"[{name}.json](results/{name}.json)"


def machines(names: list[str]) -> str:
    """One line per machine the results were measured on, with versions and dates."""
    seen: dict[str, list[str]] = {}
    for name in names:
        result = load(name)
        m, v = result["machine"], result["versions"]
        flags = ", ".join(m["cpu_flags"]) or "none of the INT8/bf16 flags"
        key = (f"{m['cpu']}, {m['usable_cores']} of {m['cores']} cores usable ({flags}), "
               f"{m['memory_gib']} GiB, {m['os']}, Python {m['python']}, "
               + ", ".join(f"{k} {v[k]}" for k in sorted(v)))  # fmt: skip
        seen.setdefault(key, []).append(f"{_link(name)} {result['measured_at'][:10]}")
    return "\n".join(f"Measured on {key}: {'; '.join(files)}.  " for key, files in seen.items())


def benchmarks() -> str:
    """prepare, train, serve and INT8 serve: each a ratio against its baseline in the same run."""
    prepare, train = load("prepare"), load("train")
    rows = [
        ("`bench prepare`",
         f"{_n(prepare['images'])} generated images, {prepare['workers']} workers, cache "
         f"{'x'.join(map(str, prepare['cache_size']))} px",
         f"{_n(prepare['prepare_images_per_s'])} images/s",
         f"{_n(prepare['baseline_images_per_s'])} images/s: {prepare['baseline']}",
         f"{prepare['ratio']}x faster", _link("prepare")),
        ("`bench train`",
         f"{train['model']} at {train['image_size']} px, batch {train['batch_size']}, "
         f"{train['device']}, {train['precision']}",
         f"{_n(train['train_step_images_per_s'])} images/s (cache, augmentation, step)",
         f"{_n(train['raw_images_per_s'])} images/s: the same step on random tensors",
         f"{train['ratio']}x the raw step", _link("train")),
        *(_serve_row(name) for name in ("serve", "serve-client-apart")),
        *(_int8_row(name) for name in ("serve-precision", "serve-precision-resnet50")),
    ]  # fmt: skip
    names = ["prepare", "train", "serve", "serve-client-apart", "serve-precision",
             "serve-precision-resnet50"]  # fmt: skip
    return _table(("benchmark", "what ran", "measured", "against, in the same run", "ratio",
                   "result"), rows) + "\n" + machines(names) + "\n"  # fmt: skip


def _serve_row(name: str) -> tuple[str, ...]:
    """``bench serve``: the served model against the same decode and forward in process; where
    the client ran (a file from before ``--client-cores`` had every side share the cores)."""
    serve = load(name)
    first = serve["served"][0]
    levels = ", ".join(f"{_n(level['images_per_s'])} images/s at {level['concurrency']} in flight"
                       for level in serve["served"])  # fmt: skip
    phases = ", ".join(f"{k} {_n(v)} ms" for k, v in serve["server_phases_ms"].items())
    extra = first["p50_ms"] - serve["in_process"]["p50_ms"]
    cores = serve.get("cores", {"shared": True, "described": SHARED})  # older files: shared
    flag, where = "", cores["described"]
    if not cores["shared"]:
        flag = f" --client-cores {len(cores['client'])}"
        found, used = serve["predictor_threads"], serve["in_process"]["threads"]
        where += f" ({found} thread{'s' * (found != 1)} in the predictor, {used} in the reference)"
    return (f"`bench serve{flag}`",
            f"{serve['arch']} at {serve['image_size']} px, {serve['backend']}, "
            f"{_n(serve['requests_per_level'])} requests per level; {where}",
            f"served p50 {_n(first['p50_ms'])} ms, p99 {_n(first['p99_ms'])} ms; {levels}; "
            f"inside the predictor: {phases}; {serve['errors']} errors",
            f"in process p50 {_n(serve['in_process']['p50_ms'])} ms (decode + forward)",
            f"{serve['ratio_p50_vs_in_process']}x the raw model (+{extra:.2f} ms)",
            _link(name))  # fmt: skip


def _int8_row(name: str) -> tuple[str, ...]:
    """``bench serve --precision compare``: the INT8 graph against fp32, served alike."""
    int8 = load(name)
    deltas = ", ".join(f"{k} {v:+.2f}" for k, v in int8["accuracy_deltas_points"].items())
    return ("`bench serve --precision compare`",
            f"{int8['arch']} at {int8['image_size']} px, INT8 {int8['recipe']}",
            f"INT8 served p50 {_n(int8['served_int8']['p50_ms'])} ms; test-split change in "
            f"points: {deltas}; {int8['errors']} errors",
            f"fp32 served p50 {_n(int8['served_fp32']['p50_ms'])} ms",
            f"{int8['ratio_int8_vs_fp32_served_p50']}x fp32", _link(name))  # fmt: skip


#: The request path before and after its changes: result file -> its column's name.
PROFILES = {"serve-profile-before": "before", "serve": "after"}


def profile() -> str:
    """Where a served request's time goes (``bench serve --profile``): each step's milliseconds
    of work per request and share of all the work, before and after."""
    runs = [load(name) for name in PROFILES]
    unsampled = [name for name, run in zip(PROFILES, runs, strict=True) if "profile" not in run]
    if unsampled:
        raise SystemExit(f"docs/results/{unsampled[0]}.json has no profile: publish the result "
                         "of `dermaops bench serve --profile`")  # fmt: skip
    steps = list(dict.fromkeys(step for run in runs for step in run["profile"]["ms_per_request"]))

    def cell(run: Result, step: str) -> str:
        sampled = run["profile"]
        ms = sampled["ms_per_request"].get(step)
        return "-" if ms is None else f"{ms:.2f} ({_pct(sampled['share'][step])})"

    rows = [(step, *(cell(run, step) for run in runs)) for step in steps]
    rows.append(("served p50 while sampled",
                 *(f"{_n(run['profile']['p50_ms_sampled'])} ms" for run in runs)))  # fmt: skip
    rows.append(("served p50 / in process p50 (timed, not sampled)",
                 *(f"{run['ratio_p50_vs_in_process']}x" for run in runs)))  # fmt: skip
    head = (
        "step (ms of work per request, share)",
        *(f"{label}: {_link(name)}" for name, label in PROFILES.items()),
    )
    return _table(head, rows) + "\n" + machines(list(PROFILES)) + "\n"


ESTIMATES = ("estimate", "estimate-2000")  # the same windows' scenarios, 500 and 2,000 images


def estimate() -> str:
    """Label-free estimates against the labels, per scenario, with the targets' verdicts: one
    table per window size."""
    return "\n".join(_estimate(name) for name in ESTIMATES) + "\n" + machines(list(ESTIMATES)) \
        + "\n"  # fmt: skip


def _estimate(name: str) -> str:
    result = load(name)
    rows = []
    for scenario, s in result["scenarios"].items():
        checks = [c for c in result["checks"] if c["check"].startswith(f"{scenario}:")]
        held = sum(c["passed"] for c in checks)
        rows.append((
            scenario,
            _points(s["mae_ours_melanoma_sensitivity"]),
            _points(s["mae_cbpe_melanoma_sensitivity"]),
            _points(s["floor_melanoma_sensitivity"]), _pct(s["coverage_melanoma_sensitivity"]),
            _points(s.get("width_melanoma_sensitivity")),
            _points(s["mae_ours_balanced_accuracy"]), _points(s["mae_cbpe_balanced_accuracy"]),
            _pct(s["coverage_balanced_accuracy"]), _pct(s.get("unreliable_windows", 0)),
            f"{held} of {len(checks)}" if checks else "none (covariate shift)",
        ))  # fmt: skip
    gain = result.get("device_gain")
    device = (f"; the device scenarios score the test images again with each channel times "
              f"{', '.join(map(str, gain))} (R, G, B)" if gain else "")  # fmt: skip
    head = (f"{result['test_images']} scored test images, {result['windows']} windows of "
            f"{_n(result['window_size'])} per scenario{device} ({_link(name)}):\n\n")  # fmt: skip
    columns = ("scenario", "melanoma sensitivity: our error (points)", "CBPE's error (points)",
               "noise floor (points)", "our intervals' coverage", "their mean width (points)",
               "balanced accuracy: our error (points)", "CBPE's error (points)", "coverage",
               "windows marked unreliable", "targets held")  # fmt: skip
    return head + _table(columns, rows)


def rollout() -> str:
    """How many requests each way of judging needs to catch the weaker challenger."""
    result = load("rollout")
    grid, caught = result["requests"], result["caught"]
    shown = [n for n in (1600, 3200, 6400, grid[-1]) if n in grid]
    labels = {"shadow_paired": "shadow, paired (`melanoma_flips`)",
              "canary_check": f"canary at {_pct(result['canary_share'])}, the check "
                              "(`melanoma_flag_rate_drop`)",
              "canary_test_only": f"canary at {_pct(result['canary_share'])}, its test without "
                                  "the threshold"}  # fmt: skip
    rows = []
    for way, label in labels.items():
        needed = result["requests_needed"][way]
        by = f"{_n(needed)} requests" if needed else f"not within {_n(grid[-1])}"
        rows.append((label, *(_pct(caught[way][grid.index(n)]) for n in shown), by))
    head = (
        f"{result['test_images']} test images, {result['melanomas']} melanomas, sensitivity "
        f"{result['sensitivity']:.2f}; the challenger loses {_pct(result['drop'])} of its "
        f"melanoma flags and differs on {_pct(result['noise'])} of other images; "
        f"{result['runs']} rollouts of up to {_n(grid[-1])} requests ({_link('rollout')}):\n\n"
    )
    columns = ("judged", *(f"caught by {_n(n)} requests" for n in shown),
               f"{_pct(result['power'])} caught by")  # fmt: skip
    return head + _table(columns, rows) + "\n" + machines(["rollout"]) + "\n"


def reliability() -> str:
    """The predictor under the soak mix: as a process, and in its container under the chart's
    limits; every figure from the result files."""
    container = load("container-memory")
    inside = container["soak"]
    bodies, photos = len(container["bodies_300mb"]), sum(container["burst_12mp"].values())
    rows = [
        *(_process_soak(load(name), name) for name in ("soak", "soak-32")),
        (f"The predictor's container as the chart runs it (podman: {container['memory_limit_mib']}"
         f" MiB memory, {container['cpus']} CPUs, read-only root, uid 10001; {inside['arch']} at "
         f"{inside['image_size']} px): the soak mix at {inside['concurrency']} in flight; then "
         f"{bodies} bodies of 300 MB at once (half declared, half chunked); then {photos} "
         "photographs of 12 MP at once",
         f"{_n(inside['requests'])} requests; {bodies} bodies; {photos} photographs",
         _soak_held(inside) + f". Bodies: {_statuses(container['bodies_300mb'])}. Photographs: "
         + ", ".join(f"{n} answered" if code == "200" else f"{n} got {code}"
                     for code, n in container["burst_12mp"].items())
         + f". Peak resident {_n(container['peak_rss_mb'])} MiB of "
         f"{container['memory_limit_mib']}; never OOM-killed, ready throughout",
         _link("container-memory"),
         f"`DERMAOPS_CONTAINER_SOAK={inside['requests']} .venv/bin/pytest "
         "tests/e2e/test_containers.py -k memory_limit` (root, podman; "
         "`DERMAOPS_TEST_ARTIFACTS=DIR` keeps the file; `make test` soaks fewer requests)"),
    ]  # fmt: skip
    return _table(("tried", "how many", "what held", "result", "reproduce"), rows) + "\n" \
        + machines(["soak", "soak-32", "container-memory"]) + "\n"  # fmt: skip


def _process_soak(f: Result, name: str) -> tuple[str, ...]:
    """A soak of the predictor as a process, with its p99 against the request deadline."""
    from dermaops.serving.settings import ServingSettings

    deadline = ServingSettings.model_fields["request_timeout_s"].default
    return (f"The predictor as a process ({f['arch']} at {f['image_size']} px, {f['backend']}, "
            f"default settings) under the soak mix, {_pct(f['bad_share'])} bad, "
            f"{f['concurrency']} in flight",
            f"{_n(f['requests'])} requests after {_n(f['warmup_requests'])} of warm-up "
            f"({_n(f['bad_requests'])} bad)",
            _soak_held(f) + f"; p99 {f['p99_ms'] / 1000 / deadline:.1%} of the "
            f"{_n(deadline)} s request deadline", _link(name),
            f"`dermaops bench soak --requests {f['requests']} --concurrency {f['concurrency']} "
            f"--bad-share {f['bad_share']}`")  # fmt: skip


def trainjob() -> str:
    """The TrainJob's two nodes in containers, against one process with the same settings."""
    r = load("trainjob-local")
    s, last = r["settings"], r["last_epoch"]
    rows = [(
        f"2 nodes x 1 process ({r['cpus_per_node']} CPU, {r['memory_per_node']} each), gloo; "
        f"{s['model']} at {s['image_size']} px, global batch {s['batch_size']}, "
        f"{r['epochs']} epochs on {_n(r['images'])} generated images",
        f"exit codes {', '.join(map(str, r['exit_codes']))}; {_n(r['wall_s'])} s "
        f"(one process on the host: {_n(r['one_process_wall_s'])} s); last epoch: val macro-F1 "
        f"{last['val_f1_macro']:.3f}",
        f"first epoch's loss {r['first_epoch_loss_vs_one_process']:.1e} apart (absolute), weights "
        f"{r['weights_vs_one_process']:.1%} (noise floor, {r['noise_floor']['what']}: "
        f"{r['noise_floor']['first_epoch_loss']:.1e} and {r['noise_floor']['weights']:.1%})",
        f"`{r['image']}` ({_n(r['image_mb'])} MB); master `{r['master']}`",
        _link("trainjob-local"),
    )]  # fmt: skip
    return _table(("what ran", "how it ended", "against one process", "image", "result"), rows) \
        + "\n" + machines(["trainjob-local"]) + "\n"  # fmt: skip


def _soak_held(f: Result) -> str:
    growth = f"{f['rss_growth'] * 100:+.1f} %" if f["rss_growth"] is not None else "not measured"
    return (f"{f['good_errors']} good-request errors, {f['bad_not_4xx']} bad requests answered "
            f"other than 4xx, {f['connection_errors']} connection errors; p50 {_n(f['p50_ms'])} "
            f"ms, p99 {_n(f['p99_ms'])} ms; {_n(f['images_per_s'])} images/s "
            f"({f['throughput_vs_in_process']}x one in-process loop); resident "
            f"{_n(f['idle_rss_mb'])} MB at rest, {_n(f['rss_mb_after_warmup'])} -> "
            f"{_n(f['rss_mb_end'])} MB after warm-up ({growth}); "
            f"{'ready' if f['ready_after'] else 'NOT ready'} afterwards; targets "
            f"{'held' if f['held'] else 'missed: ' + '; '.join(f['missed'])}")  # fmt: skip


def _statuses(lines: list[str]) -> str:
    codes: dict[str, int] = {}
    for line in lines:
        code = line.split()[1]
        codes[code] = codes.get(code, 0) + 1
    return ", ".join(f"{n} got {code}" for code, n in sorted(codes.items()))


def _table(columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


#: block name -> (the page it stands in, its renderer)
BLOCKS: dict[str, tuple[str, Callable[[], str]]] = {
    "benchmarks": ("benchmarks.md", benchmarks),
    "profile": ("benchmarks.md", profile),
    "estimate": ("benchmarks.md", estimate),
    "rollout": ("rollouts.md", rollout),
    "reliability": ("reliability.md", reliability),
    "trainjob": ("training.md", trainjob),
}


def publish(source: Path) -> Path:
    """Copy a result file into docs/results/ as the docs show it (see the module's docstring)."""
    result = json.loads(source.read_text())
    if "machine" not in result:
        raise SystemExit(f"{source}: no machine stamp: not written by `dermaops bench` today")
    os_name, _, release = result["machine"]["os"].partition(" ")
    result["machine"]["os"] = f"{os_name} {'.'.join(release.split('.')[:2])}".strip()
    target = RESULTS / source.name
    target.write_text(json.dumps(_public(result), indent=2) + "\n")
    return target


def _public(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _public(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_public(v) for v in value]
    if isinstance(value, str) and value.startswith("/") and "\n" not in value:
        return Path(value).name
    if isinstance(value, str) and value.startswith(("http://127.0.0.1", "http://localhost")):
        return "loopback"
    return value


def markers(name: str) -> tuple[str, str]:
    return f"<!-- results:{name}:start -->\n", f"<!-- results:{name}:end -->"


def shown(page: str, name: str) -> str:
    """The block ``name`` as it stands in ``page``'s text."""
    start, end = markers(name)
    if start not in page or end not in page:
        raise SystemExit(f"no {start.strip()} ... {end} block in the page")
    return page[page.index(start) + len(start) : page.index(end)]


def stale() -> list[str]:
    """The blocks whose text differs from what their result files give."""
    return [name for name, (page, render) in BLOCKS.items()
            if shown((DOCS / page).read_text(), name) != render()]  # fmt: skip


def write() -> list[str]:
    """Rewrite every stale block; return their names."""
    changed = stale()
    for name in changed:
        page, render = BLOCKS[name]
        path = DOCS / page
        text = path.read_text()
        start, end = markers(name)
        before, after = text[: text.index(start) + len(start)], text[text.index(end) :]
        path.write_text(before + render() + after)
    return changed


def main(argv: list[str]) -> int:
    if argv[1:2] == ["--publish"]:
        for source in argv[2:]:
            print(f"published {publish(Path(source)).relative_to(ROOT)}")
    elif argv[1:] == ["--check"]:
        differ = stale()
        for name in differ:
            print(f"{BLOCKS[name][0]}: the {name} table differs from docs/results/")
        return 1 if differ else 0
    for name in write():
        print(f"rewrote the {name} table in docs/{BLOCKS[name][0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
