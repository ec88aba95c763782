"""Short public faces for the core's rooms, loaded on first use.

``from dermaops.model import ModelArtifact`` should not import torch: the predictor's CPU image has
none, and ``dermaops data ...`` should start fast. A room's ``__init__`` imports its public names
under ``TYPE_CHECKING`` (so type checkers and readers see where each lives) and calls
:func:`attach`, which reads those imports back and loads a submodule when one of its names is first
read (PEP 562). The imports are the one list of what a room offers.
"""

from __future__ import annotations

import ast
import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def attach(
    package: str, init_file: str
) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """``__getattr__``, ``__dir__`` and ``__all__`` for a package whose names live in submodules.

    Args:
        package: The package's ``__name__``.
        init_file: The package's ``__file__``; its ``if TYPE_CHECKING:`` imports name the faces.
    """
    where = faces(Path(init_file).read_text(), package)

    def getattr_(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)  # later reads skip __getattr__
        return value

    def dir_() -> list[str]:
        return sorted({*vars(sys.modules[package]), *where})

    return getattr_, dir_, sorted(where)


def faces(source: str, package: str) -> dict[str, str]:
    """Public name to the module that defines it, from the ``if TYPE_CHECKING:`` imports."""
    where: dict[str, str] = {}
    for node in ast.parse(source).body:
        if not (isinstance(node, ast.If) and _is_type_checking(node.test)):
            continue
        for stmt in node.body:
            if not (isinstance(stmt, ast.ImportFrom) and stmt.module and stmt.level == 0):
                raise ValueError(f"{package}: only absolute 'from ... import' in TYPE_CHECKING")
            if not stmt.module.startswith(f"{package}."):
                raise ValueError(f"{package}: {stmt.module} is not inside the package")
            for alias in stmt.names:
                name = alias.asname or alias.name
                if name in where:
                    raise ValueError(f"{package}: {name} is offered twice")
                where[name] = stmt.module
    shadowed = set(where) & {module.rsplit(".", 1)[1] for module in where.values()}
    if shadowed:  # a submodule, once imported, is an attribute of its package and would win
        raise ValueError(f"{package}: {sorted(shadowed)} name both a face and a submodule")
    if not where:
        raise ValueError(f"{package}: no 'if TYPE_CHECKING:' imports to offer")
    return where


def _is_type_checking(test: ast.expr) -> bool:
    return isinstance(test, ast.Name) and test.id == "TYPE_CHECKING"
