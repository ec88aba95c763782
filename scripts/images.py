"""`make images`: build the images with podman and hold each to its size budget.

Prints target, size and budget per image (sizes as `podman image inspect` reports them, in
decimal MB) and exits 1 when one is over. A CPU predictor image pulls on every new replica, so its
size is its cold start.
Usage: python scripts/images.py [--base IMAGE] [--tag TAG] [--podman-arg ARG ...]
                                [--cold-start MODEL_DIR] [TARGET ...]
  --base        BASE_IMAGE (a Debian-based Python 3.11; default: the Dockerfile's pinned slim)
  --podman-arg  passed to `podman build` (e.g. -v CA.crt:/etc/ssl/certs/ca-certificates.crt:ro
                behind a proxy that re-signs TLS)
  --cold-start  also time the CPU predictor's pod serving MODEL_DIR (a model folder with
                model.onnx) as the chart runs it: KServe's storage code (the storage-initializer
                image) fetching the folder as an archive over HTTP into the pod's model volume,
                then the serving container, uid 10001, read-only root; seconds from creating the
                pod to ready, and from starting the serving container to ready
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from dermaops.net import free_port, wait_until_ready

BUDGETS_MB = {"serving": 800, "ui": 800, "monitor": 1200, "mlflow": 1200,
              "storage-initializer": 600}  # fmt: skip
NETWORK, USER = "dermaops-coldstart", "10001:10001"  # the chart's pods' user


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


@dataclass(frozen=True)
class ColdStart:
    pod: float  # seconds from `podman pod create` to ready (the model fetched, then loaded)
    container: float  # seconds from starting the serving container to ready


def podman(*args: str, check: bool = True) -> str:
    done = subprocess.run(["podman", *args], check=check, capture_output=True, text=True)
    return done.stdout.strip()


@contextmanager
def archive_server(image: str, model_dir: Path) -> Iterator[str]:
    """The model folder zipped and served over HTTP from a container on NETWORK; its URL."""
    with tempfile.TemporaryDirectory() as folder:
        archive = Path(folder) / "model.zip"
        with zipfile.ZipFile(archive, "w") as z:
            for path in model_dir.iterdir():
                z.write(path, path.name)
        Path(folder).chmod(0o755)
        archive.chmod(0o644)
        podman("network", "rm", "-f", NETWORK, check=False)
        podman("network", "create", NETWORK)
        name = "dermaops-coldstart-archive"
        try:
            podman("run", "-d", "--rm", "--name", name, "--network", NETWORK, "--user", USER,
                   "-v", f"{folder}:/srv:ro", "--entrypoint", "python3", image,
                   "-m", "http.server", "8000", "--directory", "/srv")  # fmt: skip
            networks = json.loads(podman("inspect", name))[0]["NetworkSettings"]["Networks"]
            address = networks[NETWORK]["IPAddress"]
            yield f"http://{address}:8000/model.zip"
        finally:
            podman("rm", "-f", name, check=False)
            podman("network", "rm", "-f", NETWORK, check=False)


def cold_start(serving: str, initializer: str, model_dir: Path, runs: int = 3) -> ColdStart:
    """Medians over ``runs`` pods: the storage initializer first, to completion, then the
    predictor (uid 10001, read-only root, DERMAOPS_HOME on a tmpfs, the model volume read-only)."""
    pods, containers = [], []
    with archive_server(serving, model_dir.resolve()) as uri:
        for run in range(runs):
            pod, port = f"dermaops-coldstart-{run}", free_port()
            volume = f"{pod}-model"  # the emptyDir, owned by the pod's uid (as fsGroup makes it)
            podman("volume", "create", volume)
            podman("run", "--rm", "--user", "0", "-v", f"{volume}:/mnt/models", "--entrypoint",
                   "chown", serving, USER, "/mnt/models")  # fmt: skip
            try:
                started = time.perf_counter()
                podman("pod", "create", "--name", pod, "--network", NETWORK,
                       "--publish", f"127.0.0.1:{port}:8080")  # fmt: skip
                podman("run", "--rm", "--pod", pod, "--user", USER, "--read-only",
                       "-v", f"{volume}:/mnt/models", initializer, uri, "/mnt/models")  # fmt: skip
                loading = time.perf_counter()
                podman("run", "-d", "--pod", pod, "--user", USER, "--read-only", "--tmpfs", "/tmp",
                       "-e", "DERMAOPS_HOME=/tmp/dermaops", "-v", f"{volume}:/mnt/models:ro",
                       serving)  # fmt: skip
                wait_until_ready(f"http://127.0.0.1:{port}/v2/models/dermaops/ready", 120)
                ready = time.perf_counter()
                pods.append(ready - started)
                containers.append(ready - loading)
            finally:
                podman("pod", "rm", "-f", pod, check=False)
                podman("volume", "rm", "-f", volume, check=False)
    return ColdStart(statistics.median(pods), statistics.median(containers))


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
    if args.cold_start and not {"serving", "storage-initializer"} <= set(args.targets):
        parser.error("--cold-start needs the serving and storage-initializer targets")
    rows = [(t, build(t, args.tag, args.base, args.podman_arg) / 1e6) for t in args.targets]
    print(f"{'image':<20} {'size MB':>8} {'budget MB':>10}")
    over = 0
    for target, size in rows:
        budget = BUDGETS_MB[target]
        over += size > budget
        print(f"{target:<20} {size:>8.0f} {budget:>10}{'  OVER' if size > budget else ''}")
    if args.cold_start:
        seconds = cold_start(f"localhost/dermaops-serving:{args.tag}",
                             f"localhost/dermaops-storage-initializer:{args.tag}",
                             args.cold_start)  # fmt: skip
        print(f"CPU predictor cold start, median of 3: pod created to ready {seconds.pod:.1f} s "
              f"(the model fetched by KServe's storage code, then loaded); "
              f"serving container started to ready {seconds.container:.1f} s")  # fmt: skip
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
