"""mypy, strictly, on every layer of the one ``dermaops`` namespace.

setuptools maps the top-level folders into ``dermaops.*`` (``[tool.setuptools.package-dir]``
in pyproject.toml), which mypy cannot follow: it would check ``serving/model.py`` as the module
``serving.model`` and find none of its ``dermaops.serving`` imports. So this script builds the
installed shape as a tree of links (``.mypy_tree/dermaops``: the core's entries, and each mapped
folder under its package name), runs mypy there with the project's configuration, and prints
its findings under the files' real paths.

    python scripts/typecheck.py [MYPY ARGS...]
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TREE = ROOT / ".mypy_tree"
PACKAGE = "dermaops"


def layers(pyproject: Path) -> dict[str, str]:
    """``dermaops.serving`` -> ``serving``, and so on, as setuptools maps them."""
    config = tomllib.loads(pyproject.read_text())
    mapped = config["tool"]["setuptools"]["package-dir"]
    return {name: folder for name, folder in mapped.items() if name.startswith(f"{PACKAGE}.")}


def build_tree(root: Path, tree: Path) -> dict[str, str]:
    """The installed package as links; the tree's prefixes mapped to the real folders."""
    shutil.rmtree(tree, ignore_errors=True)
    package = tree / PACKAGE
    package.mkdir(parents=True)
    for entry in (root / PACKAGE).iterdir():
        if entry.name != "__pycache__":
            (package / entry.name).symlink_to(entry)
    prefixes = {}
    for name, folder in layers(root / "pyproject.toml").items():
        where = Path(*name.split("."))
        (tree / where).symlink_to(root / folder)
        prefixes[f"{where}/"] = f"{folder}/"
    prefixes[f"{PACKAGE}/"] = f"{PACKAGE}/"
    return prefixes


def real_paths(line: str, prefixes: dict[str, str]) -> str:
    """``dermaops/serving/model.py:3: error`` -> ``serving/model.py:3: error``."""
    for linked, real in sorted(prefixes.items(), key=lambda p: -len(p[0])):
        if line.startswith(linked):
            return real + line[len(linked) :]
    return line


def main(argv: list[str]) -> int:
    prefixes = build_tree(ROOT, TREE)
    command = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
               "--cache-dir", str(ROOT / ".mypy_cache"), "-p", PACKAGE, *argv]  # fmt: skip
    done = subprocess.run(command, cwd=TREE, capture_output=True, text=True, check=False)
    for line in done.stdout.splitlines():
        print(real_paths(line, prefixes))
    sys.stderr.write(done.stderr)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
