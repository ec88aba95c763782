"""`make audit`: which pinned dependencies have known vulnerabilities, or why that is unknown.

Two sources, in this order:
1. A local advisory database: a folder of OSV records (osv.dev's PyPI export, unzipped), named
   by $DERMAOPS_ADVISORY_DB or found at .tools/advisories. Checked offline against the lock.
2. pip-audit against PyPI's vulnerability data (needs PyPI's JSON API).

An audit that could not look a package up says so and exits 2: "no known vulnerabilities"
is only printed when every pinned package was actually checked.

Usage: python scripts/audit.py [requirements/lock.txt] [--pip-audit PATH]
Exit: 0 nothing known, 1 vulnerabilities found, 2 could not check (all or part).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)")


@dataclass(frozen=True)
class Finding:
    package: str
    version: str
    advisory: str
    summary: str


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(lock: Path) -> dict[str, str]:
    pins = {}
    for line in lock.read_text().splitlines():
        match = PIN.match(line.strip())
        if match:
            pins[canonical(match[1])] = match[2]
    return pins


def osv_findings(database: Path, pins: dict[str, str]) -> list[Finding]:
    """Advisories whose affected PyPI versions list a pinned version."""
    findings = []
    for path in sorted(database.rglob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise SystemExit(f"unreadable advisory {path}: {e}") from e
        for affected in record.get("affected", []):
            package = affected.get("package", {})
            if package.get("ecosystem") != "PyPI":
                continue
            name = canonical(package.get("name", ""))
            if name in pins and pins[name] in affected.get("versions", []):
                findings.append(
                    Finding(name, pins[name], record.get("id", path.stem),
                            record.get("summary", "").strip())
                )  # fmt: skip
    return findings


def pip_audit_report(report: dict[str, object]) -> tuple[list[Finding], list[str]]:
    """Findings and the packages pip-audit could not look up, from its JSON report."""
    findings, unchecked = [], []
    for dep in report.get("dependencies", []):  # type: ignore[attr-defined]
        if dep.get("skip_reason"):
            unchecked.append(dep["name"])
        for vuln in dep.get("vulns", []):
            findings.append(Finding(dep["name"], dep.get("version", "?"), vuln["id"],
                                    vuln.get("description", "")[:120]))  # fmt: skip
    return findings, unchecked


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lock", nargs="?", default="requirements/lock.txt", type=Path)
    parser.add_argument("--pip-audit", default=".tools/audit/bin/pip-audit")
    args = parser.parse_args(argv)
    pins = read_pins(args.lock)
    database = Path(os.environ.get("DERMAOPS_ADVISORY_DB", ".tools/advisories"))
    if database.is_dir():
        findings, unchecked = osv_findings(database, pins), []
        source = f"the local advisory database {database}"
    else:
        command = [args.pip_audit, "--disable-pip", "--no-deps", "-r", str(args.lock),
                   "--progress-spinner", "off", "-f", "json"]  # fmt: skip
        try:
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            findings, unchecked = pip_audit_report(json.loads(done.stdout))
        except (OSError, ValueError) as e:
            print(f"CANNOT CHECK: pip-audit did not run ({e}); no advisory database at "
                  f"{database} either")  # fmt: skip
            return 2
        source = "pip-audit (PyPI's vulnerability data)"
    for f in findings:
        print(f"VULNERABLE {f.package}=={f.version}: {f.advisory} {f.summary}")
    if unchecked:
        print(f"CANNOT CHECK {len(unchecked)} of {len(pins)} pinned packages with {source} "
              f"(e.g. {', '.join(unchecked[:5])}): the service is unreachable from here. "
              f"Put OSV records in {database} or set DERMAOPS_ADVISORY_DB "
              "to audit offline.")  # fmt: skip
        return 2 if not findings else 1
    if findings:
        return 1
    print(f"no known vulnerabilities in {len(pins)} pinned packages ({source})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
