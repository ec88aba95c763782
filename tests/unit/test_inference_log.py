"""The inference log's writer: rotation, and a full disk that costs records, never answers."""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dermaops.inference_log import LOG_NAME, InferenceLog, parse_json_lines


def lines(path: Path) -> list[dict[str, object]]:
    return parse_json_lines(path.read_bytes(), path)


def test_rotates_at_max_bytes_keeping_backups(tmp_path: Path) -> None:
    log = InferenceLog(tmp_path, max_bytes=400, backups=2)
    for i in range(30):
        log.write({"i": i, "pad": "x" * 40})
    log.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == [LOG_NAME, f"{LOG_NAME}.1", f"{LOG_NAME}.2"]
    assert all(p.stat().st_size <= 400 for p in tmp_path.iterdir())
    newest = [r["i"] for r in lines(tmp_path / LOG_NAME)]
    older = [r["i"] for r in lines(tmp_path / f"{LOG_NAME}.1")]
    assert newest[-1] == 29 and older[-1] == newest[0] - 1  # nothing lost between the two


def test_full_disk_drops_records_logs_once_and_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """/dev/full answers every write with ENOSPC, as a full volume does."""
    (tmp_path / LOG_NAME).symlink_to("/dev/full")
    failures: list[OSError] = []
    log = InferenceLog(tmp_path, on_failure=failures.append)
    with caplog.at_level(logging.WARNING, logger="dermaops.inference_log"):
        for i in range(50):
            log.write({"i": i})
        assert log.dropped == 50
        assert {e.errno for e in failures} == {errno.ENOSPC}
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1 and "answers go on" in errors[0].getMessage()

        (tmp_path / LOG_NAME).unlink()  # space again
        log.write({"i": 50})
        log.write({"i": 51})
    log.close()
    assert [r["i"] for r in lines(tmp_path / LOG_NAME)] == [50, 51]
    assert any("again" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert log.dropped == 50


def test_a_write_cut_short_by_a_file_size_limit_leaves_one_torn_line(tmp_path: Path) -> None:
    """RLIMIT_FSIZE stops a write part-way (EFBIG), as a volume filling mid-line does: the rest
    of that record is dropped, and the next record starts on a line of its own."""
    script = textwrap.dedent(f"""
        import resource, sys
        from pathlib import Path
        from dermaops.inference_log import InferenceLog
        dropped = []
        log = InferenceLog(Path({str(tmp_path)!r}), on_failure=dropped.append)
        log.write({{"i": 0}})
        size = (Path({str(tmp_path)!r}) / "predictions.jsonl").stat().st_size
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size + 20, hard))
        log.write({{"i": 1, "pad": "y" * 200}})
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        log.write({{"i": 2}})
        print(len(dropped), dropped[0].errno if dropped else None)
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, env=os.environ)  # fmt: skip
    assert run.stdout.split() == ["1", str(errno.EFBIG)], run.stderr
    raw = (tmp_path / LOG_NAME).read_bytes().splitlines()
    assert len(raw) == 3 and json.loads(raw[0])["i"] == 0 and json.loads(raw[2])["i"] == 2
    assert raw[1].startswith(b'{"time"') and len(raw[1]) == 20  # the torn part, then a newline
    assert [r["i"] for r in lines(tmp_path / LOG_NAME)] == [0, 2]
