"""The chart's predictor in containers: the images built, the rendered pod run as the chart says.

The CPU predictor image and KServe's storage code as an image are built on a bootstrapped Debian
base; the chart is rendered with `kserve.enabled=false` and its predictor pod runs through
`tests/k8s/podman_pods.py` (init container first, the pod's user, read-only root, dropped
capabilities, limits, the token Secret as a file). KServe's storage initializer fetches the model
from an archive served by a pod on the test's own network. The test talks to the predictor only
through its published loopback port.

The archive is a zip: Debian bookworm's Python (3.11.2, the bootstrapped base's) has no
`tarfile` extraction filters, which kserve-storage 0.21 uses for tar archives; the pinned
python:3.11.16-slim base has them.
"""

from __future__ import annotations

import base64
import io
import os
import shutil
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from dermaops.errors import DermaOpsError
from dermaops.model.artifact import Preprocessing, save_model_dir
from dermaops.model.export import export_onnx
from dermaops.model.factory import build_model
from dermaops.net import free_port, wait_until_ready
from tests.e2e import podman as pm
from tests.k8s.chart import by_kind, pod_spec, render
from tests.k8s.podman_pods import Host, PodPlan, plan_pod

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1800)]

NETWORK, TAG = "dermaops-ci", "ci"
SERVING_BUDGET = 800e6
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dermaops-ci"


def needs(tool: str) -> None:
    if shutil.which(tool) is None or os.geteuid() != 0:
        message = (
            f"{tool} (run as root) is needed: apt-get install podman runc catatonit debootstrap"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@dataclass(frozen=True)
class Running:
    url: str
    plan: PodPlan
    images: dict[str, str]


def _model_zip(folder: Path) -> Path:
    model = build_model("resnet18", 7).eval()
    pre = Preprocessing(image_size=64)
    save_model_dir(folder / "model", model, "resnet18", pre, {})
    export_onnx(model, "resnet18", pre, folder / "model" / "model.onnx")
    archive = folder / "served" / "model.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as z:
        for path in (folder / "model").iterdir():
            z.write(path, path.name)
    archive.parent.chmod(0o755)
    return archive


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    for tool in ("podman", "runc", "debootstrap"):
        needs(tool)
    work = tmp_path_factory.mktemp("containers")
    archive = _model_zip(work)
    base = pm.base_image(CACHE)
    with pm.cleaned(NETWORK) as made:
        images = {}
        for target in ("serving", "storage-initializer"):
            images[target] = pm.build(target, base, TAG)
            made.append(f"image:{images[target]}")
        made.append("container:ci-archive")
        pm.podman("run", "-d", "--name", "ci-archive", "--network", NETWORK, "--user", "10001",
                  "--read-only", "--volume", f"{archive.parent}:/srv:ro", "--entrypoint",
                  "python3", images["serving"], "-m", "http.server", "8000", "--directory",
                  "/srv")  # fmt: skip
        uri = f"http://{pm.address('ci-archive', NETWORK)}:8000/{archive.name}"
        docs = render("--set", "kserve.enabled=false", "--set", f"model.storageUri={uri}")
        (deployment,) = [d for d in by_kind(docs, "Deployment")
                         if d["metadata"]["name"] == "dermaops-predictor"]  # fmt: skip
        host = Host(
            images={"ghcr.io/dermaops/serving:0.1.0": images["serving"],
                    "kserve/storage-initializer:v0.21.0": images["storage-initializer"]},
            secrets={"dermaops-monitor-token": {"token": "ci-token"}},
            claims={}, workdir=work / "host", network=NETWORK,
        )  # fmt: skip
        port = free_port()
        plan = plan_pod("dermaops-predictor", pod_spec(deployment), {8080: port}, host)
        for volume in plan.volumes:
            pm.chowned_volume(volume, plan.owner)
            made.append(f"volume:{volume}")
        made.append(f"pod:{plan.name}")
        pm.podman(*plan.create[1:])
        url = f"http://127.0.0.1:{port}"
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{url}/v2/health/ready", timeout=2)  # nothing answers before the model
        for command in plan.init:
            pm.podman(*command[1:])  # to completion, as Kubernetes runs init containers
        for command in plan.run:
            pm.podman(*command[1:])
        _wait_ready(f"{url}{plan.readiness[0].path}", plan)
        yield Running(url, plan, images)


def _wait_ready(url: str, plan: PodPlan, timeout: float = 180) -> None:
    try:
        wait_until_ready(url, timeout)
    except DermaOpsError as e:
        logs = pm.podman("logs", f"{plan.name}-kserve-container", check=False)
        raise AssertionError(f"{e}:\n{logs[-3000:]}") from e


def _jpeg() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (600, 450), (170, 120, 100)).save(buf, "JPEG")
    return buf.getvalue()


def test_the_predictor_answers_v1_v2_and_explain_from_its_container(predictor: Running) -> None:
    b64 = base64.b64encode(_jpeg()).decode()
    v1 = httpx.post(f"{predictor.url}/v1/models/dermaops:predict", timeout=60,
                    json={"instances": [{"image_bytes": {"b64": b64}}]})  # fmt: skip
    assert v1.status_code == 200 and len(v1.json()["predictions"]) == 1
    tensor = {"name": "image", "shape": [1], "datatype": "BYTES", "data": [b64]}
    v2 = httpx.post(f"{predictor.url}/v2/models/dermaops/infer", json={"inputs": [tensor]},
                    timeout=60)  # fmt: skip
    assert v2.status_code == 200 and v2.json()["outputs"][0]["shape"] == [1, 7]
    explain = httpx.post(f"{predictor.url}/v1/models/dermaops:explain", timeout=60,
                         json={"instances": [{"b64": b64}]})  # fmt: skip
    assert explain.status_code == 200
    assert explain.json()["explanations"][0]["overlay_png_b64"]


def test_bad_payloads_are_400_and_the_container_stays_up(predictor: Running) -> None:
    for body in ({"instances": [{"b64": "%%"}]}, {"nothing": 1}):
        answer = httpx.post(f"{predictor.url}/v1/models/dermaops:predict", json=body, timeout=30)
        assert answer.status_code == 400, answer.text
    state = pm.inspect(f"{predictor.plan.name}-kserve-container")["State"]
    assert state["Running"] is True and state["Restarting"] is False


def test_it_runs_as_the_chart_says_uid_10001_read_only_root(predictor: Running) -> None:
    details = pm.inspect(f"{predictor.plan.name}-kserve-container")
    assert details["Config"]["User"] == "10001:10001"
    assert details["HostConfig"]["ReadonlyRootfs"] is True
    assert (
        "ALL" in [c.upper() for c in details["HostConfig"]["CapDrop"]]
        or len(details["HostConfig"]["CapDrop"]) > 10
    )  # podman lists the dropped capabilities one by one


def test_the_cpu_predictor_image_has_no_torch_and_fits_its_budget(predictor: Running) -> None:
    image = predictor.images["serving"]
    listing = pm.podman("run", "--rm", "--entrypoint", "sh", image, "-c",
                        "ls /opt/dermaops/lib/python3*/site-packages")  # fmt: skip
    assert "dermaops" in listing and "kserve" in listing and "onnxruntime" in listing
    assert not {"torch", "torchvision", "cv2", "mlflow", "streamlit"} & set(listing.split())
    assert pm.size(image) <= SERVING_BUDGET
