"""One env contract: every variable the chart sets on a container is read by the code that runs
there (a settings model, a direct read, or the third-party tool in that container), and every
variable a pod needs on a cluster is set. The names the code reads are found in its source, not
listed by hand, so renaming either side fails here."""

from __future__ import annotations

import ast
import importlib
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import kfp.client
import mlflow.environment_variables as mlflow_env
import pytest

from dermaops.deploy import STORAGE_URI_ENV
from dermaops.serving.__main__ import settings_from
from dermaops.tokens import MONITOR_TOKEN_ENV
from tests.k8s.chart import CHART, URI, render
from tests.k8s.conftest import ROOT

pytestmark = pytest.mark.k8s

# Where each package's source lives (pyproject's package-dir).
PACKAGES = {"dermaops": "dermaops", "dermaops.serving": "serving",
            "dermaops.monitoring": "monitoring", "dermaops.registry": "registry",
            "dermaops.pipelines": "pipelines", "dermaops.components": "components",
            "dermaops.ui": "ui"}  # fmt: skip
# The code each container runs besides the core (dermaops/): its layers.
RUNS = {
    "kserve-container": ("serving",),
    "predict": ("serving",),  # the helm test's smoke check
    "monitor": ("monitoring", "registry", "pipelines"),  # drift, references, `pipeline submit`
    "ui": ("ui",),
}
# Read by someone else's code in that container, named from that code where it is Python.
THIRD_PARTY = {
    "kserve-container": {STORAGE_URI_ENV},  # KServe's webhook adds the storage initializer
    "storage-initializer": set(),
    "monitor": {kfp.client.KF_PIPELINES_SA_TOKEN_ENV, mlflow_env.MLFLOW_TRACKING_URI.name},
    "mlflow": {
        "HOME",
        mlflow_env.MLFLOW_AUTH_CONFIG_PATH.name,
        mlflow_env.MLFLOW_FLASK_SERVER_SECRET_KEY.name,
        mlflow_env.MLFLOW_SERVER_ENABLE_JOB_EXECUTION.name,
    },
}
# What each container needs on a cluster (with the monitor on, as by default).
NEEDS = {
    "kserve-container": {"DERMAOPS_SERVING_MODEL_VERSION", "DERMAOPS_HOME",
                         "DERMAOPS_SERVING_MONITOR_URL", f"{MONITOR_TOKEN_ENV}_FILE"},
    "monitor": {"DERMAOPS_MONITOR_REFERENCE_VERSION", "DERMAOPS_HOME",
                f"{MONITOR_TOKEN_ENV}_FILE", kfp.client.KF_PIPELINES_SA_TOKEN_ENV},
    "storage-initializer": {STORAGE_URI_ENV},
    "ui": {"DERMAOPS_HOME"},
}  # fmt: skip
VARIANTS = {
    "defaults": URI,
    "no-kserve": [*URI, "--set", "kserve.enabled=false"],
    "mlflow": [*URI, "--set", "mlflow.enabled=true"],
    **{p.stem: ["-f", str(p)] for p in sorted((CHART / "ci").glob("*-values.yaml"))},
}


def sources(layer: str) -> Iterator[tuple[str, ast.Module]]:
    for path in sorted((ROOT / layer).rglob("*.py")):
        yield _module_name(path), ast.parse(path.read_text())


def _module_name(path: Path) -> str:
    relative = path.relative_to(ROOT).with_suffix("")
    package = next(p for p, folder in PACKAGES.items() if relative.parts[0] == folder)
    return ".".join([package, *relative.parts[1:]]).removesuffix(".__init__")


@cache
def constants() -> dict[str, dict[str, str]]:
    """Module -> its module-level string constants, with those it imports from the project."""
    found: dict[str, dict[str, str]] = {}
    imports: dict[str, list[tuple[str, str, str]]] = {}
    for folder in PACKAGES.values():
        for module, tree in sources(folder):
            own = found.setdefault(module, {})
            for node in tree.body:
                if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
                        and isinstance(node.value.value, str)):  # fmt: skip
                    for t in node.targets:
                        if isinstance(t, ast.Name):
                            own[t.id] = node.value.value
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dermaops"):
                    for alias in node.names:
                        imports.setdefault(module, []).append(
                            (str(node.module), alias.name, alias.asname or alias.name)
                        )
    for module, names in imports.items():
        for source, name, local in names:
            if name in found.get(source, {}):
                found[module][local] = found[source][name]
    return found


def _text(node: ast.expr | None, module: str) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return constants()[module].get(node.id)
    return None


def _is_env_read(call: ast.Call) -> bool:
    """os.environ.get(X), os.getenv(X), ``env.get(X)`` where ``env`` is the environment (or a
    mapping given for it), and ``env(X)`` where ``env = os.environ.get``."""
    f = call.func
    if isinstance(f, ast.Attribute) and f.attr in ("get", "getenv"):
        receiver = ast.unparse(f.value)
        return "environ" in receiver or receiver in ("os", "env")
    return isinstance(f, ast.Name) and f.id == "env"


