"""The committed pipeline YAML is current, and says what the cluster must do."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from kfp import components

from dermaops.pipelines import PipelineSettings, compile_all
from dermaops.pipelines.training import COMPILED, KINDS

pytestmark = pytest.mark.k8s


def _documents(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    spec, platform = yaml.safe_load_all(path.read_text())
    return spec, platform


def _without_sdk_version(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.startswith("sdkVersion:"))


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("compiled")
    compile_all(out, PipelineSettings())
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_committed_yaml_is_what_the_code_compiles(fresh: Path, kind: str) -> None:
    name = f"{kind}_pipeline.yaml"
    committed = COMPILED / name
    assert committed.is_file(), f"run `dermaops pipeline compile` and commit {committed}"
    assert _without_sdk_version((fresh / name).read_text()) == _without_sdk_version(
        committed.read_text()
    ), f"{committed} is stale: run `dermaops pipeline compile` and commit it"


@pytest.mark.parametrize("kind", KINDS)
def test_kfp_loads_it(kind: str) -> None:
    loaded = components.load_component_from_file(str(COMPILED / f"{kind}_pipeline.yaml"))
    assert loaded.name == f"dermaops-{kind}"


@pytest.mark.parametrize("kind", KINDS)
def test_retries_caching_and_no_retry_around_the_gate(kind: str) -> None:
    spec, _ = _documents(COMPILED / f"{kind}_pipeline.yaml")
    tasks = spec["components"]["comp-exit-handler-1"]["dag"]["tasks"]
    retries = {name: t.get("retryPolicy", {}).get("maxRetryCount", 0) for name, t in tasks.items()}
    assert retries == {
        "ingest": 3, "prepare": 1, "baseline": 0, "train": 1, "evaluate": 1,
        "gate": 0, "register": 0, "promote": 0, "condition-2": 0,
    }  # fmt: skip
    ingest = tasks["ingest"]["retryPolicy"]
    assert (ingest["backoffDuration"], ingest["backoffFactor"]) == ("30s", 2.0)
    cached = {name for name, t in tasks.items() if t.get("cachingOptions", {}).get("enableCache")}
    expected = {"prepare", "baseline"} | ({"ingest"} if kind == "training" else set())
    assert cached == expected
    assert "retryPolicy" not in spec["root"]["dag"]["tasks"]["notify"]


def test_train_runs_on_the_gpu_pool() -> None:
    spec, platform = _documents(COMPILED / "training_pipeline.yaml")
    resources = spec["deploymentSpec"]["executors"]["exec-train"]["container"]["resources"]
    assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert resources["accelerator"]["resourceCount"] == "1"
    train = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train"]
    assert train["nodeSelector"] == {"labels": {"nvidia.com/gpu.present": "true"}}
    assert train["tolerations"] == [
        {"effect": "NoSchedule", "key": "nvidia.com/gpu", "operator": "Exists"}
    ]
    others = spec["deploymentSpec"]["executors"]
    assert all("accelerator" not in e["container"].get("resources", {}) for n, e in others.items()
               if n != "exec-train")  # fmt: skip


@pytest.mark.parametrize("kind", KINDS)
def test_train_keeps_its_checkpoint_where_a_retry_in_a_new_pod_finds_it(kind: str) -> None:
    spec, platform = _documents(COMPILED / f"{kind}_pipeline.yaml")
    train = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train"]
    (mount,) = train["pvcMount"]
    assert mount["mountPath"] == "/mnt/checkpoints"
    assert mount["pvcNameParameter"]["runtimeValue"]["constant"] == "dermaops-checkpoints"
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    assert parameters["checkpoints"]["defaultValue"] == "/mnt/checkpoints"
    (task,) = [c["dag"]["tasks"]["train"] for c in spec["components"].values()
               if "train" in c.get("dag", {}).get("tasks", {})]  # fmt: skip
    assert task["inputs"]["parameters"]["checkpoints"]["componentInputParameter"] == (
        "pipelinechannel--checkpoints"
    )


@pytest.mark.parametrize("kind", KINDS)
def test_credentials_come_from_secrets_by_name_only(kind: str) -> None:
    spec, platform = _documents(COMPILED / f"{kind}_pipeline.yaml")
    for executor in spec["deploymentSpec"]["executors"].values():
        assert "env" not in executor["container"], "no literal environment in the YAML"
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    secrets = {s["secretName"] for e in executors.values() for s in e.get("secretAsEnv", [])}
    assert secrets == {"dermaops-mlflow", "dermaops-object-store", "dermaops-webhook"}
    envs = {k["envVar"] for e in executors.values() for s in e.get("secretAsEnv", [])
            for k in s["keyToEnv"]}  # fmt: skip
    assert {"MLFLOW_TRACKING_URI", "AWS_SECRET_ACCESS_KEY", "DERMAOPS_WEBHOOK_URL"} <= envs
    assert "exec-prepare" not in executors or "secretAsEnv" not in executors["exec-prepare"]
    if kind == "retraining":
        assert executors["exec-ingest"]["pvcMount"][0]["mountPath"] == "/mnt/feedback"


def test_every_task_runs_the_project_image_without_installing_packages() -> None:
    spec, _ = _documents(COMPILED / "training_pipeline.yaml")
    for name, executor in spec["deploymentSpec"]["executors"].items():
        container = executor["container"]
        assert container["image"] == PipelineSettings().image, name
        assert "pip install" not in " ".join(container["command"]), name


def test_train_on_nodes_follows_a_trainjob_from_a_small_pod(tmp_path: Path) -> None:
    """train_nodes > 1: the train task passes its TrainJob's shape and takes no accelerator
    (the TrainJob's nodes are on the GPU pool); the checkpoint volume it shares is mounted."""
    compile_all(tmp_path, PipelineSettings(train_nodes=2, gpus=4))
    spec, platform = _documents(tmp_path / "training_pipeline.yaml")
    resources = spec["deploymentSpec"]["executors"]["exec-train"]["container"].get("resources", {})
    assert "accelerator" not in resources
    train = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train"]
    assert "nodeSelector" not in train and train["pvcMount"][0]["mountPath"] == "/mnt/checkpoints"
    (task,) = [c["dag"]["tasks"]["train"] for c in spec["components"].values()
               if "train" in c.get("dag", {}).get("tasks", {})]  # fmt: skip
    given = {k: v["runtimeValue"]["constant"] for k, v in task["inputs"]["parameters"].items()
             if "runtimeValue" in v}  # fmt: skip
    shape = given["trainjob"]
    assert shape["nodes"] == 2 and shape["gpus_per_node"] == 4
    assert shape == PipelineSettings(train_nodes=2, gpus=4).train_job().model_dump()
    assert shape["image"] == PipelineSettings().image and shape["runtime"] == "dermaops-torch"
    with pytest.raises(ValueError, match="train_nodes > 1 needs checkpoint_pvc"):
        PipelineSettings(train_nodes=2, checkpoint_pvc="")
