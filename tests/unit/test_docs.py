"""The documentation site: built strictly (a broken link or anchor fails), its figures generated
from committed result files, and the README a short front page whose links all resolve."""

from __future__ import annotations

import json
import re
import runpy
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from tests.k8s.conftest import ROOT

DOCS = ROOT / "docs"
tables = runpy.run_path(str(ROOT / "scripts" / "result_tables.py"))


@pytest.mark.slow
def test_the_site_builds_strictly_with_both_api_documents_rendered(tmp_path: Path) -> None:
    site = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT, capture_output=True, text=True, timeout=240, check=False,
        env={"PATH": "/usr/bin:/bin", "NO_MKDOCS_2_WARNING": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    api = re.sub(r"<[^>]+>", "", (site / "api" / "index.html").read_text())  # the text shown
    v1 = "POST /v1/models/{model_name}"
    for operation in (f"{v1}:predict", f"{v1}:explain", "POST /v2/models/{model_name}/infer",
                      "POST /records", "POST /alerts"):  # fmt: skip
        assert operation in api, f"{operation} not rendered on the API page"
    assert "--8&lt;--" not in (site / "index.html").read_text(), "a snippet was not included"


@pytest.mark.slow
def test_a_broken_link_fails_the_strict_build(tmp_path: Path) -> None:
    """The strict build is what catches links: the same site with one anchor that does not
    exist must fail, so the test above can."""
    copy = tmp_path / "project"
    shutil.copytree(DOCS, copy / "docs")
    shutil.copy(ROOT / "mkdocs.yml", copy)
    shutil.copy(ROOT / "README.md", copy)
    page = copy / "docs" / "proven.md"
    page.write_text(page.read_text() + "\nSee [nowhere](serving.md#no-such-section).\n")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "s")],
        cwd=copy, capture_output=True, text=True, timeout=240, check=False,
        env={"PATH": "/usr/bin:/bin", "NO_MKDOCS_2_WARNING": "1"},
    )  # fmt: skip
    assert done.returncode != 0
    assert "no-such-section" in done.stdout + done.stderr


def test_every_generated_table_is_what_its_result_files_give() -> None:
    assert tables["stale"]() == [], "run: .venv/bin/python scripts/result_tables.py"


def test_a_figure_edited_by_hand_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Change one figure in a page's generated block and the check names that block."""
    copy = tmp_path / "docs"
    shutil.copytree(DOCS, copy)
    page = copy / "benchmarks.md"
    block = tables["shown"](page.read_text(), "benchmarks")
    ratio = re.search(r"\| (\d+\.\d+)x faster \|", block)
    assert ratio, block
    page.write_text(page.read_text().replace(ratio.group(0), "| 9.99x faster |", 1))
    monkeypatch.setitem(tables["stale"].__globals__, "DOCS", copy)
    assert tables["stale"]() == ["benchmarks"]


def test_every_result_file_says_where_and_when_it_was_measured() -> None:
    files = sorted((DOCS / "results").glob("*.json"))
    assert {f.stem for f in files} >= set(tables["SHOWN"])
    for path in files:
        result = json.loads(path.read_text())
        machine = result["machine"]
        assert machine["cpu"] and machine["usable_cores"] >= 1, path
        assert isinstance(machine["cpu_flags"], list), path
        assert result["versions"]["dermaops"], path
        assert datetime.fromisoformat(result["measured_at"]).tzinfo is not None, path


def test_the_readme_is_a_short_front_page_whose_links_resolve() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme)
    assert targets, "the README links to the docs"
    for target in targets:
        assert (ROOT / target).is_file(), f"README links to {target}, which does not exist"
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in DOCS.glob("*.md"):
        assert f": {page.name}" in nav, f"{page.name} is not in the site's navigation"