@cache
def reads(layers: tuple[str, ...]) -> frozenset[str]:
    """Every variable the core and these layers read: settings models' ``PREFIX + FIELD``,
    direct reads, typer's ``envvar=``, and ``read_token``'s ``VAR`` and ``VAR_FILE``."""
    names: set[str] = set()
    for layer in ("dermaops", *layers):
        for module, tree in sources(layer):
            for node in ast.walk(tree):
                if isinstance(node, ast.Call):
                    names |= _call_reads(node, module)
                elif (
                    isinstance(node, ast.Subscript)
                    and "environ" in ast.unparse(node.value)
                    and (key := _text(node.slice, module)) is not None
                ):
                    names.add(key)
    return frozenset(names)


def _call_reads(node: ast.Call, module: str) -> set[str]:
    keywords = {k.arg: k.value for k in node.keywords}
    name = ast.unparse(node.func)
    if name.endswith("load_settings") and "env_prefix" in keywords:
        prefix = _text(keywords["env_prefix"], module)
        assert prefix, f"{module}: an env_prefix this test cannot read"
        model = _settings_model(ast.unparse(node.args[0]))
        return {f"{prefix}{field.upper()}" for field in model.model_fields}
    if "envvar" in keywords and (var := _text(keywords["envvar"], module)):
        return {var}
    if name.endswith("read_token"):
        var = _text(node.args[0], module) if node.args else MONITOR_TOKEN_ENV
        return {str(var), f"{var}_FILE"}
    if _is_env_read(node) and node.args and (var := _text(node.args[0], module)):
        return {var}
    return set()


def _settings_model(class_name: str) -> Any:
    for folder in PACKAGES.values():
        for module, tree in sources(folder):
            if any(isinstance(n, ast.ClassDef) and n.name == class_name for n in tree.body):
                return getattr(importlib.import_module(module), class_name)
    raise LookupError(f"no settings model {class_name} in the project")


def chart_env(docs: list[dict[str, Any]]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(object/container, container name, container) of every container the chart renders."""
    for doc in docs:
        spec = doc.get("spec", {})
        pod = (spec.get("predictor") if doc["kind"] == "InferenceService"
               else spec.get("template", {}).get("spec") if "template" in spec
               else spec if doc["kind"] == "Pod" else None)  # fmt: skip
        if pod is None:
            continue
        for c in [*pod.get("initContainers", []), *pod["containers"]]:
            yield f"{doc['metadata']['name']}/{c['name']}", c["name"], c


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_variable_the_chart_sets_is_read_where_it_is_set(variant: str) -> None:
    unread = []
    for where, name, container in chart_env(render(*VARIANTS[variant])):
        expanded = set(re.findall(r"\$\((\w+)\)", " ".join(container.get("args", []))))
        readers = reads(RUNS.get(name, ())) | THIRD_PARTY.get(name, set()) | expanded
        unread += [f"{where}: {e['name']}" for e in container.get("env", [])
                   if e["name"] not in readers]  # fmt: skip
    assert not unread, "set by the chart, read by nothing in that container: " + ", ".join(unread)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_setting_a_pod_needs_is_set(variant: str) -> None:
    docs = render(*VARIANTS[variant])
    missing = []
    for where, name, container in chart_env(docs):
        needs = set(NEEDS.get(name, ()))
        if name == "kserve-container" and variant != "no-kserve":
            needs.add(STORAGE_URI_ENV)
        have = {e["name"] for e in container.get("env", [])}
        missing += [f"{where}: {n}" for n in sorted(needs - have)]
    assert not missing, "needed on a cluster, not set: " + ", ".join(missing)


def test_the_predictor_reads_the_version_the_chart_gives_it() -> None:
    """The seam itself: the chart's args and env, through the predictor's own settings code."""
    docs = render(*URI, "--set-string", "model.version=7")
    (container,) = [c for _, name, c in chart_env(docs) if name == "kserve-container"]
    environ = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    args, settings = settings_from(container["args"], environ)
    assert settings.model_version == "7", "what every answer, metric and record reports"
    assert settings.monitor_url.startswith("http://dermaops-monitor.")
    assert settings.model_uri == "/mnt/models" and args.model_name == "dermaops"


def test_a_variable_nobody_reads_fails_the_contract() -> None:
    """The bug this test was written for: the chart once set DERMAOPS_MODEL_VERSION."""
    assert "DERMAOPS_SERVING_MODEL_VERSION" in reads(RUNS["kserve-container"])
    assert "DERMAOPS_MODEL_VERSION" not in reads(RUNS["kserve-container"])
    assert "DERMAOPS_UI_REQUIRE_SIGNIN" not in reads(RUNS["kserve-container"]), "the UI's"
    assert "DERMAOPS_UI_REQUIRE_SIGNIN" in reads(RUNS["ui"])
