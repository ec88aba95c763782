"""Plain manifests and skaffold.yaml, validated strictly without a cluster."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.k8s.conftest import ROOT

pytestmark = pytest.mark.k8s

MANIFESTS = sorted((ROOT / "manifests").glob("*.yaml"))
SKAFFOLD_SCHEMA = ROOT.parent / "shared" / "schemas" / "skaffold-v4beta14.json"


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifests_are_valid_kubernetes_or_kind(path: Path) -> None:
    for doc in _docs(path):
        if doc["apiVersion"] == "kind.x-k8s.io/v1alpha4":
            assert doc["kind"] == "Cluster" and doc["name"] == "dermaops"
            assert all(":" in node["image"] for node in doc["nodes"]), "pinned node images"
            continue
        kubernetes_validate.validate(doc, "1.30.0", strict=True)


def test_the_schedule_job_runs_as_the_monitor_with_its_kfp_token() -> None:
    (job,) = _docs(ROOT / "manifests" / "retraining-schedule.yaml")
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "dermaops-monitor"
    (container,) = pod["containers"]
    assert container["command"] == ["dermaops", "pipeline", "submit"]
    assert "--kind=retraining" in container["args"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def _check_skaffold(path: Path) -> subprocess.CompletedProcess[str]:
    checker = Path(sys.executable).with_name("check-jsonschema")
    return subprocess.run([str(checker), "--schemafile", str(SKAFFOLD_SCHEMA), str(path)],
                          capture_output=True, text=True, check=False)  # fmt: skip


def test_skaffold_config_passes_its_schema(tmp_path: Path) -> None:
    assert SKAFFOLD_SCHEMA.is_file(), f"missing {SKAFFOLD_SCHEMA}"
    done = _check_skaffold(ROOT / "skaffold.yaml")
    assert done.returncode == 0, done.stdout + done.stderr
    config = yaml.safe_load((ROOT / "skaffold.yaml").read_text())
    config["build"]["artifacts"][0]["docker"]["targt"] = "serving"  # a typo must fail
    (tmp_path / "skaffold.yaml").write_text(yaml.safe_dump(config))
    assert _check_skaffold(tmp_path / "skaffold.yaml").returncode != 0


def test_skaffold_builds_every_image_the_chart_uses_from_dockerfile_targets() -> None:
    config = yaml.safe_load((ROOT / "skaffold.yaml").read_text())
    dockerfile = (ROOT / "Dockerfile").read_text()
    targets = {line.split()[-1] for line in dockerfile.splitlines() if line.startswith("FROM ")}
    builds = [config["build"], *(p.get("build", {}) for p in config["profiles"])]
    artifacts = [a for build in builds for a in build.get("artifacts", [])]
    assert {a["docker"]["target"] for a in artifacts} <= targets
    values = yaml.safe_load((ROOT / "charts" / "dermaops" / "values.yaml").read_text())
    built = {a["image"] for a in artifacts}
    for name in ("serving", "servingGpu", "monitor"):
        assert values["images"][name]["repository"] in built, name
    profiles = {p["name"] for p in config["profiles"]}
    assert profiles == {"kind", "gpu"}
