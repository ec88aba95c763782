"""`make trainjob-local`: a TrainJob's two nodes, as the chart and the train task render them,
run as containers under podman on one machine.

Not in `make test`: the trainer image carries torch with CUDA (about 7 GB). It runs as root
(rootful podman; the shared folder is handed to the pods' user, 10001). What it does:
1. builds the trainer image (the Dockerfile's `trainer` target) with podman, unless `--image`
   names one;
2. generates and prepares a set on this machine into a shared folder laid out as the pipelines'
   volume (`/shared/runs/<job>/prepared`), the train settings file beside it;
3. takes the TrainJob the train task would create (`dermaops.train.trainjob.trainjob`: 2 nodes,
   CPUs) and the chart's ClusterTrainingRuntime (`helm template`), and starts each node as a
   container: the runtime's pod template (its user, read-only root, dropped capabilities, the
   shared volume, a memory-backed /dev/shm of its size, /tmp) with the TrainJob's image,
   command, args and env, and what Trainer's torch plugin adds (`PET_*`); each node's JobSet
   DNS name (`<job>-node-0-<rank>.<job>`, which `PET_MASTER_ADDR` gives) resolves in every node
   to its fixed address on a podman network;
4. waits for both nodes, trains the same settings as one process on this machine (and again on
   one thread: the noise floor of float arithmetic), and writes a result stamped like the
   benchmarks' (`$DERMAOPS_HOME/bench/trainjob-local.json`): each node's exit and wall time, the
   run's last epoch, and how far the two-node weights are from the one-process ones.

The per-node requests are scaled down to this machine (`--cpus`, `--memory`); everything else is
as rendered. Usage:
  python scripts/trainjob_local.py [--image IMAGE] [--base IMAGE] [--n 400] [--epochs 2]
                                   [--cpus 1] [--memory 4g] [--json PATH] [--keep]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from dermaops.bench import write_result
from dermaops.settings import Home
from dermaops.train.layout import CHECKPOINT
from dermaops.train.loop import train
from dermaops.train.settings import TrainSettings
from dermaops.train.trainjob import SHARED, TrainJobSettings, job_name, run_folders, trainjob

ROOT = Path(__file__).resolve().parents[1]
RUN = "trainjob-local"
MASTER_PORT = "29500"  # what Trainer's torch plugin sets
CA = Path("/etc/ssl/certs/ca-certificates.crt")


def podman(*args: str, check: bool = True, timeout: float = 3600) -> str:
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout,
                          check=False)  # fmt: skip
    if check and done.returncode:
        raise SystemExit(f"podman {' '.join(args[:3])} ... failed:\n{done.stderr[-3000:]}")
    return done.stdout.strip()


def build_trainer(base: str | None) -> str:
    image = "localhost/dermaops-trainer:local"
    command = ["build", "--target", "trainer", "-t", image]
    if base:
        command += ["--build-arg", f"BASE_IMAGE={base}"]
    if CA.is_file():  # behind a proxy that re-signs TLS, pip inside the build needs it
        command += ["--volume", f"{CA}:{CA}:ro"]
    print(f"building {image} (torch with CUDA: several GB, minutes)", flush=True)
    podman(*command, str(ROOT))
    return image


def runtime_pod(helm: str) -> dict[str, Any]:
    """The node pod template of the chart's ClusterTrainingRuntime, as helm renders it."""
    rendered = subprocess.run(
        [helm, "template", "dermaops", str(ROOT / "charts" / "dermaops"),
         "--set", "model.storageUri=s3://unused/model", "--set", "trainer.enabled=true",
         "--set", "pipelines.checkpoints.accessModes={ReadWriteMany}",
         "--show-only", "templates/trainer.yaml"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    (runtime,) = [d for d in yaml.safe_load_all(rendered)
                  if d and d["kind"] == "ClusterTrainingRuntime"]  # fmt: skip
    (job,) = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    pod: dict[str, Any] = job["template"]["spec"]["template"]["spec"]
    return pod


SUBNET = "10.89.71"  # the podman network's /24: each node at a fixed address


def dns_name(job: dict[str, Any], rank: int) -> str:
    """Node ``rank``'s name under JobSet's headless Service: what PET_MASTER_ADDR names."""
    name = job["metadata"]["name"]
    return f"{name}-node-0-{rank}.{name}"


def node_command(
    pod: dict[str, Any],
    job: dict[str, Any],
    rank: int,
    shared: Path,
    network: str,
    cpus: str,
    memory: str,
) -> list[str]:
    """`podman run` for node ``rank``: the runtime's pod template and the TrainJob's trainer,
    as Trainer merges them, and the torch plugin's env."""
    trainer, name = job["spec"]["trainer"], job["metadata"]["name"]
    (container,) = pod["containers"]
    security, context = container.get("securityContext", {}), pod.get("securityContext", {})
    volumes = {v["name"]: v for v in pod["volumes"]}
    args = ["run", "-d", "--name", f"{name}-node-0-{rank}", "--network", network,
            "--ip", f"{SUBNET}.{10 + rank}", "--hostname", f"{name}-node-0-{rank}",
            "--cpus", cpus, "--memory", memory,
            "--user", f"{context['runAsUser']}:{context['runAsGroup']}"]  # fmt: skip
    for other in range(trainer["numNodes"]):  # podman's own DNS takes no dotted aliases
        args += ["--add-host", f"{dns_name(job, other)}:{SUBNET}.{10 + other}"]
    if security.get("readOnlyRootFilesystem"):
        args.append("--read-only")
    if security.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    for cap in security.get("capabilities", {}).get("drop", []):
        args += ["--cap-drop", cap]
    for mount in container["volumeMounts"]:
        volume = volumes[mount["name"]]
        if "persistentVolumeClaim" in volume:
            args += ["--volume", f"{shared}:{mount['mountPath']}"]
        elif (
            volume.get("emptyDir", {}).get("medium") == "Memory"
            and mount["mountPath"] == "/dev/shm"
        ):
            args += ["--shm-size", volume["emptyDir"]["sizeLimit"].replace("Gi", "g")]
        elif "emptyDir" in volume:
            args += ["--tmpfs", f"{mount['mountPath']}:rw,mode=1777"]
        else:
            raise SystemExit(f"volume {mount['name']}: {sorted(volume)} is not mapped here")
    env = {e["name"]: e["value"] for e in trainer["env"]} | {
        "PET_NNODES": str(trainer["numNodes"]),
        "PET_NPROC_PER_NODE": str(trainer["numProcPerNode"]),
        "PET_NODE_RANK": str(rank),
        "PET_MASTER_ADDR": dns_name(job, 0),
        "PET_MASTER_PORT": MASTER_PORT,
    }
    for key, value in sorted(env.items()):
        args += ["--env", f"{key}={value}"]
    (command,) = trainer["command"]
    return [*args, "--entrypoint", command, trainer["image"], *trainer["args"]]


def prepare_shared(shared: Path, n: int, settings: TrainSettings) -> tuple[Path, Path, str]:
    """The generated set prepared where the nodes read it; the settings file beside it."""
    data, out = (Path(p.replace(SHARED, str(shared), 1)) for p in run_folders(RUN))
    raw = shared / "raw"
    dermaops = str(Path(sys.executable).parent / "dermaops")
    subprocess.run([dermaops, "data", "synth", "--out", str(raw), "--n", str(n)], check=True)
    subprocess.run([dermaops, "data", "prepare", "--raw", str(raw), "--out", str(data)],
                   check=True)  # fmt: skip
    config = data.parent / "train.yaml"
    config.write_text(yaml.safe_dump(settings.model_dump(mode="json")))
    shutil.rmtree(raw)
    subprocess.run(["chown", "-R", "10001:10001", str(shared)], check=True)  # the pods' user
    return data, out, config.as_posix().replace(str(shared), SHARED, 1)


def _distance(a: dict[str, Any], b: dict[str, Any]) -> float:
    """How far ``a``'s weights are from ``b``'s, relative to ``b``'s norm."""
    keys = [k for k, v in b["model"].items() if v.dtype.is_floating_point]
    diff = sum(float((a["model"][k] - b["model"][k]).norm() ** 2) for k in keys)
    return round((diff / sum(float(b["model"][k].norm() ** 2) for k in keys)) ** 0.5, 4)


def _loss_gap(a: dict[str, Any], b: dict[str, Any]) -> float:
    return round(abs(a["history"][0]["train_loss"] - b["history"][0]["train_loss"]), 6)


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", help="a trainer image (default: build one)")
    parser.add_argument("--base", help="BASE_IMAGE of the build (default: the Dockerfile's)")
    parser.add_argument("--helm", default=str(ROOT / ".tools" / "bin" / "helm"))
    parser.add_argument("--n", type=int, default=400, help="generated images")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--cpus", default="1", help="CPUs per node container")
    parser.add_argument("--memory", default="4g", help="memory per node container")
    parser.add_argument("--json", type=Path, default=None, help="result file")
    parser.add_argument("--keep", action="store_true", help="keep containers and folders")
    return parser.parse_args(argv[1:])


def main(argv: list[str]) -> int:
    a = _arguments(argv)
    settings = TrainSettings(model="resnet18", weights="none", epochs=a.epochs, image_size=64,
                             batch_size=32, seed=3, export_onnx=False)  # fmt: skip
    image = a.image or build_trainer(a.base)
    pod = runtime_pod(a.helm)
    work = Path(tempfile.mkdtemp(prefix="dermaops-trainjob-"))
    shared, network = work / "shared", f"{job_name(RUN)}-net"
    data, out, config = prepare_shared(shared, a.n, settings)
    job = trainjob(RUN, "kubeflow", TrainJobSettings(nodes=2, gpus_per_node=0, image=image),
                   config=config)  # fmt: skip
    names = [f"{job['metadata']['name']}-node-0-{rank}" for rank in (0, 1)]
    podman("network", "create", "--subnet", f"{SUBNET}.0/24", network)
    try:
        started = time.monotonic()
        for rank in (0, 1):
            podman(*node_command(pod, job, rank, shared, network, a.cpus, a.memory))
        codes = [int(podman("wait", name)) for name in names]
        wall = time.monotonic() - started
        logs = [podman("logs", name, check=False) + "\n" for name in names]
        (work / "node-0.log").write_text(logs[0])
        if codes != [0, 0]:
            print(logs[0][-3000:], logs[1][-3000:], sep="\n---\n")
            raise SystemExit(f"the nodes exited {codes}; logs in {work}")
        together = torch.load(out / CHECKPOINT, weights_only=False)
        one_started = time.monotonic()
        alone = torch.load(train(data, work / "one", settings).run_dir / CHECKPOINT,
                           weights_only=False)  # fmt: skip
        one_wall = time.monotonic() - one_started
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # the noise floor: the same process on another thread count
        other = torch.load(train(data, work / "one-thread", settings).run_dir / CHECKPOINT,
                           weights_only=False)  # fmt: skip
        torch.set_num_threads(threads)
    finally:
        if not a.keep:
            for name in names:
                podman("rm", "-f", name, check=False)
            podman("network", "rm", "-f", network, check=False)
    last = together["history"][-1]
    result = {
        "benchmark": "trainjob-local",
        "image": image,
        "image_mb": round(int(json.loads(podman("image", "inspect", image))[0]["Size"]) / 1e6),
        "nodes": 2,
        "cpus_per_node": a.cpus,
        "memory_per_node": a.memory,
        "images": a.n,
        "settings": settings.model_dump(mode="json"),
        "exit_codes": codes,
        "wall_s": round(wall, 1),
        "one_process_wall_s": round(one_wall, 1),
        "epochs": len(together["history"]),
        "last_epoch": {k: v for k, v in last.items() if isinstance(v, int | float)},
        "weights_vs_one_process": _distance(together, alone),
        "first_epoch_loss_vs_one_process": _loss_gap(together, alone),
        "one_process_threads": threads,
        "noise_floor": {"what": f"one process on 1 thread against {threads}",
                        "weights": _distance(other, alone),
                        "first_epoch_loss": _loss_gap(other, alone)},
        "master": dns_name(job, 0),
    }  # fmt: skip
    path = a.json or Home.from_env().bench / "trainjob-local.json"
    write_result(result, path)
    print(json.dumps(result, indent=2))
    print(
        f"two nodes in containers trained {result['epochs']} epochs in {result['wall_s']} s; "
        f"their weights are {result['weights_vs_one_process']:.2%} from one process's ({path})"
    )
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
