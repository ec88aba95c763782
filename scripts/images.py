"""`make images`: build the images with podman and hold each to its size budget.

Prints target, size and budget per image (sizes as `podman image inspect` reports them, in
decimal MB) and exits 1 when one is over. A CPU predictor image pulls on every new replica, so its
size is its cold start.
Usage: python scripts/images.py [--base IMAGE] [--tag TAG] [--podman-arg ARG ...]
                                [--cold-start MODEL_DIR] [TARGET ...]
  --base        BASE_IMAGE (a Debian-based Python 3.11; default: the Dockerfile's pinned slim)
  --podman-arg  passed to `podman build` (e.g. -v CA.crt:/etc/ssl/certs/ca-certificates.crt:ro
                behind a proxy that re-signs TLS)
  --cold-start  also time the serving container from `podman run` to ready, serving MODEL_DIR
                (a model folder with model.onnx) as the chart runs it: uid 10001, read-only root
                (DERMAOPS_HOME on a tmpfs where the chart mounts a volume)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from dermaops.net import free_port, wait_until_ready

BUDGETS_MB = {"serving": 800, "ui": 800, "monitor": 1200, "mlflow": 1200}


def build(target: str, tag: str, base: str | None, extra: list[str]) -> int:
    """Build one target; return its size in bytes."""
    image = f"localhost/dermaops-{target}:{tag}"
    command = ["podman", "build", "--target", target, "-t", image, *extra]
    if base:
        command += ["--build-arg", f"BASE_IMAGE={base}"]
    subprocess.run([*command, "."], check=True)
    out = subprocess.run(["podman", "image", "inspect", image], check=True, capture_output=True,
                         text=True).stdout  # fmt: skip
    return int(json.loads(out)[0]["Size"])


def cold_start(image: str, model_dir: Path, runs: int = 3) -> float:
    """Median seconds from `podman run` to the predictor's model being ready."""
    seconds = []
    for _ in range(runs):
        port = free_port()
        started = time.perf_counter()
        name = subprocess.run(
            ["podman", "run", "-d", "--rm", "--user", "10001:10001", "--read-only",
             "--tmpfs", "/tmp", "-e", "DERMAOPS_HOME=/tmp/dermaops",
             "-v", f"{model_dir.resolve()}:/mnt/models:ro",
             "-p", f"127.0.0.1:{port}:8080", image],
            check=True, capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip
        try:
            wait_until_ready(f"http://127.0.0.1:{port}/v2/models/dermaops/ready", 120)
            seconds.append(time.perf_counter() - started)
        finally:
            subprocess.run(["podman", "rm", "-f", name], check=False, capture_output=True)
    return statistics.median(seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", default=list(BUDGETS_MB))
    parser.add_argument("--base")
    parser.add_argument("--tag", default="dev")
    parser.add_argument("--podman-arg", action="append", default=[])
    parser.add_argument("--cold-start", type=Path, metavar="MODEL_DIR")
    args = parser.parse_args(argv)
    unknown = set(args.targets) - set(BUDGETS_MB)
    if unknown:
        parser.error(f"no budget for {', '.join(sorted(unknown))}; choose from {list(BUDGETS_MB)}")
    rows = [(t, build(t, args.tag, args.base, args.podman_arg) / 1e6) for t in args.targets]
    print(f"{'image':<10} {'size MB':>8} {'budget MB':>10}")
    over = 0
    for target, size in rows:
        budget = BUDGETS_MB[target]
        over += size > budget
        print(f"{target:<10} {size:>8.0f} {budget:>10}{'  OVER' if size > budget else ''}")
    if args.cold_start and "serving" in args.targets:
        seconds = cold_start(f"localhost/dermaops-serving:{args.tag}", args.cold_start)
        print(f"serving cold start (podman run to ready, median of 3): {seconds:.1f} s")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
