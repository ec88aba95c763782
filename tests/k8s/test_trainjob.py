"""Training on more than one node: the TrainJob the train stage creates, the chart's runtime and
RBAC, validated strictly, and the environment between Trainer's plugin, torchrun and
``dermaops train``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import kubernetes_validate
import pytest
import yaml
from typer.testing import CliRunner

from dermaops.cli.app import app
from dermaops.pipelines import PipelineSettings
from dermaops.train.trainjob import JOBSET_LABEL, PLUGIN_ENV, SHARED, job_name
from tests.k8s.chart import CHART, KUBE_VERSION, URI, by_kind, helm, render

pytestmark = pytest.mark.k8s

ON = [*URI, "--set", "trainer.enabled=true",
      "--set", "pipelines.checkpoints.accessModes={ReadWriteMany}"]  # fmt: skip


def _printed(*args: str, env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    done = CliRunner().invoke(app, ["pipeline", "trainjob", *args],
                              env={"COLUMNS": "300", **(env or {})})  # fmt: skip
    assert done.exit_code == 0, done.output
    return list(yaml.safe_load_all(done.output))


def test_the_printed_trainjob_validates_and_trains_on_every_gpu_of_every_node(
    validate_custom_resource: Callable[[dict[str, Any]], None],
) -> None:
    job, policy = _printed("--run-id", "training-pipeline-7f3c", "--nodes", "2",
                           "--gpus-per-node", "4")  # fmt: skip
    validate_custom_resource(job)
    kubernetes_validate.validate(policy, KUBE_VERSION, strict=True)
    name = job["metadata"]["name"]
    assert name == job_name("training-pipeline-7f3c") and len(name) <= 40
    trainer = job["spec"]["trainer"]
    assert (trainer["numNodes"], trainer["numProcPerNode"]) == (2, 4)
    assert trainer["resourcesPerNode"]["limits"] == {"nvidia.com/gpu": 4}
    assert trainer["command"] == ["torchrun"] and trainer["args"][:3] == [
        "--no-python",
        "dermaops",
        "train",
    ]
    assert all(a.startswith(f"{SHARED}/runs/{name}/") for a in trainer["args"][4::2][:2])
    assert not PLUGIN_ENV & {e["name"] for e in trainer["env"]}, "the plugin's names are its own"
    assert job["spec"]["runtimeRef"] == {"apiGroup": "trainer.kubeflow.org",
                                         "kind": "ClusterTrainingRuntime",
                                         "name": "dermaops-torch"}  # fmt: skip
    selected = {"matchLabels": {JOBSET_LABEL: name}}
    assert policy["spec"]["podSelector"] == selected
    assert policy["spec"]["ingress"] == [{"from": [{"podSelector": selected}]}]


def test_cpu_nodes_train_one_process_each_without_accelerators(
    validate_custom_resource: Callable[[dict[str, Any]], None],
) -> None:
    job, _ = _printed("--run-id", "r1", "--nodes", "3", "--gpus-per-node", "0")
    validate_custom_resource(job)
    trainer = job["spec"]["trainer"]
    assert (trainer["numNodes"], trainer["numProcPerNode"]) == (3, 1)
    assert "limits" not in trainer["resourcesPerNode"]
    assert {"name": "DERMAOPS_TRAIN_DEVICE", "value": "cpu"} in trainer["env"]


def test_a_retried_task_names_the_same_job_and_bad_input_is_refused() -> None:
    assert _printed("--run-id", "run-9")[0]["metadata"]["name"] == job_name("run-9")
    assert job_name("run-9") != job_name("run-8")
    one = CliRunner().invoke(app, ["pipeline", "trainjob", "--run-id", "r", "--nodes", "1"])
    assert one.exit_code == 2 and "--nodes" in one.output
    blank = CliRunner().invoke(app, ["pipeline", "trainjob", "--run-id", " "],
                               env={"COLUMNS": "300"})  # fmt: skip
    assert blank.exit_code == 2 and "run id is empty" in blank.output


@pytest.mark.parametrize("release", ["dermaops", "clinic-a"])
def test_the_runtime_the_task_names_is_the_one_its_release_renders(release: str) -> None:
    """The seam between the chart and the compiled pipeline: the release's runtime by name."""
    done = helm("template", release, str(CHART), "--namespace", "dermaops",
                "--kube-version", KUBE_VERSION, *ON)  # fmt: skip
    assert done.returncode == 0, done.stderr
    docs = [d for d in yaml.safe_load_all(done.stdout) if d]
    (runtime,) = by_kind(docs, "ClusterTrainingRuntime")
    named = PipelineSettings(release=release, train_nodes=2).train_job().runtime
    assert named == runtime["metadata"]["name"]
    printed = _printed("--run-id", "r1", env={"DERMAOPS_PIPELINE_RELEASE": release})
    assert printed[0]["spec"]["runtimeRef"]["name"] == runtime["metadata"]["name"]


