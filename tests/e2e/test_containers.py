"""The chart's objects in containers: the images built, the rendered pods run as the chart says.

The predictor, monitor and UI images and KServe's storage code as an image are built on a
bootstrapped Debian base; the chart is rendered with `kserve.enabled=false` and its monitor,
predictor and UI pods, and the helm test's pod, run through `tests/k8s/podman_pods.py` (init
containers first, the pod's user, read-only root, dropped capabilities, limits, the token Secret
as a file). KServe's storage initializer fetches the model from an archive served by a pod on the
test's own network; each Service is a forwarder there under its cluster DNS name. The test talks to
the pods only through their published loopback ports.

The archive is a zip: Debian bookworm's Python (3.11.2, the bootstrapped base's) has no
`tarfile` extraction filters, which kserve-storage 0.21 uses for tar archives; the pinned
python:3.11.16-slim base has them.
"""

from __future__ import annotations

import base64
import io
import json
import os
import runpy
import subprocess
import time
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch

from dermaops.bench import STAMP_KEYS, write_result
from dermaops.data.ood import ood_images
from dermaops.errors import DermaOpsError
from dermaops.model.artifact import Preprocessing, save_model_dir
from dermaops.model.embedding import WithEmbedding
from dermaops.model.export import export_onnx
from dermaops.model.factory import build_model
from dermaops.model.guard import GUARD, OodGuard
from dermaops.model.stem import pixels_to_batch
from dermaops.net import answers_ok, free_port, wait_until_ready
from dermaops.registry import Registry
from dermaops.registry.model import log_training_run, storage_uri
from dermaops.serving.smoke import lesion_jpeg
from dermaops.settings import ARTIFACTS_DESTINATION_ENV, Home
from tests import stores
from tests.conftest import Trained
from tests.e2e import podman as pm
from tests.e2e.conftest import DERMAOPS
from tests.k8s.chart import by_kind, pod_spec, render
from tests.k8s.conftest import ROOT, find_tool, unavailable
from tests.k8s.podman_pods import Host, PodPlan, plan_pod, service_ports
from tests.load import at_once, peak_resident, post_big
from tests.scrape import sample

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1800)]
# What the v2 answer holds for a model with its out-of-distribution guard.
OUTPUTS = ("probabilities", "label", "melanoma", "in_distribution", "ood_score")

NETWORK, TAG, TOKEN, NAMESPACE = "dermaops-ci", "ci", "ci-token", "dermaops"
TARGETS = ("monitor", "mlflow", "serving", "ui", "storage-initializer")  # the slowest build first
BUCKET, ADMIN = "dermaops-mlflow", ("admin", "ci-admin-password")
OIP_CLIENT = ROOT / "tests" / "integration" / "oip_client.py"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dermaops-ci"
BUDGETS_MB = runpy.run_path(str(ROOT / "scripts" / "images.py"))["BUDGETS_MB"]  # make images'
#: Requests in the memory test's soak: bounded in `make test`; docs/reliability.md's figure is a
#: run with more (DERMAOPS_CONTAINER_SOAK=10000).
SOAK_REQUESTS = int(os.environ.get("DERMAOPS_CONTAINER_SOAK", "3000"))


def needs_root_and_podman() -> None:
    """podman, runc and debootstrap (each: fail in CI, skip elsewhere, naming the package), and
    root: debootstrap, rootful podman and chowning podman volumes to the pods' uid need it."""
    for tool in ("podman", "runc", "debootstrap"):
        find_tool(tool)
    if os.geteuid() != 0:
        unavailable("the container test runs as root (debootstrap, rootful podman, volume chown)")


@dataclass(frozen=True)
class Pod:
    url: str  # its published loopback address
    plan: PodPlan


@dataclass(frozen=True)
class Release:
    """The chart's pods running on the test's network, and what they were made from."""

    predictor: Pod
    monitor: Pod
    ui: Pod
    mlflow: Pod
    s3: str  # moto's endpoint, on the network's gateway
    model: Path  # the served model's folder on the host
    images: dict[str, str]
    docs: list[dict[str, Any]]
    host: Host
    values: dict[str, str]  # what the chart was rendered with


