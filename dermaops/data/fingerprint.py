"""Content fingerprints: a prepared folder is reused only when its inputs are byte-identical."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any


def file_sha256(path: Path) -> str:
    """The hex sha256 of a file's content."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def tree_fingerprint(root: Path, settings: Mapping[str, Any], workers: int = 4) -> str:
    """sha256 over ``settings`` and every file under ``root`` (relative path and content).

    Files are hashed in threads: hashlib releases the GIL on large buffers.
    """
    files = sorted(p for p in root.rglob("*") if p.is_file())
    with ThreadPoolExecutor(max_workers=workers) as pool:
        digests = list(pool.map(file_sha256, files))
    outer = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for path, digest in zip(files, digests, strict=True):
        outer.update(f"{path.relative_to(root).as_posix()}\0{digest}\n".encode())
    return outer.hexdigest()
