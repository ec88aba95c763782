"""The docs' table of chart values (docs/chart-values.md) is the one values.yaml documents,
every value included."""

from __future__ import annotations

import runpy

import pytest
import yaml

from tests.k8s.conftest import ROOT

pytestmark = pytest.mark.k8s

VALUES = ROOT / "charts" / "dermaops" / "values.yaml"
script = runpy.run_path(str(ROOT / "scripts" / "values_table.py"))


def _leaves(node: object, prefix: str = "") -> set[str]:
    if isinstance(node, dict) and node:
        return set().union(*(_leaves(v, f"{prefix}{k}.") for k, v in node.items()))
    return {prefix.rstrip(".")}


def test_docs_table_matches_values_yaml() -> None:
    readme = (ROOT / "docs" / "chart-values.md").read_text()
    start, end = "<!-- values:start -->\n", "<!-- values:end -->"
    shown = readme[readme.index(start) + len(start) : readme.index(end)]
    assert shown == script["table"](VALUES), "run: python scripts/values_table.py"


def test_every_value_is_documented() -> None:
    documented = {row[0] for row in script["rows"](VALUES)}
    for leaf in _leaves(yaml.safe_load(VALUES.read_text())):
        assert any(leaf == key or leaf.startswith(f"{key}.") for key in documented), leaf