def _model_zip(folder: Path) -> Path:
    model = build_model("resnet18", 7).eval()
    pre = Preprocessing(image_size=96)  # the demo's model: ResNet-18 at 96 px
    save_model_dir(folder / "model", model, "resnet18", pre, {})
    export_onnx(model, "resnet18", pre, folder / "model" / "model.onnx")
    _fit_guard(model, pre, folder / "model" / GUARD)
    archive = folder / "served" / "model.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as z:
        for path in (folder / "model").iterdir():
            z.write(path, path.name)
    archive.parent.chmod(0o755)
    return archive


def _fit_guard(model: torch.nn.Module, pre: Preprocessing, path: Path) -> None:
    """An out-of-distribution guard fitted as evaluation fits one; on any images, since the test
    proves that the torch-free image reads and applies it, not how well it separates."""
    images = [pre.cache_pixels(i) for i in ood_images("plain_skin", 36, seed=5)]
    with torch.no_grad():
        logits, embedding = WithEmbedding(model, "resnet18")(pixels_to_batch(images, pre))
    logits, embedding = logits.numpy(), embedding.numpy()
    train = (logits[:24], embedding[:24], np.arange(24) % 7)
    OodGuard.fit("mahalanobis", train, (logits[24:], embedding[24:])).save(path)


def _doc(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in by_kind(docs, kind) if d["metadata"]["name"] == name]
    return doc


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Release]:
    needs_root_and_podman()
    stores.postgres_bin()
    work = tmp_path_factory.mktemp("containers")
    archive = _model_zip(work)
    base = pm.base_image(CACHE)
    with pm.cleaned(NETWORK) as made, ExitStack() as started:
        made.extend(f"image:{pm.image_name(target, TAG)}" for target in TARGETS)  # removed, if made
        images = pm.build_all(TARGETS, base, TAG)
        made.append("container:ci-archive")
        pm.podman("run", "-d", "--name", "ci-archive", "--network", NETWORK, "--user", "10001",
                  "--read-only", "--volume", f"{archive.parent}:/srv:ro", "--entrypoint",
                  "python3", images["serving"], "-m", "http.server", "8000", "--directory",
                  "/srv")  # fmt: skip
        uri = f"http://{pm.address('ci-archive', NETWORK)}:8000/{archive.name}"
        # The MLflow's stores on the host, on the network's gateway (up once a container is on it).
        gateway, subnet = pm.gateway(NETWORK)
        db = started.enter_context(stores.postgres(gateway, subnet, ("mlflow", "mlflow_auth")))
        s3 = started.enter_context(stores.s3(work, gateway, BUCKET))
        values = {"kserve.enabled": "false", "model.storageUri": uri, "mlflow.enabled": "true",
                  "monitor.registry.credentialsSecret": "dermaops-mlflow-client"}  # fmt: skip
        docs = render(*(arg for k, v in values.items() for arg in ("--set", f"{k}={v}")))
        ours = {f"ghcr.io/dermaops/{t}:0.1.0": images[t]
                for t in ("serving", "monitor", "ui", "mlflow")}  # fmt: skip
        host = Host(
            images=ours | {"kserve/storage-initializer:v0.21.0": images["storage-initializer"]},
            secrets={"dermaops-monitor-token": {"token": TOKEN}, **_mlflow_secrets(db, s3)},
            claims={"dermaops-monitor": "ci-monitor-home", "dermaops-feedback": "ci-feedback"},
            workdir=work / "host", network=NETWORK,
        )  # fmt: skip
        mlflow = _start(docs, "dermaops-mlflow", host, made)
        host = _expose(docs, "dermaops-mlflow", host, images["serving"], made)
        monitor = _start(docs, "dermaops-monitor", host, made)
        host = _expose(docs, "dermaops-monitor", host, images["serving"], made)
        predictor = _start(docs, "dermaops-predictor", host, made, check_before=True)
        host = _expose(docs, "dermaops-predictor", host, images["serving"], made)
        ui = _start(docs, "dermaops-ui", host, made)
        yield Release(predictor, monitor, ui, mlflow, s3, work / "model", images, docs, host,
                      values)  # fmt: skip


