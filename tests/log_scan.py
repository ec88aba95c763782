"""Logs must never hold image data: no JPEG or PNG bytes, no base64 of them, no long base64."""

from __future__ import annotations

import re
from pathlib import Path

SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n", b"/9j/", b"iVBORw0KGgo")
LONG_BASE64 = re.compile(rb"[A-Za-z0-9+/]{200,}={0,2}")


def assert_no_image_data(paths: list[Path]) -> None:
    """Fail naming the file and what was found in it."""
    assert paths, "no logs to scan"
    for path in paths:
        data = path.read_bytes()
        for signature in SIGNATURES:
            assert signature not in data, f"{path} holds image data ({signature!r})"
        found = LONG_BASE64.search(data)
        assert found is None, f"{path} holds a long base64 run: {found.group()[:60]!r}..."
