"""The tree mypy checks is the installed package: the core and every layer setuptools maps."""

from __future__ import annotations

import runpy
from pathlib import Path

from tests.k8s.conftest import ROOT

script = runpy.run_path(str(ROOT / "scripts" / "typecheck.py"))


def test_every_layer_is_laid_out_under_dermaops(tmp_path: Path) -> None:
    prefixes = script["build_tree"](ROOT, tmp_path)
    package = tmp_path / "dermaops"
    for layer in ("components", "pipelines", "registry", "serving", "monitoring", "ui"):
        assert (package / layer).resolve() == ROOT / layer
        assert (package / layer / "__init__.py").is_file()
    assert (package / "cli").resolve() == ROOT / "dermaops" / "cli"
    assert not (package / "__pycache__").exists()
    assert script["real_paths"]("dermaops/serving/model.py:3: error: x", prefixes) == (
        "serving/model.py:3: error: x"
    )
    assert script["real_paths"]("dermaops/model/uri.py:1: note", prefixes) == (
        "dermaops/model/uri.py:1: note"
    )