def _mlflow_secrets(db: stores.Postgres, s3: str) -> dict[str, dict[str, str]]:
    """The Secrets the chart's MLflow and its clients read, by the names the chart gives them."""
    user, password = ADMIN
    auth = "\n".join([
        "[mlflow]", "default_permission = READ", f"database_uri = {db.uri('mlflow_auth')}",
        f"admin_username = {user}", f"admin_password = {password}",
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth",
    ])  # fmt: skip
    return {
        "dermaops-mlflow-db": {"uri": db.uri("mlflow")},
        "dermaops-object-store": {**stores.S3_KEYS, "MLFLOW_S3_ENDPOINT_URL": s3},
        "dermaops-mlflow-auth": {"basic_auth.ini": auth, "flask_secret_key": "ci-flask-secret"},
        "dermaops-mlflow-client": {
            "MLFLOW_TRACKING_USERNAME": user,
            "MLFLOW_TRACKING_PASSWORD": password,
        },
    }


def _start(docs: list[dict[str, Any]], name: str, host: Host, made: list[str],
           check_before: bool = False) -> Pod:  # fmt: skip
    """Run a Deployment's pod: volumes, pod, init containers to completion, containers; ready."""
    spec = pod_spec(_doc(docs, "Deployment", name))
    (target,) = service_ports(_doc(docs, "Service", name), spec).values()
    return _run_pod(name, spec, target, host, made, check_before)


def _run_pod(name: str, spec: dict[str, Any], target: int, host: Host, made: list[str],
             check_before: bool = False) -> Pod:  # fmt: skip
    """Run the pod ``spec`` as ``name``, its container port ``target`` on loopback; ready."""
    port = free_port()
    plan = plan_pod(name, spec, {target: port}, host)
    for volume in plan.volumes:
        if f"volume:{volume}" not in made:  # a claim another pod mounts already is shared
            pm.chowned_volume(volume, plan.owner)
            made.append(f"volume:{volume}")
    made.append(f"pod:{plan.name}")
    pm.podman(*plan.create[1:])
    ready = f"http://127.0.0.1:{port}{plan.readiness[0].path}"
    if check_before:
        assert not answers_ok(ready), "ready before the storage initializer fetched the model"
    for command in plan.init:
        pm.podman(*command[1:])  # to completion, as Kubernetes runs init containers
    for command in plan.run:
        pm.podman(*command[1:])
    if check_before:  # the container is up and loading (about 3 s: imports, ONNX, a warm-up)
        assert not answers_ok(ready), "ready while the model was still loading"
    _wait_ready(ready, plan)
    return Pod(f"http://127.0.0.1:{port}", plan)


def _expose(docs: list[dict[str, Any]], name: str, host: Host, image: str,
            made: list[str]) -> Host:  # fmt: skip
    """The Service ``name`` in front of its pod, under its cluster DNS name, for later pods."""
    spec = pod_spec(_doc(docs, "Deployment", name))
    forwarder = f"ci-svc-{name}"
    made.append(f"container:{forwarder}")
    address = pm.service(forwarder, NETWORK, image, pm.pod_address(name, NETWORK),
                         service_ports(_doc(docs, "Service", name), spec))  # fmt: skip
    return replace(host, hosts={**host.hosts, f"{name}.{NAMESPACE}.svc": address})


def _on_service(host: Host, name: str) -> str:
    """The base URL of the Service ``name`` (its forwarder on the test's network, port 80)."""
    return f"http://{host.hosts[f'{name}.{NAMESPACE}.svc']}"


def _wait_ready(url: str, plan: PodPlan, timeout: float = 180) -> None:
    try:
        wait_until_ready(url, timeout)
    except DermaOpsError as e:
        logs = "\n".join(pm.logs(c[c.index("--name") + 1])[-2000:] for c in plan.run)
        raise AssertionError(f"{e}:\n{logs}") from e


def _jpeg() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (600, 450), (170, 120, 100)).save(buf, "JPEG")
    return buf.getvalue()


