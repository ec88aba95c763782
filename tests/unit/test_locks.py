"""The images' hashed requirements agree with the lock and cover the runtime dependencies."""

from __future__ import annotations

import re
import tomllib

from tests.k8s.conftest import ROOT

REQ = ROOT / "requirements"
BLOCK = re.compile(r"^([a-z0-9._-]+)==(\S+) \\\n    --hash=sha256:([0-9a-f]{64})$", re.M)


def _pins(text: str) -> dict[str, str]:
    return {m[1]: m[2] for m in BLOCK.finditer(text)}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_runtime_pin_is_the_locks_and_carries_a_hash() -> None:
    lock = {
        _canonical(line.split("==")[0]): line.split("==")[1].strip()
        for line in (REQ / "lock.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    for name in ("runtime.txt", "runtime-cpu.txt"):
        text = (REQ / name).read_text()
        requirements = [line for line in text.splitlines() if line and line[0].isalnum()]
        pins = _pins(text)
        assert len(pins) == len(requirements) > 100, f"{name}: a requirement without a hash"
        assert {_canonical(n): v for n, v in pins.items()}.items() <= lock.items(), name


def test_runtime_covers_the_project_and_leaves_out_dev_tools_and_cuda_for_cpu() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    direct = {_canonical(re.split(r"[=<>\[ ;]", d)[0]) for d in project["dependencies"]}
    gpu = {_canonical(n) for n in _pins((REQ / "runtime.txt").read_text())}
    cpu = {_canonical(n) for n in _pins((REQ / "runtime-cpu.txt").read_text())}
    assert direct <= gpu and direct - {"torch", "torchvision"} <= cpu
    assert not {"pytest", "ruff", "mypy", "selenium"} & gpu, "no dev tools in the images"
    assert {"torch", "torchvision"} & cpu == set()
    assert not any(n.startswith(("nvidia-", "cuda-")) or n == "triton" for n in cpu)
    assert cpu < gpu


def test_the_dockerfile_installs_them_with_hash_checking() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "--require-hashes --no-deps -r requirements/runtime.txt" in dockerfile
    assert "--require-hashes --no-deps -r requirements/runtime-cpu.txt" in dockerfile
