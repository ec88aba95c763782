"""Loopback mirrors of public HAM10000 sources, built from a generated set."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

from dermaops.data.sources import DATAVERSE_DOI
from tests.fault_server import FaultyServer

LISTING = f"/api/datasets/:persistentId/?persistentId={DATAVERSE_DOI}"


def zip_folder(folder: Path, prefix: str = "") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, prefix + path.relative_to(folder).as_posix())
    return buf.getvalue()


def mirror_dataverse(
    server: FaultyServer, raw: Path, faults: dict[int, list[str]] | None = None
) -> None:
    """Serve ``raw`` (Kaggle layout) the way Harvard Dataverse does; file ids 11-14.

    ``faults`` maps a file id to the faults its first requests meet (see FaultyServer).
    """
    part1 = zip_folder(raw / "HAM10000_images_part_1", "HAM10000_images_part_1/")
    part2 = zip_folder(raw / "HAM10000_images_part_2", "HAM10000_images_part_2/")
    metadata = (raw / "HAM10000_metadata.csv").read_bytes()
    files = [
        (11, "HAM10000_images_part_1.zip", part1, {}),
        (12, "HAM10000_images_part_2.zip", part2, {}),
        (13, "HAM10000_metadata.tab", metadata,
         {"originalFileName": "HAM10000_metadata.csv", "originalFileSize": len(metadata)}),
        (14, "ISIC2018_Task3_Test_Images.zip", b"not wanted", {}),
    ]  # fmt: skip
    listing = []
    for file_id, name, body, extra in files:
        md5 = hashlib.md5(body, usedforsecurity=False).hexdigest()
        checksum = {"type": "MD5", "value": md5}
        entry = {"id": file_id, "filename": name, "filesize": len(body), "checksum": checksum}
        listing.append({"dataFile": entry | extra})
        server.add(f"/api/access/datafile/{file_id}", body, *(faults or {}).get(file_id, []))
    body = json.dumps({"status": "OK", "data": {"latestVersion": {"files": listing}}}).encode()
    server.add(LISTING, body)
