"""Files the documentation site shows that the running code must keep true.

The site renders the OpenAPI documents the predictor and the monitor publish
(``docs/api/*.openapi.json``); the tests that start those processes compare what they publish
with the committed file. After a deliberate API change, run those tests once with
``DERMAOPS_UPDATE_DOCS=1`` to write the new document, and commit it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parents[1] / "docs"
UPDATE = "DERMAOPS_UPDATE_DOCS"


def assert_published_as_documented(document: dict[str, Any], name: str) -> None:
    """``document`` equals ``docs/api/<name>.openapi.json`` (written under DERMAOPS_UPDATE_DOCS)."""
    path = DOCS / "api" / f"{name}.openapi.json"
    text = json.dumps(document, indent=2, sort_keys=True) + "\n"
    if os.environ.get(UPDATE) == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return
    assert path.is_file(), f"{path} is missing: run this test with {UPDATE}=1 and commit it"
    assert json.loads(path.read_text()) == document, (
        f"the {name}'s OpenAPI document differs from {path.relative_to(DOCS.parent)}, which the "
        f"docs render: run this test with {UPDATE}=1 after a deliberate API change"
    )
