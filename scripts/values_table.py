"""Print the chart's values as a Markdown table (helm-docs style) from `# --` comments.

Usage: python scripts/values_table.py [charts/dermaops/values.yaml] > table.md
The table in docs/chart-values.md between `<!-- values:start -->` and `<!-- values:end -->` is
this output; tests/k8s/test_chart_docs.py keeps them equal.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z][\w.-]*):(?P<rest>.*)$")


def rows(values_file: Path) -> list[tuple[str, str, str, str]]:
    """(key, type, default, description) for every documented key, in file order."""
    values = yaml.safe_load(values_file.read_text())
    path: list[tuple[int, str]] = []
    comment: list[str] = []
    out = []
    for line in values_file.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            comment = [stripped[4:].strip()]
            continue
        if comment and stripped.startswith("#"):
            comment.append(stripped.lstrip("#").strip())
            continue
        match = KEY.match(line)
        if not match:
            continue
        indent = len(match["indent"])
        while path and path[-1][0] >= indent:
            path.pop()
        path.append((indent, match["key"]))
        if comment:
            dotted = ".".join(k for _, k in path)
            default = _lookup(values, [k for _, k in path])
            out.append((dotted, _type(default), json.dumps(default), " ".join(comment)))
            comment = []
    return out


def _lookup(values: Any, keys: list[str]) -> Any:
    for key in keys:
        values = values[key]
    return values


def _type(value: Any) -> str:
    return {bool: "bool", int: "int", float: "float", str: "string", list: "list", dict: "object"}[
        type(value)
    ]


def table(values_file: Path) -> str:
    lines = ["| Key | Type | Default | Description |", "|---|---|---|---|"]
    for key, kind, default, text in rows(values_file):
        lines.append(f"| `{key}` | {kind} | `{default}` | {text} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("charts/dermaops/values.yaml")
    sys.stdout.write(table(source))
