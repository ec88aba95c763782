"""The inference log: JSON lines, one per image the predictor classified.

Each line holds the image's statistics, the embedding projections and the prediction, never
pixels. The predictor writes it (and forwards each line to the monitor); the monitor writes
what it receives and reads the latest window for drift.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import logging
import os
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, BinaryIO

from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, StringConstraints, create_model

from dermaops.data.features import CONFIDENCE, PREDICTION, STAT_NAMES
from dermaops.labels import CLASSES
from dermaops.model.projection import PROJECTION_NAMES

LOG_NAME = "predictions.jsonl"
log = logging.getLogger(__name__)

Short = Annotated[str, StringConstraints(max_length=256)]  # no room for an image's base64
# Each class's calibrated probability, in CLASSES order: what label-free estimates read.
PROBABILITY_FIELDS = tuple(f"p_{c}" for c in CLASSES)


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    time: Short | None = Field(None, description="When the image was answered, ISO 8601 UTC.")
    request_id: Short | None = None
    model: Short | None = Field(None, description="The served model's name.")
    model_version: Short | None = None
    melanoma: bool | None = Field(None, description="The melanoma flag answered.")
    in_distribution: bool | None = Field(None, description="The guard's verdict (null: none).")
    ood_score: FiniteFloat | None = None
    latency_ms: FiniteFloat | None = Field(
        None, ge=0, description="The request's decode, forward and scoring, in milliseconds."
    )
    shadow: bool | None = Field(
        None, description="answered by the challenger for a rollout's shadow stage, not a person"
    )


InferenceRecord: type[_Record] = create_model(
    "InferenceRecord",
    __base__=_Record,
    __doc__="One image's line of the inference log, as the predictor writes it and the monitor's "
    "``/records`` receives it: the image's statistics (required, finite), and what the model "
    "made of it (each optional: lines written by earlier versions lack some). Never pixels: an "
    "unknown field or a long string is refused.",
    **dict.fromkeys(STAT_NAMES, (FiniteFloat, ...)),  # type: ignore[call-overload]
    **dict.fromkeys(PROJECTION_NAMES, (FiniteFloat | None, None)),
    **{PREDICTION: (Short | None, None), CONFIDENCE: (FiniteFloat | None, None)},
    **dict.fromkeys(PROBABILITY_FIELDS, (FiniteFloat | None, None)),
)


class RecordBatch(BaseModel):
    """The body of the monitor's ``/records``: what the predictor's forwarder posts. The monitor
    judges records one by one (a bad one is counted as rejected, the rest are kept)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    records: list[InferenceRecord]


def parse_json_lines(data: bytes, source: Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSON-lines file's bytes; a damaged line (a write cut short, say) is
    skipped, with one warning naming ``source``."""
    records, damaged = [], 0
    for line in data.splitlines():
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            record = None
        if isinstance(record, dict):
            records.append(record)
        elif line.strip():
            damaged += 1
    if damaged:
        log.warning("skipped %d damaged line(s) in %s (a write cut short?)", damaged, source)
    return records


def read_records(
    folder: Path, lock: AbstractContextManager[Any] | None = None
) -> list[dict[str, Any]]:
    """Every record of the inference log in ``folder``, oldest first (rotated files included).

    ``lock`` (the one its writer holds) is held only to open the files and note their sizes: the
    read is of that snapshot, while the writer goes on appending and rotating. A damaged line
    (a write cut short) is skipped with a warning."""
    files = sorted(folder.glob(f"{LOG_NAME}.*"), key=_rotation, reverse=True)
    files.append(folder / LOG_NAME)
    snapshot: list[tuple[Path, BinaryIO, int]] = []
    try:
        with lock or contextlib.nullcontext():
            for path in files:
                try:
                    handle: BinaryIO = path.open("rb")
                except FileNotFoundError:
                    continue  # rotated away since the listing; its successor is listed
                snapshot.append((path, handle, os.fstat(handle.fileno()).st_size))
        records: list[dict[str, Any]] = []
        for path, handle, size in snapshot:
            records.extend(parse_json_lines(handle.read(size), path))
    finally:
        for _, handle, _ in snapshot:
            handle.close()
    return records


def _rotation(path: Path) -> int:
    suffix = path.name.rsplit(".", 1)[-1]
    return int(suffix) if suffix.isdigit() else 0


def end_torn_line(path: Path) -> bool:
    """End a JSON-lines file whose last line was cut short (its writer killed mid-write), so the
    next line appended starts on a line of its own; the torn line stays for readers to skip.
    Whether there was one."""
    try:
        with path.open("rb") as f:
            f.seek(0, 2)
            if f.tell() == 0:
                return False
            f.seek(-1, 2)
            if f.read(1) == b"\n":
                return False
    except FileNotFoundError:
        return False
    with path.open("ab") as f:
        f.write(b"\n")
    log.warning("%s ended in a torn line (a write cut short); it will be skipped", path)
    return True


class InferenceLog:
    """Append-only JSON lines under a folder, rotated at ``max_bytes`` keeping ``backups``.

    A record that cannot be written (the disk is full, the volume went read-only) is dropped:
    the answer it belongs to matters more. Each dropped record goes to ``on_failure``; the first
    of a run of failures is logged as an error, and the write that works again as a warning.
    """

    def __init__(
        self,
        folder: Path,
        max_bytes: int = 50 * 2**20,
        backups: int = 5,
        on_failure: Callable[[OSError], None] | None = None,
    ):
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / LOG_NAME
        self.max_bytes = max_bytes
        self.backups = backups
        self.on_failure = on_failure
        self.dropped = 0  # records lost to write failures, over this writer's life
        self._failing = False
        self._file: io.FileIO | None = None
        self._lock = threading.Lock()
        end_torn_line(self.path)

    def write(self, record: dict[str, Any]) -> None:
        stamped = {"time": datetime.now(UTC).isoformat(timespec="milliseconds"), **record}
        line = (json.dumps(stamped, separators=(",", ":")) + "\n").encode()
        with self._lock:
            try:
                self._append(line)
            except OSError as e:
                self._failed(e)
                return
            if self._failing:
                self._failing = False
                log.warning("writing the inference log %s again", self.path)

    def _append(self, line: bytes) -> None:
        if self._file is None:
            if self._failing:  # the last write may have stopped mid-line
                end_torn_line(self.path)
            self._file = io.FileIO(self.path, "a")
        size = self._file.seek(0, os.SEEK_END)
        if size and size + len(line) > self.max_bytes:
            self._rotate()
            self._file = io.FileIO(self.path, "a")
        view = memoryview(line)
        while view:  # a short write (a file-size limit reached) leaves the rest to write
            written = self._file.write(view)
            if not written:
                raise OSError(errno.EIO, f"nothing written to {self.path}")
            view = view[written:]

    def _rotate(self) -> None:
        self._close()
        for i in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{LOG_NAME}.{i}")
            if older.exists():
                older.replace(self.path.with_name(f"{LOG_NAME}.{i + 1}"))
        if self.backups:
            self.path.replace(self.path.with_name(f"{LOG_NAME}.1"))
        else:
            self.path.unlink()

    def _failed(self, error: OSError) -> None:
        self.dropped += 1
        self._close()
        if self.on_failure is not None:
            self.on_failure(error)
        if not self._failing:
            self._failing = True
            log.error(
                "cannot write the inference log %s (%s); answers go on, their records are "
                "dropped until it can be written again",
                self.path,
                error.strerror or error,
            )

    def _close(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):  # unbuffered: nothing of ours was pending
                self._file.close()
            self._file = None

    def close(self) -> None:
        with self._lock:
            self._close()
