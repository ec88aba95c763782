"""The registry -> KServe seam with real parts on both sides: `mlflow server` proxying artifacts
to S3 (moto's S3 server on loopback), the pipeline's register and `dermaops deploy` code against
it, KServe's own storage code (kserve-storage, at the pinned KServe version) fetching the URI
deploy chose, and the predictor loading that folder and reporting the registered version."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from dermaops.net import free_port, stop, wait_until_ready
from dermaops.registry import Registry
from dermaops.registry.model import log_training_run, storage_uri
from dermaops.registry.tags import STORAGE_URI_TAG
from dermaops.serving.process import predictor_process
from dermaops.settings import ARTIFACTS_DESTINATION_ENV
from tests import stores
from tests.conftest import Trained
from tests.k8s.chart import by_kind, pod_spec, render
from tests.k8s.conftest import find_tool
from tests.k8s.podman_pods import Host, container_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BUCKET, DESTINATION = "dermaops-mlflow", "s3://dermaops-mlflow/artifacts"


def tool(name: str) -> str:
    return find_tool(name, venv="storage")


@dataclass(frozen=True)
class Stack:
    s3: str  # moto's endpoint
    mlflow: str  # the tracking server, proxying artifacts to s3://BUCKET/artifacts

    def env(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL": self.s3, **stores.S3_KEYS}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("stack")
    port, log = free_port(), root / "mlflow.log"
    with stores.s3(root, "127.0.0.1", BUCKET) as s3, log.open("w") as out:
        server = subprocess.Popen(
            [tool("mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
             "--serve-artifacts", "--artifacts-destination", DESTINATION],
            stdout=out, stderr=subprocess.STDOUT,
            env=os.environ | stores.S3_KEYS | {"MLFLOW_S3_ENDPOINT_URL": s3},
        )  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until_ready(f"{url}/health", 120, server, log)
            yield Stack(s3, url)
        finally:
            stop(server)


def test_kserve_fetches_what_deploy_chose_and_the_predictor_serves_that_version(
    stack: Stack,
    trained: Trained,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    jpeg_bytes: Callable[..., bytes],
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", stack.mlflow)
    monkeypatch.setenv(ARTIFACTS_DESTINATION_ENV, DESTINATION)
    reg = Registry()
    run = reg.pipeline_run("kfp-s3", "training")
    version = log_training_run(reg, run.info.run_id, trained.prepared, trained.run,
                               trained.evaluation, trained.baseline)  # fmt: skip

    proxied = reg.client.get_model_version_download_uri(reg.model_name, version)
    assert proxied.startswith("mlflow-artifacts:"), "the server proxies: KServe cannot fetch it"
    recorded = reg.client.get_model_version(reg.model_name, version).tags[STORAGE_URI_TAG]
    assert recorded.startswith(f"{DESTINATION}/") and recorded.endswith("/artifacts/model")
    assert storage_uri(reg, version) == recorded

    # `dermaops deploy` chooses the URI (from the registry, not a flag), as the pipeline does.
    deployed = subprocess.run(
        [sys.executable, "-m", "dermaops", "deploy", version, "--dry-run"],
        capture_output=True, text=True, check=True,
        env=os.environ | {"KUBECONFIG": "/nonexistent"},
    )  # fmt: skip
    isvc = json.loads(deployed.stdout.splitlines()[0])
    (uri,) = [op["value"] for op in isvc["patch"] if op["path"].endswith("/env/1/value")]
    assert uri == recorded

    # KServe's storage initializer's own code fetches it from the store.
    models = tmp_path / "mnt" / "models"
    fetch = "import sys; from kserve_storage import Storage; Storage.download(*sys.argv[1:])"
    subprocess.run([tool("python"), "-c", fetch, uri, str(models)],
                   env=os.environ | stack.env(), check=True, capture_output=True)  # fmt: skip
    assert any(models.rglob("model.json")), "the DermaOps model folder inside the MLflow model"
    _the_charts_own_initializers_fetch(uri, stack, tmp_path / "chart")

    # The predictor, started as the chart starts it (the version from its env), serves it.
    env = {"DERMAOPS_SERVING_MODEL_VERSION": version}
    with predictor_process(models, tmp_path / "home", tmp_path / "predictor.log", env=env) as url:
        body = {"instances": [{"image_bytes": {"b64": _b64(jpeg_bytes(120, 90))}}]}
        answer = httpx.post(f"{url}/v1/models/dermaops:predict", json=body, timeout=60).json()
    assert answer["model_version"] == version


def _the_charts_own_initializers_fetch(uri: str, stack: Stack, folder: Path) -> None:
    """The storage initializers the chart runs itself (the canary Deployment of a KServe
    release, the monitor) fetch ``uri`` with nothing but the environment the kubelet gives them:
    the Secret of ``storageInitializer.credentialsSecret`` through envFrom, and the args with
    $(STORAGE_URI) expanded. KServe's webhook, which gives its own pods their credentials, never
    sees these pods."""
    docs = render("--set", f"model.storageUri={uri}", "--set", "predictor.canary.enabled=true",
                  "--set", "storageInitializer.credentialsSecret=model-store")  # fmt: skip
    host = Host(images={}, secrets={"model-store": stack.env()}, claims={}, workdir=folder)
    fetch = "import sys; from kserve_storage import Storage; Storage.download(*sys.argv[1:])"
    for name in ("dermaops-predictor-canary", "dermaops-monitor"):
        (deployment,) = [d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == name]
        (init,) = [c for c in pod_spec(deployment)["initContainers"]
                   if c["name"] == "storage-initializer"]  # fmt: skip
        env = container_env(init, host)
        source, target = (a.replace("$(STORAGE_URI)", env["STORAGE_URI"]) for a in init["args"])
        assert (source, target) == (uri, "/mnt/models")
        models = folder / name / "mnt" / "models"
        bare = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_"))}
        subprocess.run([tool("python"), "-c", fetch, source, str(models)],
                       env=bare | env, check=True, capture_output=True)  # fmt: skip
        assert any(models.rglob("model.json")), f"{name}'s initializer fetched no model"


def test_a_proxied_uri_without_its_destination_is_refused_with_the_fix(
    stack: Stack, trained: Trained, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", stack.mlflow)
    monkeypatch.delenv(ARTIFACTS_DESTINATION_ENV, raising=False)
    reg = Registry()
    run = reg.pipeline_run("kfp-s3-unmapped", "training")
    version = log_training_run(reg, run.info.run_id, trained.prepared, trained.run,
                               trained.evaluation, trained.baseline)  # fmt: skip
    assert STORAGE_URI_TAG not in reg.client.get_model_version(reg.model_name, version).tags
    done = subprocess.run(
        [sys.executable, "-m", "dermaops", "deploy", version, "--dry-run"],
        capture_output=True, text=True, check=False,
        env=os.environ | {"KUBECONFIG": "/nonexistent"},
    )  # fmt: skip
    assert done.returncode == 1 and ARTIFACTS_DESTINATION_ENV in done.stderr


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()
