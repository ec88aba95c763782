"""Turn a `pip install --dry-run --report` JSON into requirements/lock.txt (name==version)."""

import json
import sys
from pathlib import Path

HEADER = """\
# The one lock for the whole stack (Python 3.11, x86_64); every install takes it as constraints:
#   pip install -c requirements/lock.txt -e '.[dev]'
# Regenerate: make lock (pip's resolver over pyproject.toml's pins and requirements/planned.txt).
"""


def main(report_path: str, lock_path: str) -> None:
    report = json.loads(Path(report_path).read_text())
    pins = sorted(
        (item["metadata"]["name"].lower(), item["metadata"]["version"])
        for item in report["install"]
        if item["metadata"]["name"].lower() != "dermaops"
    )
    Path(lock_path).write_text(HEADER + "".join(f"{n}=={v}\n" for n, v in pins))


if __name__ == "__main__":
    main(*sys.argv[1:3])