def test_the_chart_ships_the_runtime_and_only_the_rights_the_task_needs(
    validate_custom_resource: Callable[[dict[str, Any]], None],
) -> None:
    docs = render(*ON)
    (runtime,) = by_kind(docs, "ClusterTrainingRuntime")
    validate_custom_resource(runtime)
    assert runtime["metadata"]["name"] == "dermaops-torch"  # what TrainJobSettings names
    (node,) = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    assert node["name"] == "node", "the torch plugin's node job"
    pod = node["template"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["name"] == "node" and not PLUGIN_ENV & {
        e["name"] for e in container.get("env", [])}  # fmt: skip
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts[SHARED]]["persistentVolumeClaim"]["claimName"] == "dermaops-checkpoints"
    assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"} and pod["tolerations"]
    (role,) = [r for r in by_kind(docs, "Role") if r["metadata"]["name"].endswith("trainjobs")]
    kubernetes_validate.validate(role, KUBE_VERSION, strict=True)
    granted = {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"]
               for r in rule["resources"] for v in rule["verbs"]}  # fmt: skip
    assert granted == {
        *(("trainer.kubeflow.org", "trainjobs", v)
          for v in ("create", "get", "list", "watch", "delete")),
        *(("", "pods", v) for v in ("get", "list", "watch")), ("", "pods/log", "get"),
        *(("networking.k8s.io", "networkpolicies", v) for v in ("create", "get", "delete")),
    }  # fmt: skip
    (binding,) = [b for b in by_kind(docs, "RoleBinding")
                  if b["metadata"]["name"].endswith("pipelines-trainjobs")]  # fmt: skip
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "pipeline-runner",
                                    "namespace": "kubeflow"}]  # fmt: skip
    (claim,) = [c for c in by_kind(docs, "PersistentVolumeClaim")
                if c["metadata"]["name"] == "dermaops-checkpoints"]  # fmt: skip
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]


def test_no_runtime_by_default_and_none_without_a_shared_volume() -> None:
    assert not by_kind(render(*URI), "ClusterTrainingRuntime")
    done = helm("template", "dermaops", str(CHART), *URI, "--set", "trainer.enabled=true")
    assert done.returncode != 0 and "its accessModes need ReadWriteMany" in done.stderr


def test_the_plugins_environment_is_what_torchrun_reads_as_its_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What Trainer's torch plugin gives node 1 of 2 (4 processes each), read by torchrun's own
    argument parser with the TrainJob's args: torchrun then starts ``dermaops train`` with
    WORLD_SIZE 8, which :class:`dermaops.train.step.Distributed` joins."""
    from torch.distributed.run import get_args_parser

    job, _ = _printed("--run-id", "r2", "--nodes", "2", "--gpus-per-node", "4")
    master = f"{job['metadata']['name']}-node-0-0.{job['metadata']['name']}"
    plugin = {"PET_NNODES": "2", "PET_NPROC_PER_NODE": "4", "PET_NODE_RANK": "1",
              "PET_MASTER_ADDR": master, "PET_MASTER_PORT": "29500"}  # fmt: skip
    assert set(plugin) == PLUGIN_ENV
    for name, value in plugin.items():
        monkeypatch.setenv(name, value)
    parsed = get_args_parser().parse_args(job["spec"]["trainer"]["args"])
    assert (parsed.nnodes, parsed.nproc_per_node, parsed.node_rank) == ("2", "4", 1)
    assert (parsed.master_addr, parsed.master_port) == (master, 29500)
    assert parsed.no_python and parsed.training_script == "dermaops"
    assert parsed.training_script_args[:1] == ["train"]


def test_the_printed_trainjob_takes_its_shape_from_the_pipeline_settings() -> None:
    """What the compiled pipeline would pass, unless a flag says otherwise."""
    job, _ = _printed("--run-id", "r1", env={"DERMAOPS_PIPELINE_GPUS": "4",
                                             "DERMAOPS_PIPELINE_TRAIN_NODES": "3"})  # fmt: skip
    trainer = job["spec"]["trainer"]
    assert (trainer["numNodes"], trainer["numProcPerNode"]) == (3, 4)
    job, _ = _printed("--run-id", "r1", "--nodes", "2", env={"DERMAOPS_PIPELINE_GPUS": "4"})
    assert job["spec"]["trainer"]["numNodes"] == 2
