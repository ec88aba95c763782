"""The registry's one boundary with MLflow: every failure a RegistryError naming the tracking URI
and the operation, MLflow's error code kept; tag names in registry/tags.py only; the run
summary's facts read and written as one type, runs recorded by earlier versions included."""

from __future__ import annotations

import ast
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from mlflow.exceptions import MlflowException

from dermaops.net import free_port
from dermaops.notify import RunFacts, RunFactsError
from dermaops.registry import Registry, RegistrySettings, tags
from dermaops.registry.client import RegistryError, alias_version
from dermaops.registry.promotion import model_version
from dermaops.registry.tags import FACT_PREFIX
from tests.fault_server import FaultyServer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow's REST client gives up at once (it retries for minutes by default)."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")


def test_an_unreachable_tracking_server_is_a_registry_error_naming_it(no_retries: None) -> None:
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    reg = Registry(RegistrySettings(tracking_uri=uri))
    with pytest.raises(RegistryError) as caught:
        alias_version(reg, "champion")
    assert f"MLflow at {uri}: get_model_version_by_alias failed" in str(caught.value)
    assert isinstance(caught.value.__cause__, MlflowException)
    assert caught.value.error_code == "INTERNAL_ERROR" and not caught.value.not_found
    with pytest.raises(RegistryError, match=re.escape(f"MLflow at {uri}: get_experiment_by_name")):
        reg.pipeline_run("kfp-1")


def test_an_artifact_store_error_status_is_a_registry_error_too(
    http_server: FaultyServer, no_retries: None, tmp_path: Path
) -> None:
    """MLflow's proxied artifact repository raises ``requests`` errors, not MlflowException."""
    reg = Registry(RegistrySettings(tracking_uri=http_server.url))  # answers 404 to everything
    with pytest.raises(RegistryError) as failed:
        reg.download("mlflow-artifacts:/1/run/artifacts/model", tmp_path / "dl")
    assert f"MLflow at {http_server.url}: download_artifacts failed: HTTPError" in str(failed.value)
    assert isinstance(failed.value.__cause__, requests.HTTPError)
    with pytest.raises(RegistryError) as caught:
        reg.client.get_model_version(reg.model_name, "1")
    assert caught.value.error_code == "ENDPOINT_NOT_FOUND", "a wrong server, not a missing version"
    assert not caught.value.not_found


def test_a_missing_version_or_alias_is_not_found() -> None:
    reg = Registry()
    with pytest.raises(RegistryError) as caught:
        reg.client.get_model_version(reg.model_name, "7")
    assert caught.value.not_found and caught.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    assert f"MLflow at {reg.uri}: get_model_version failed" in str(caught.value)
    with pytest.raises(RegistryError, match="has no version '7'") as wrapped:
        model_version(reg, "7")
    assert wrapped.value.not_found and isinstance(wrapped.value.__cause__, RegistryError)
    assert isinstance(wrapped.value.__cause__.__cause__, MlflowException), "the original kept"
    assert alias_version(reg, "champion") is None, "no model registered yet"
    reg.client.create_registered_model(reg.model_name)
    assert alias_version(reg, "champion") is None, "a model without the alias"
    with pytest.raises(RegistryError) as twice:
        reg.client.create_registered_model(reg.model_name)
    assert twice.value.error_code == "RESOURCE_ALREADY_EXISTS" and not twice.value.not_found


