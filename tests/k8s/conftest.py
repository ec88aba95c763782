"""Strict validation of custom resources against the CRD schemas in ../shared/schemas/crds."""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import jsonschema
import pytest
import yaml

CRDS = Path(__file__).resolve().parents[2].parent / "shared" / "schemas" / "crds"


def strict(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with unknown fields rejected, as the API server's strict validation does."""
    schema = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
                node.setdefault("additionalProperties", False)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


@functools.cache
def _crd_validator(kind: str, version: str) -> jsonschema.protocols.Validator:
    # OpenAPI v3 schemas read as JSON Schema draft 4 for these keywords; no meta-check (slow).
    return jsonschema.Draft4Validator(_crd_schema(kind, version))


def _crd_schema(kind: str, version: str) -> dict[str, Any]:
    for path in sorted(CRDS.glob("*.yaml")):
        crd = yaml.load(path.read_text(), Loader=yaml.CSafeLoader)  # the C loader: large files
        if crd["spec"]["names"]["kind"] != kind:
            continue
        for v in crd["spec"]["versions"]:
            if v["name"] == version:
                return strict(v["schema"]["openAPIV3Schema"])
    raise LookupError(f"no CRD schema for {kind} {version} under {CRDS}")


@pytest.fixture(scope="session")
def validate_custom_resource() -> Callable[[dict[str, Any]], None]:
    """Raise jsonschema.ValidationError when a custom resource breaks its CRD's schema."""
    if not CRDS.is_dir():
        pytest.fail(f"the CRD schemas are missing: {CRDS}")

    def validate(doc: dict[str, Any]) -> None:
        group_version = doc["apiVersion"].split("/")[-1]
        body = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind", "metadata")}
        _crd_validator(doc["kind"], group_version).validate(body)

    return validate


ROOT = Path(__file__).resolve().parents[2]


def find_tool(name: str, venv: str = "") -> str:
    """A binary from the project's .tools/bin (`make tools`), else PATH; or, with ``venv``, from
    that tools venv only (.tools/VENV/bin). Missing: fail in CI, else skip, saying how to get it."""
    import shutil

    if venv:
        found = shutil.which(name, path=str(ROOT / ".tools" / venv / "bin"))
    else:
        found = shutil.which(name, path=str(ROOT / ".tools" / "bin")) or shutil.which(name)
    if found:
        return found
    unavailable(
        f"{name} is missing: run `make tools` (helm, kubectl, the .tools venvs)"
        + ("" if venv else " or apt-get install it")
    )


def unavailable(message: str) -> NoReturn:
    """What a test needs is not on this machine: a failure in CI (`.ci/run` installs it), a skip
    elsewhere; ``message`` says how to get it."""
    import os

    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)
