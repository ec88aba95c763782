"""`make audit`: offline advisories matched to the lock; an audit that cannot look says so."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest

from tests.k8s.conftest import ROOT

audit = runpy.run_path(str(ROOT / "scripts" / "audit.py"))


def _osv(folder: Path, ident: str, name: str, versions: list[str]) -> None:
    affected = [{"package": {"ecosystem": "PyPI", "name": name}, "versions": versions}]
    record = {"id": ident, "summary": f"{name} is bad", "affected": affected}
    (folder / f"{ident}.json").write_text(json.dumps(record))


def test_local_advisories_match_pinned_versions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    lock = tmp_path / "lock.txt"
    lock.write_text("# pins\nPillow==13.0.0\nrequests==2.40.0 ; python_version >= '3'\n")
    database = tmp_path / "osv"
    database.mkdir()
    _osv(database, "PYSEC-1", "pillow", ["12.0.0", "13.0.0"])
    _osv(database, "PYSEC-2", "requests", ["2.39.0"])
    monkeypatch.setenv("DERMAOPS_ADVISORY_DB", str(database))
    assert audit["main"]([str(lock)]) == 1
    out = capsys.readouterr().out
    assert "VULNERABLE pillow==13.0.0: PYSEC-1" in out and "requests" not in out
    (database / "PYSEC-1.json").unlink()
    assert audit["main"]([str(lock)]) == 0
    assert "no known vulnerabilities in 2 pinned packages" in capsys.readouterr().out


def test_an_audit_that_could_not_look_never_says_clean(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DERMAOPS_ADVISORY_DB", str(tmp_path / "none"))
    skipped = {"dependencies": [{"name": "six", "skip_reason": "Dependency not found on PyPI"}]}
    findings, unchecked = audit["pip_audit_report"](skipped)
    assert findings == [] and unchecked == ["six"]
    lock = tmp_path / "lock.txt"
    lock.write_text("six==1.17.0\n")
    assert audit["main"]([str(lock), "--pip-audit", str(tmp_path / "no-such-tool")]) == 2
    assert "CANNOT CHECK" in capsys.readouterr().out
