"""Each image's hashed closure agrees with the lock, covers its layer, and carries nothing else."""

from __future__ import annotations

import re
import tomllib

import pytest

from tests.k8s.conftest import ROOT

REQ = ROOT / "requirements"
BLOCK = re.compile(r"^([a-z0-9._-]+)==(\S+) \\\n    --hash=sha256:([0-9a-f]{64})$", re.M)
IMAGES = [
    "serving",
    "serving-gpu",
    "monitor",
    "ui",
    "train",
    "train-cpu",
    "mlflow",
    "build",
    "storage-initializer",
]
# What the chart's MLflow server needs beyond the lock: PostgreSQL (psycopg 3: SQLAlchemy 2.1's
# driver for postgresql://) and S3 drivers, and the basic-auth app's CSRF (mlflow[auth]).
MLFLOW_SERVER_ONLY = {"psycopg", "psycopg-binary", "boto3", "botocore", "s3transfer", "jmespath",
                      "flask-wtf", "wtforms"}  # fmt: skip
CUDA = re.compile(r"^(torch|torchvision|triton|nvidia-.*|cuda-.*)$")
# What an image must not carry: the frameworks of the layers it does not run.
NOT_IN = {
    "serving": {"torch", "torchvision", "grad-cam", "opencv-python-headless", "mlflow", "kfp",
                "streamlit", "evidently", "scikit-learn", "matplotlib"},
    "ui": {"torch", "kserve", "mlflow", "kfp", "evidently", "onnxruntime"},
    "monitor": {"torch", "torchvision", "kserve", "streamlit", "onnxruntime"},
    "train-cpu": {"torch", "torchvision", "triton", "kserve", "streamlit"},
    "mlflow": {"torch", "kserve", "streamlit", "kfp"},
    "storage-initializer": {"torch", "kserve", "mlflow", "dermaops"},
}  # fmt: skip


def pins(name: str) -> dict[str, str]:
    text = (REQ / f"image-{name}.txt").read_text()
    found = {canonical(m[1]): m[2] for m in BLOCK.finditer(text)}
    requirements = [line for line in text.splitlines() if line and line[0].isalnum()]
    assert len(found) == len(requirements), f"image-{name}.txt: a requirement without a hash"
    return found


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def direct(extra: str | None) -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    listed = project["dependencies"] if extra is None else project["optional-dependencies"][extra]
    names = {canonical(re.split(r"[=<>\[ ;]", d)[0]) for d in listed}
    return names - {"dermaops"}


@pytest.mark.parametrize("image", IMAGES)
def test_every_pin_is_the_locks_and_carries_a_hash(image: str) -> None:
    """KServe's storage code is pinned as in storage-tools.txt: it cannot share the lock."""
    source = "storage-tools.txt" if image == "storage-initializer" else "lock.txt"
    lock = {
        canonical(line.split("==")[0]): line.split("==")[1].strip()
        for line in (REQ / source).read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    found = pins(image)
    extra = MLFLOW_SERVER_ONLY if image == "mlflow" else set()
    assert {n: v for n, v in found.items() if n not in extra}.items() <= lock.items()


def test_the_mlflow_image_has_the_drivers_and_the_auth_app_the_chart_uses() -> None:
    assert set(pins("mlflow")) >= MLFLOW_SERVER_ONLY


@pytest.mark.parametrize("image", ["serving", "serving-gpu", "monitor", "ui", "train"])
def test_each_image_has_the_core_and_its_layer(image: str) -> None:
    found = set(pins(image))
    assert direct(None) | direct(image) <= found
    assert not {"pytest", "ruff", "mypy", "selenium"} & found, "no dev tools in the images"


@pytest.mark.parametrize("image", sorted(NOT_IN))
def test_no_image_carries_another_layers_frameworks(image: str) -> None:
    assert set(pins(image)) & NOT_IN[image] == set()


def test_only_the_trainer_and_the_gpu_predictor_carry_torch() -> None:
    with_torch = {image for image in IMAGES if "torch" in pins(image)}
    assert with_torch == {"serving-gpu", "train"}, with_torch
    cpu, gpu = pins("train-cpu"), pins("train")
    assert set(cpu) == {n for n in gpu if not CUDA.match(n)}


def test_the_dockerfile_installs_each_closure_with_hash_checking() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    installer = (ROOT / "scripts" / "install_image.sh").read_text()
    assert '--require-hashes --no-deps -r "$closure"' in installer
    assert "--require-hashes --no-deps -r requirements/image-build.txt" in dockerfile
    for image in (
        "serving",
        "serving-gpu",
        "monitor",
        "ui",
        "train",
        "mlflow",
        "storage-initializer",
    ):
        assert f"scripts/install_image.sh closure {image}" in dockerfile, image
        assert f"scripts/install_image.sh project {image}" in dockerfile, image