def test_facts_recorded_by_earlier_versions_load_and_are_written_the_same_way() -> None:
    reg = Registry()
    old = reg.pipeline_run("kfp-old", "training").info.run_id
    written_before = {  # the tags as DermaOps wrote them before RunFacts: names and text
        "dermaops.fact.promoted": "true",
        "dermaops.fact.deployed": "version 3: pointed /x/current.json at version 3",
        "dermaops.fact.registered_version": "3",
        "dermaops.fact.state": "SUCCEEDED",
    }
    for key, value in written_before.items():
        reg.client.set_tag(old, key, value)
    reg.client.log_metric(old, "f1_macro", 0.81234)
    facts = reg.run_facts("kfp-old")
    assert facts.promoted is True and facts.registered_version == "3"
    assert facts.state == "SUCCEEDED" and facts.deployed == written_before["dermaops.fact.deployed"]
    assert facts.mlflow_run == f"{old} (experiment dermaops)" and facts.test_f1_macro == 0.81234
    assert dict(facts.rows())["test_f1_macro"] == "0.8123"

    new = reg.pipeline_run("kfp-new", "training").info.run_id
    reg.tag_pipeline_run("kfp-new", RunFacts(promoted=True, registered_version="3"))
    reg.tag_pipeline_run("kfp-new", RunFacts(deployed=written_before["dermaops.fact.deployed"]))
    reg.tag_pipeline_run("kfp-new", RunFacts(state="SUCCEEDED"))
    tags = reg.client.get_run(new).data.tags
    assert {k: v for k, v in tags.items() if k.startswith(FACT_PREFIX)} == written_before
    with pytest.raises(RunFactsError, match="read from the run, not recorded"):
        reg.tag_pipeline_run("kfp-new", RunFacts(mlflow_run="x"))


def test_an_unknown_fact_is_left_out_and_an_unreadable_one_refused_naming_the_run_and_tag(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reg = Registry()
    run = reg.pipeline_run("kfp-odd", "training").info.run_id
    reg.tag_pipeline_run("kfp-odd", RunFacts(promoted=True))
    reg.client.set_tag(run, f"{FACT_PREFIX}colour", "blue")  # a newer version's fact
    assert reg.run_facts("kfp-odd").promoted is True
    assert f"MLflow run {run}: facts this version does not know, left out: colour" in caplog.text
    reg.client.delete_tag(run, f"{FACT_PREFIX}colour")
    reg.client.set_tag(run, f"{FACT_PREFIX}promoted", "yes")
    with pytest.raises(RunFactsError, match=rf"MLflow run {run}: tag dermaops\.fact\.promoted: "):
        reg.run_facts("kfp-odd")


# The scans: production code reaches MLflow through registry/client.py only, and names tags
# through registry/tags.py only.

BOUNDARY = Path("registry/client.py")
TAGS = Path("registry/tags.py")
# Calls whose string arguments are MLflow tag names, and the mappings tags are read from.
TAG_CALLS = {"set_tag", "delete_tag", "set_model_version_tag", "delete_model_version_tag",
             "set_registered_model_tag", "delete_registered_model_tag"}  # fmt: skip


def production_folders() -> dict[str, Path]:
    """The package name of each production folder, as pyproject.toml maps them."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    mapped = config["tool"]["setuptools"]["package-dir"]
    return {"dermaops": ROOT / "dermaops"} | {
        name: ROOT / folder for name, folder in mapped.items()
    }


def production_files() -> Iterator[Path]:
    for folder in production_folders().values():
        yield from (p.relative_to(ROOT) for p in sorted(folder.rglob("*.py")))


def module_names() -> set[str]:
    """Every dermaops module and package that is not also a tag's name (``dermaops.rollout``
    is both): a literal naming one is a logger's or an import's, not a tag's."""
    names = set()
    for package, folder in production_folders().items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            parts = parts[:-1] if parts[-1] == "__init__" else parts
            names.add(".".join((package, *parts)))
    return names - {v for k, v in vars(tags).items() if k.isupper() and isinstance(v, str)}


def mlflow_internals(source: str) -> list[str]:
    """Imports of MLflow's exceptions or client, and uses of their names."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = {a.name for a in node.names}
            if node.module.startswith("mlflow.exceptions") or "MlflowClient" in names:
                found.append(f"line {node.lineno}: from {node.module} import {', '.join(names)}")
        elif isinstance(node, ast.Import):
            found += [f"line {node.lineno}: import {a.name}" for a in node.names
                      if a.name.startswith("mlflow.exceptions")]  # fmt: skip
        elif isinstance(node, ast.Attribute) and node.attr in ("MlflowException", "MlflowClient"):
            found.append(f"line {node.lineno}: .{node.attr}")
    return found


def registry_clients(source: str) -> list[str]:
    """``reg.client``, ``self.reg.client``, ``registry.client``: MLflow past the registry."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr == "client":
            owner = node.value
            name = owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", "")
            if name in ("reg", "registry"):
                found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def _starts_tag(node: ast.expr, modules: set[str]) -> bool:
    """A literal (or f-string) that begins with ``dermaops.`` and is none of ``modules``."""
    if isinstance(node, ast.JoinedStr) and node.values:
        node = node.values[0]
    if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
        return False
    return bool(re.fullmatch(r"dermaops\.[\w.]*", node.value)) and node.value not in modules