def test_the_predictor_answers_v1_v2_and_explain_from_its_container(release: Release) -> None:
    url = release.predictor.url
    b64 = base64.b64encode(_jpeg()).decode()
    v1 = httpx.post(f"{url}/v1/models/dermaops:predict", timeout=60,
                    json={"instances": [{"image_bytes": {"b64": b64}}]})  # fmt: skip
    assert v1.status_code == 200 and len(v1.json()["predictions"]) == 1
    (answer,) = v1.json()["predictions"]  # the guard, applied without torch
    assert isinstance(answer["in_distribution"], bool) and answer["ood"]["method"] == "mahalanobis"
    assert answer["in_distribution"] == (answer["ood"]["score"] <= answer["ood"]["threshold"])
    tensor = {"name": "image", "shape": [1], "datatype": "BYTES", "data": [b64]}
    v2 = httpx.post(f"{url}/v2/models/dermaops/infer", json={"inputs": [tensor]}, timeout=60)
    assert v2.status_code == 200 and v2.json()["outputs"][0]["shape"] == [1, 7]
    outputs = {o["name"]: o["data"] for o in v2.json()["outputs"]}
    assert outputs["in_distribution"] == [answer["in_distribution"]]
    explain = httpx.post(f"{url}/v1/models/dermaops:explain", timeout=60,
                         json={"instances": [{"b64": b64}]})  # fmt: skip
    assert explain.status_code == 200
    assert explain.json()["explanations"][0]["overlay_png_b64"]


