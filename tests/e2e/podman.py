"""Podman for the container test: a bootstrapped base (cached, verified), images, pods, cleanup.

No registry can be pulled here, so the base is Debian bookworm with python3 from `debootstrap`
(TOOLBOX.md), imported as a local image; its tarball is cached outside the clone under a key of
the inputs that make it, with a sha256 checked before every use. Builds mount the host's CA bundle,
so pip inside them trusts what the host trusts.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.k8s.conftest import ROOT

SUITE, PACKAGES = "bookworm", "python3,python3-venv,ca-certificates"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
CONF = "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n" \
       "[engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\n"  # fmt: skip


def podman(*args: str, check: bool = True, timeout: float = 900) -> str:
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout,
                          check=False, env=_env())  # fmt: skip
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args[:3])}... failed:\n{done.stderr[-3000:]}")
    return done.stdout.strip()


def logs(container: str) -> str:
    """A container's output, stdout and stderr together (podman replays them on its own two)."""
    done = subprocess.run(["podman", "logs", container], capture_output=True, text=True,
                          timeout=60, check=False, env=_env())  # fmt: skip
    return done.stdout + done.stderr


def _env() -> dict[str, str]:
    conf = Path(tempfile.gettempdir()) / "dermaops-containers.conf"
    if not conf.is_file():
        conf.write_text(CONF)  # TOOLBOX.md: rootful podman 4.3 with runc and cgroupfs
    return {**os.environ, "CONTAINERS_CONF": str(conf)}


def base_image(cache: Path) -> str:
    """The bootstrapped base as a local image, from the verified cache or made afresh."""
    key = hashlib.sha256(f"{SUITE} minbase {PACKAGES}".encode()).hexdigest()[:16]
    image = f"localhost/dermaops-ci-base:{key}"
    if _exists(image):
        return image
    tarball, digest = cache / f"base-{key}.tar", cache / f"base-{key}.tar.sha256"
    if not (tarball.is_file() and digest.is_file() and _sha256(tarball) == digest.read_text()):
        _bootstrap(tarball)
        digest.write_text(_sha256(tarball))
    podman("import", str(tarball), image)
    return image


def _exists(image: str) -> bool:
    return subprocess.run(["podman", "image", "exists", image], env=_env(),
                          check=False).returncode == 0  # fmt: skip


def _bootstrap(tarball: Path) -> None:
    tarball.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as root:
        subprocess.run(["debootstrap", "--variant=minbase", f"--include={PACKAGES}", SUITE, root],
                       check=True, capture_output=True, timeout=900)  # fmt: skip
        subprocess.run(["tar", "-C", root, "-cf", str(tarball), "."], check=True, timeout=300)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def image_name(target: str, tag: str) -> str:
    return f"localhost/dermaops-{target}:{tag}"


def build(target: str, base: str, tag: str) -> str:
    """Build a Dockerfile target on ``base``; the image's name."""
    image = image_name(target, tag)
    ca = ["--volume", f"{CA_BUNDLE}:{CA_BUNDLE}:ro"] if CA_BUNDLE.is_file() else []
    podman("build", "--target", target, "--build-arg", f"BASE_IMAGE={base}", *ca, "-t", image,
           str(ROOT))  # fmt: skip
    return image


def build_all(targets: Sequence[str], base: str, tag: str) -> dict[str, str]:
    """Build ``targets`` two at a time (pip installs on one core; a build is mostly pip), in the
    order given: the slowest first keeps the two lanes even. Target -> image; a failed build's
    error is raised once every build has stopped."""
    with ThreadPoolExecutor(2) as pool:
        images = pool.map(lambda target: build(target, base, tag), targets)
        return dict(zip(targets, images, strict=True))


def size(image: str) -> int:
    return int(json.loads(podman("image", "inspect", image))[0]["Size"])


def inspect(container: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(podman("container", "inspect", container))[0]
    return result


def address(container: str, network: str) -> str:
    return str(inspect(container)["NetworkSettings"]["Networks"][network]["IPAddress"])


# A Service on one host: a TCP forwarder listening on the Service's ports, relaying each to the
# pod's address and container port (what kube-proxy does), in a container of its own.
FORWARDER = """
import asyncio, sys

async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()

def relay(address, port):
    async def handle(reader, writer):
        up_reader, up_writer = await asyncio.open_connection(address, port)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
    return handle

async def main():
    address, pairs = sys.argv[1], [p.split(":") for p in sys.argv[2:]]
    servers = [await asyncio.start_server(relay(address, int(t)), "0.0.0.0", int(l))
               for l, t in pairs]
    await asyncio.gather(*(s.serve_forever() for s in servers))

asyncio.run(main())
"""


def service(name: str, network: str, image: str, pod_address: str, ports: dict[int, int]) -> str:
    """Start a Service's forwarder; its address on ``network``."""
    pairs = [f"{listen}:{target}" for listen, target in ports.items()]
    podman("run", "-d", "--name", name, "--network", network, "--read-only",  # a Service's
           "--sysctl", "net.ipv4.ip_unprivileged_port_start=0",  # port 80, as uid 10001
           "--entrypoint", "python3", image, "-c", FORWARDER, pod_address, *pairs)  # fmt: skip
    return address(name, network)


def gateway(network: str) -> tuple[str, str]:
    """The host's address on ``network`` and the network's subnet (CIDR)."""
    (subnet, *_) = json.loads(podman("network", "inspect", network))[0]["subnets"]
    return str(subnet["gateway"]), str(subnet["subnet"])


def pod_address(pod: str, network: str) -> str:
    infra = podman("pod", "inspect", pod, "--format", "{{.InfraContainerID}}")
    return address(infra, network)


def chowned_volume(name: str, owner: str) -> None:
    """A fresh podman volume owned by the pod's uid:gid (emptyDirs come up root-owned otherwise);
    one of the same name left by a killed run goes first."""
    podman("volume", "rm", "-f", name, check=False)
    podman("volume", "create", name)
    uid, gid = (int(part) for part in owner.split(":"))
    os.chown(podman("volume", "inspect", name, "--format", "{{.Mountpoint}}"), uid, gid)


@contextmanager
def cleaned(network: str) -> Iterator[list[str]]:
    """A podman network, and afterwards the removal of it and of what the test listed:
    ``pod:NAME``, ``container:NAME``, ``volume:NAME``, ``image:NAME`` (also when it failed)."""
    made: list[str] = []
    podman("network", "rm", "-f", network, check=False)  # left by a killed run
    podman("network", "create", network)
    try:
        yield made
    finally:
        remove(made)
        podman("network", "rm", "-f", network, check=False)


#: Removal kills at once: a test's containers hold nothing to drain, and a Python PID 1 without a
#: SIGTERM handler (the forwarders, the archive's http.server) would hold each removal 10 s.
KILL = {"pod": ["pod", "rm", "-f", "--time", "0"], "container": ["rm", "-f", "--time", "0"],
        "volume": ["volume", "rm", "-f"], "image": ["rmi", "-f"]}  # fmt: skip


def remove(made: list[str]) -> None:
    """Remove what ``made`` lists (``pod:NAME``, ``container:NAME``, ``volume:NAME``,
    ``image:NAME``), the last made first."""
    for item in reversed(made):
        kind, name = item.split(":", 1)
        podman(*KILL[kind], name, check=False)