def tag_literals(source: str, modules: set[str], every_literal: bool) -> list[str]:
    """Tag names spelled out: in the arguments of tag calls, in ``.tags.get(...)`` and
    ``tags[...]``; with ``every_literal``, any ``dermaops.x`` literal that names no module
    (docstrings mention tags in prose, with spaces: never a match)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if every_literal and isinstance(node, ast.Constant) and _starts_tag(node, modules):
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            reads = node.func.attr == "get" and ast.unparse(node.func.value).endswith("tags")
            candidates = list(node.args) if node.func.attr in TAG_CALLS or reads else []
        elif isinstance(node, ast.Subscript) and ast.unparse(node.value).endswith("tags"):
            candidates = [node.slice]
        else:
            candidates = []
        # Where a tag's name goes, a dermaops.x literal is one, whatever module it may name.
        found += [f"line {c.lineno}: {ast.unparse(c)}" for c in candidates
                  if _starts_tag(c, set())]  # fmt: skip
    return sorted(set(found))


def test_the_scans_find_what_they_look_for() -> None:
    modules = module_names()
    assert {"dermaops.components", "dermaops.registry.tags", "dermaops.notify"} <= modules
    assert "dermaops.rollout" not in modules, "a module's name and a tag's"
    bad = """
from mlflow.exceptions import MlflowException
from mlflow import MlflowClient
import mlflow
def f(reg, self):
    reg.client.get_run("x")
    self.reg.client.set_model_version_tag("m", "1", "dermaops.rollout", "done")
    v.tags.get("dermaops.melanoma_sensitivity")
    run.data.tags["dermaops.fact.state"]
    client.set_tag(run, f"dermaops.audit.{stamp}", "x")
    ROLLOUT_TAG = "dermaops.rollout"
    return {"dermaops.f1_macro": "0.9"}, mlflow.exceptions.MlflowException
"""
    assert len(mlflow_internals(bad)) == 3
    assert len(registry_clients(bad)) == 2

    def lines(hits: list[str]) -> set[int]:
        return {int(hit.split(":")[0].removeprefix("line ")) for hit in hits}

    assert lines(tag_literals(bad, modules, every_literal=False)) == {7, 8, 9, 10}
    assert lines(tag_literals(bad, modules, every_literal=True)) == {7, 8, 9, 10, 11, 12}
    good = '''
"""dermaops.registry: tags such as dermaops.audit.<time> are described in prose."""
import logging
from dermaops.registry.tags import AUDIT_PREFIX
log = logging.getLogger("dermaops.components")
def f(reg, http):
    http.client.HTTPConnection("x")
    reg.client_count = 1
    return v.tags.get(AUDIT_PREFIX), "dermaops.serving"
'''
    assert mlflow_internals(good) == registry_clients(good) == []
    assert tag_literals(good, modules, every_literal=True) == []


def test_only_the_registry_client_imports_mlflow_exceptions_or_the_client() -> None:
    found = {str(p): hits for p in production_files() if p != BOUNDARY
             if (hits := mlflow_internals((ROOT / p).read_text()))}  # fmt: skip
    assert found == {}


def test_nothing_outside_the_registry_reaches_mlflow_through_its_client() -> None:
    registry = production_folders()["dermaops.registry"].relative_to(ROOT)
    found = {str(p): hits for p in production_files() if registry not in p.parents
             if (hits := registry_clients((ROOT / p).read_text()))}  # fmt: skip
    assert found == {}


def test_tag_names_are_spelled_out_in_registry_tags_only() -> None:
    modules = module_names()
    strict = {production_folders()[n].relative_to(ROOT)
              for n in ("dermaops.registry", "dermaops.components")}  # fmt: skip
    found = {}
    for path in production_files():
        if path == TAGS:
            continue
        every = any(folder in path.parents for folder in strict)
        if hits := tag_literals((ROOT / path).read_text(), modules, every):
            found[str(path)] = hits
    assert found == {}