def test_the_protocols_client_sends_binary_bytes_and_gets_predictions(
    release: Release, tmp_path: Path
) -> None:
    """Triton's HTTP client (the binary data extension, its default for BYTES) against the
    container: the layer that accepts it is in the image, not only in the process."""
    image = tmp_path / "lesion.jpg"
    image.write_bytes(_jpeg())
    done = subprocess.run(
        [find_tool("python", venv="client"), str(OIP_CLIENT), "infer", release.predictor.url,
         "dermaops", str(image)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert sorted(answer["binary"]) == sorted(OUTPUTS)
    assert len(answer["outputs"]["probabilities"][0]) == 7


def test_bad_payloads_are_400_and_the_container_stays_up(release: Release) -> None:
    for body in ({"instances": [{"b64": "%%"}]}, {"nothing": 1}):
        answer = httpx.post(f"{release.predictor.url}/v1/models/dermaops:predict", json=body,
                            timeout=30)  # fmt: skip
        assert answer.status_code == 400, answer.text
    state = pm.inspect("dermaops-predictor-kserve-container")["State"]
    assert state["Running"] is True and state["Restarting"] is False


PREDICTOR = "dermaops-predictor-kserve-container"


def _twelve_megapixels() -> bytes:
    """A 4000 x 3000 photograph-like JPEG (smooth colour with sensor noise)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(12)
    base = Image.fromarray(rng.integers(60, 200, (30, 40, 3), dtype=np.uint8)).resize((4000, 3000))
    noisy = np.asarray(base, dtype=np.int16) + rng.integers(-12, 12, (3000, 4000, 3))
    buf = io.BytesIO()
    Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_the_predictor_stays_inside_the_charts_memory_limit(
    release: Release, tmp_path: Path
) -> None:
    """podman runs the predictor with the chart's limits (3 GiB, 2 CPUs). A soak of
    ``SOAK_REQUESTS`` requests of the mix (resident memory at rest reported by `bench soak`), 8
    bodies of 300 MB at once (declared and chunked), then 200 photographs of 12 MP at once (those
    in the queue answered): never OOM-killed, ready throughout, every refusal a 413 or a 503."""
    url, port = release.predictor.url, int(release.predictor.url.rsplit(":", 1)[1])
    details = pm.inspect(PREDICTOR)
    assert details["HostConfig"]["Memory"] == 3 * 2**30, "podman enforces the chart's limit"
    pid = int(details["State"]["Pid"])

    result = tmp_path / "soak.json"
    soak = subprocess.run(
        [str(DERMAOPS), "bench", "soak", "--url", url, "--pid", str(pid), "--model-uri",
         str(release.model), "--requests", str(SOAK_REQUESTS), "--warmup", "200",
         "--concurrency", "6", "--json", str(result)],
        env=os.environ | {"DERMAOPS_HOME": str(tmp_path / "home")},
        capture_output=True, text=True, timeout=1200, check=False,
    )  # fmt: skip
    assert soak.returncode == 0, soak.stdout[-3000:] + soak.stderr[-3000:]
    figures = json.loads(result.read_text())
    assert figures["held"] and figures["requests"] == SOAK_REQUESTS
    assert figures["idle_rss_mb"] <= 400, figures["idle_rss_mb"]

    with peak_resident(pid) as peak:
        with ThreadPoolExecutor(8) as pool:
            big = list(pool.map(lambda i: post_big(port, 300 * 10**6, chunked=i % 2 == 1),
                                range(8)))  # fmt: skip
        assert all(line.split()[1] in ("413", "503") for line in big), big
        assert [line.split()[1] for line in big[::2]] == ["413"] * 4  # declared: unread
        assert sample(url, "dermaops_request_bytes_in_flight") == 0

        answers = at_once(url, _v1_body(_twelve_megapixels()), 200, timeout=300)
        statuses = Counter(a.status_code for a in answers)
        # 8 in flight and 80 in the queue: more than the 8 answered before the queue
        assert set(statuses) <= {200, 503} and statuses[200] > 8, statuses
        assert all(a.headers["retry-after"] == "1" for a in answers if a.status_code == 503)
        assert all(len(a.json()["predictions"]) == 1 for a in answers if a.status_code == 200)
        assert answers_ok(f"{url}/v2/health/ready")
    state = pm.inspect(PREDICTOR)["State"]
    assert state["Running"] and not state["OOMKilled"] and state["Pid"] == pid, state
    assert peak() < 3 * 1024, f"{peak():.0f} MiB at the peak"
    # The figures the reliability page shows, stamped like every bench result (docs/results/).
    kept = Path(os.environ.get("DERMAOPS_TEST_ARTIFACTS", tmp_path)) / "container-memory.json"
    soaked = {k: v for k, v in figures.items() if k not in STAMP_KEYS}
    write_result({"benchmark": "container-memory", "memory_limit_mib": 3072, "cpus": 2,
                  "soak": soaked, "peak_rss_mb": round(peak(), 1), "bodies_300mb": big,
                  "burst_12mp": {str(k): v for k, v in sorted(statuses.items())}},
                 kept)  # fmt: skip


def test_threads_follow_the_containers_cpu_limit_not_the_hosts_cores(release: Release) -> None:
    """The chart's predictor (limits.cpu 2) counts its threads from its cgroup's quota; the same
    image under ``podman --cpus 1`` counts one, whatever the host's cores."""
    url = release.predictor.url
    from_cgroup = sum(
        sample(url, "dermaops_serving_threads", source=f"cgroup-v{v}") for v in (1, 2)
    )
    assert from_cgroup == 2, httpx.get(f"{url}/metrics", timeout=10).text[-3000:]
    counted = pm.podman("run", "--rm", "--cpus", "1", "--entrypoint", "python3",
                        release.images["serving"], "-c",
                        "from dermaops.cpus import cpu_budget; b = cpu_budget(); "
                        "print(b.threads, b.source)")  # fmt: skip
    threads, source = counted.split()
    assert threads == "1" and source.startswith("cgroup-v"), counted


def _v1_body(jpeg: bytes) -> bytes:
    return json.dumps({"instances": [{"b64": base64.b64encode(jpeg).decode()}]}).encode()


def test_records_reach_the_monitor_with_the_secrets_token(release: Release) -> None:
    b64 = base64.b64encode(_jpeg()).decode()
    for _ in range(3):
        httpx.post(f"{release.predictor.url}/v1/models/dermaops:predict", timeout=60,
                   json={"instances": [{"b64": b64}]})  # fmt: skip
    accepted = 0.0
    deadline = time.monotonic() + 30
    while accepted < 3 and time.monotonic() < deadline:
        metrics = httpx.get(f"{release.monitor.url}/metrics", timeout=10).text
        lines = [
            ln
            for ln in metrics.splitlines()
            if ln.startswith('dermaops_monitor_received_records_total{outcome="accepted"}')
        ]
        accepted = float(lines[0].split()[-1]) if lines else 0.0  # fmt: skip
        time.sleep(1)
    assert accepted >= 3
    refused = httpx.post(f"{release.monitor.url}/records", json={"records": []}, timeout=10)
    assert refused.status_code == 401


def test_the_helm_test_pod_passes_from_its_own_container(release: Release) -> None:
    plan = plan_pod("dermaops-test", pod_spec(_doc(release.docs, "Pod", "dermaops-test")), {},
                    release.host)  # fmt: skip
    for volume in plan.volumes:
        pm.chowned_volume(volume, plan.owner)
    try:
        pm.podman(*plan.create[1:])
        (command,) = plan.run
        pm.podman(*command[1:])
        container = command[command.index("--name") + 1]
        code = pm.podman("wait", container, timeout=300)
        assert code == "0", pm.logs(container)
    finally:
        pm.podman("pod", "rm", "-f", plan.name, check=False)
        for volume in plan.volumes:
            pm.podman("volume", "rm", "-f", volume, check=False)


def test_the_ui_answers_its_health_path(release: Release) -> None:
    assert httpx.get(f"{release.ui.url}/_stcore/health", timeout=10).text == "ok"


def test_every_container_runs_as_10001_with_a_read_only_root(release: Release) -> None:
    for pod in (release.predictor, release.monitor, release.ui):
        for command in pod.plan.run:
            details = pm.inspect(command[command.index("--name") + 1])
            assert details["Config"]["User"] == "10001:10001"
            assert details["HostConfig"]["ReadonlyRootfs"] is True
            assert "CAP_NET_BIND_SERVICE" in details["HostConfig"]["CapDrop"]  # ALL, one by one


@pytest.mark.parametrize(
    ("image", "carries"),
    [("serving", {"dermaops", "kserve", "onnxruntime"}),
     ("monitor", {"dermaops", "evidently", "mlflow"}), ("ui", {"dermaops", "streamlit"}),
     ("mlflow", {"mlflow", "psycopg", "boto3", "flask_wtf"})],
)  # fmt: skip
def test_each_image_carries_its_layer_no_torch_and_fits_its_budget(
    release: Release, image: str, carries: set[str]
) -> None:
    name = release.images[image]
    listing = set(pm.podman("run", "--rm", "--entrypoint", "sh", name, "-c",
                            "ls /opt/dermaops/lib/python3*/site-packages").split())  # fmt: skip
    assert carries <= listing
    assert not {"torch", "torchvision", "cv2"} & listing
    assert pm.size(name) <= BUDGETS_MB[image] * 1e6, f"{image}: {pm.size(name) / 1e6:.0f} MB"


def test_the_registry_registers_through_the_charts_mlflow_and_kserve_fetches_it(
    release: Release, trained: Trained, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The registry code against the mlflow image (PostgreSQL, artifacts proxied to S3, basic
    auth); KServe's storage code, from its image on the network, fetches what deploy would serve."""
    url = release.mlflow.url
    anonymous = httpx.get(f"{url}/api/2.0/mlflow/registered-models/search", timeout=30)
    assert anonymous.status_code == 401, "every client signs in"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ADMIN[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN[1])
    monkeypatch.setenv(ARTIFACTS_DESTINATION_ENV, f"s3://{BUCKET}/artifacts")
    reg = Registry()
    run = reg.pipeline_run("kfp-containers", "training")
    version = log_training_run(reg, run.info.run_id, trained.prepared, trained.run,
                               trained.evaluation, trained.baseline)  # fmt: skip
    uri = storage_uri(reg, version)
    assert uri.startswith(f"s3://{BUCKET}/artifacts/")

    volume = "ci-fetched-model"
    pm.chowned_volume(volume, "10001:10001")
    try:
        keys = [
            f"--env={k}={v}" for k, v in {**stores.S3_KEYS, "AWS_ENDPOINT_URL": release.s3}.items()
        ]
        pm.podman("run", "--rm", "--network", NETWORK, "--user", "10001:10001", "--read-only",
                  *keys, "--volume", f"{volume}:/mnt/models", release.images["storage-initializer"],
                  uri, "/mnt/models")  # fmt: skip
        fetched = Path(pm.podman("volume", "inspect", volume, "--format", "{{.Mountpoint}}"))
        (card,) = fetched.rglob("model.json")
        assert json.loads(card.read_text()) == json.loads(
            next((trained.run / "model").rglob("model.json")).read_text()
        )
    finally:
        pm.podman("volume", "rm", "-f", volume, check=False)


CANARY = "dermaops-predictor-canary"


def _shadow_stage(
    release: Release, tmp_path: Path, values: dict[str, str]
) -> tuple[list[dict[str, Any]], str, str]:
    """The chart with its canary Deployment (the release's values and ``values``), and that
    Deployment as a rollout's shadow stage leaves it: planned by the deploy on what helm
    rendered, applied by a real `kubectl patch --local`. The rendered objects (the canary
    patched), the stable version and the candidate's archive URI (a copy of the served one
    under its own name)."""
    from dermaops.deploy import DeployRequest, observe, plan
    from tests.k8s.chart import kubectl_patch, release_objects

    values = release.values | {"predictor.canary.enabled": "true"} | values
    docs = render(*(arg for k, v in values.items() for arg in ("--set", f"{k}={v}")))
    stable_uri = release.values["model.storageUri"]
    candidate_uri = stable_uri.replace("model.zip", "candidate.zip")
    served = release.model.parent / "served"
    if not (served / "candidate.zip").exists():
        (served / "candidate.zip").write_bytes((served / "model.zip").read_bytes())
    objects = release_objects(docs)
    served_by = objects["predictor"] or objects["InferenceService"] or {}
    stable_env = {e["name"]: e.get("value") for e in pod_spec(served_by)["containers"][0]["env"]}
    stable = str(stable_env["DERMAOPS_SERVING_MODEL_VERSION"])
    request = DeployRequest("2", candidate_uri, 0, shadow_of=stable)
    (patch,) = [p for p in plan(request, "dermaops", NAMESPACE, observe(objects))
                if p.name == CANARY]  # fmt: skip
    canary = kubectl_patch(_doc(docs, "Deployment", CANARY), patch.operations(), tmp_path)
    assert canary["spec"]["replicas"] >= 1, "the shadow gives the canary pods"
    return [canary if d is objects["canary"] else d for d in docs], stable, candidate_uri


def test_a_rollouts_canary_pod_runs_beside_the_stable_one_and_answers_the_mirror(
    release: Release, tmp_path: Path
) -> None:
    """A rollout's shadow stage on the chart's pods: the canary Deployment, patched by the
    deploy to the candidate, runs its pod beside the stable one (its storage initializer
    fetching the candidate's archive), behind its own Service. No Gateway runs here, so the
    test sends what the route's RequestMirror sends (the request again, its x-request-id kept,
    the route's shadow header set) to the canary Service. Both pods forward their records to
    the monitor's Service; there the judge pairs every image, the candidate's answers marked as
    shadow answers."""
    from dermaops.v1 import REQUEST_ID_HEADER, SHADOW_HEADER

    route = {"predictor.canary.parentRefs[0].name": "clinic-gateway"}
    docs, stable, candidate_uri = _shadow_stage(release, tmp_path, route)
    spec = pod_spec(_doc(docs, "Deployment", CANARY))
    assert spec["initContainers"][0]["env"][0]["value"] == candidate_uri
    made: list[str] = []
    try:
        canary = _start(docs, CANARY, release.host, made)
        host = _expose(docs, CANARY, release.host, release.images["serving"], made)
        via_service = _on_service(host, CANARY)
        images = 12
        for i in range(images):
            body = {"instances": [{"b64": base64.b64encode(lesion_jpeg(i)).decode()}]}
            rid = {REQUEST_ID_HEADER: f"container-shadow-{i}"}
            live = httpx.post(f"{release.predictor.url}/v1/models/dermaops:predict", json=body,
                              headers=rid, timeout=60)  # fmt: skip
            mirrored = httpx.post(f"{via_service}/v1/models/dermaops:predict", json=body,
                                  headers=rid | {SHADOW_HEADER: stable}, timeout=60)  # fmt: skip
            assert live.status_code == mirrored.status_code == 200, mirrored.text
        version = httpx.get(f"{canary.url}/v2/models/dermaops", timeout=10).json()
        assert version["versions"] == ["2"], version
        _paired_at_the_monitor(stable, "container-shadow-", images)
    finally:
        pm.remove(made)


def _paired_at_the_monitor(stable: str, prefix: str, images: int) -> None:
    """Every one of ``images`` requests (request ids starting ``prefix``) answered by the stable
    version and, as a shadow answer, by the candidate (version 2), paired in the records both
    pods forwarded to the monitor; the judge's paired checks pass (the same model)."""
    from dermaops.inference_log import read_records
    from dermaops.rollout.judge import JudgeSettings, Pair, judge, paired_checks, pairs

    logs = _monitor_home()
    found: list[Pair] = []
    deadline = time.monotonic() + 60
    while len(found) < images and time.monotonic() < deadline:
        records = [r for log in {p.parent for p in logs.rglob("predictions.jsonl*")}
                   for r in read_records(log)]  # fmt: skip
        found = [p for p in pairs(records, stable, "2")
                 if str(p.stable.get("request_id")).startswith(prefix)]  # fmt: skip
        time.sleep(1)
    assert len(found) == images, "each image answered by both pods, paired at the monitor"
    assert all(p.candidate["shadow"] is True and not p.stable.get("shadow") for p in found)
    small = JudgeSettings(min_pairs=images)
    verdict = judge(paired_checks(found, small), small)
    assert verdict.verdict == "pass", verdict  # the same model: every paired check passes


def _until(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(1)


def _monitor_home() -> Path:
    """The monitor's home on this host (its claim's podman volume)."""
    return Path(pm.podman("volume", "inspect", "ci-monitor-home", "--format", "{{.Mountpoint}}"))


def test_under_kserve_the_predictor_mirrors_to_the_canary_pod_only_in_its_shadow(
    release: Release, tmp_path: Path
) -> None:
    """The chart in KServe's RawDeployment mode with its canary Deployment as the shadow's home.
    No KServe controller runs here, so the InferenceService's predictor pod spec is made as
    KServe's storage initialization makes it (:func:`kserve_predictor_pod`); the canary
    Deployment, patched by the deploy's shadow plan, runs beside it behind its own Service.
    The predictor asks the monitor's Service for the rollout: with none it mirrors nothing;
    once the monitor's store holds a rollout in shadow of the predictor's version, every request
    reaches the canary pod through its Service, and the two pods' records pair at the monitor."""
    from dermaops.rollout.plan import RolloutSettings, RolloutStore, start
    from dermaops.v1 import REQUEST_ID_HEADER
    from tests.k8s.podman_pods import kserve_predictor_pod

    docs, stable, candidate_uri = _shadow_stage(release, tmp_path, {"kserve.enabled": "true"})
    assert pod_spec(_doc(docs, "Deployment", CANARY))["initContainers"][0]["env"][0][
        "value"] == candidate_uri  # fmt: skip
    (isvc,) = by_kind(docs, "InferenceService")
    spec = kserve_predictor_pod(isvc, release.images["storage-initializer"])
    store = RolloutStore(Home(_monitor_home()).monitoring)  # the claim is its DERMAOPS_HOME
    owner = [int(part) for part in release.monitor.plan.owner.split(":")]
    made: list[str] = []
    try:
        _start(docs, CANARY, release.host, made)
        host = _expose(docs, CANARY, release.host, release.images["serving"], made)
        predictor = _run_pod("dermaops-isvc-predictor", spec, 8080, host, made)
        url = f"{predictor.url}/v1/models/dermaops:predict"

        def send(prefix: str, count: int) -> None:
            for i in range(count):
                body = {"instances": [{"b64": base64.b64encode(lesion_jpeg(i)).decode()}]}
                answer = httpx.post(url, json=body, headers={REQUEST_ID_HEADER: f"{prefix}{i}"},
                                    timeout=60)  # fmt: skip
                assert answer.status_code == 200, answer.text

        def mirroring() -> float:
            return sample(predictor.url, "dermaops_shadow_mirroring")

        send("kserve-before-", 3)
        server = "dermaops-isvc-predictor-kserve-container"
        _until(lambda: "shadow mirror shut: no rollout" in pm.logs(server),
               "the monitor never told the predictor there was no rollout")  # fmt: skip
        assert mirroring() == 0
        store.save(start("dermaops", stable, "2", RolloutSettings(enabled=True), time.time()))
        for path in (store.folder, *store.folder.iterdir()):  # the monitor's, not the test's
            os.chown(path, *owner)
        _until(lambda: mirroring() == 1, "the predictor never saw the shadow stage")  # every 10 s
        images = 12
        send("kserve-shadow-", images)
        _paired_at_the_monitor(stable, "kserve-shadow-", images)
        answered = "dermaops_shadow_requests_total"
        _until(lambda: sample(predictor.url, answered, outcome="answered") == images,
               "the mirrored answers were not all counted")  # fmt: skip
    finally:
        store.path.unlink(missing_ok=True)
        pm.remove(made)
