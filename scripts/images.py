"""`make images`: build the images with podman and hold each to its size budget.

Prints target, size and budget per image (sizes as `podman image inspect` reports them, in
decimal MB) and exits 1 when one is over. A CPU predictor image pulls on every new replica, so its
size is its cold start.
Usage: python scripts/images.py [--base IMAGE] [--tag TAG] [--podman-arg ARG ...] [TARGET ...]
  --base        BASE_IMAGE (a Debian-based Python 3.11; default: the Dockerfile's pinned slim)
  --podman-arg  passed to `podman build` (e.g. -v CA.crt:/etc/ssl/certs/ca-certificates.crt:ro
                behind a proxy that re-signs TLS)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", default=list(BUDGETS_MB))
    parser.add_argument("--base")
    parser.add_argument("--tag", default="dev")
    parser.add_argument("--podman-arg", action="append", default=[])
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
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
