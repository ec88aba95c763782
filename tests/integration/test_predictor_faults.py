"""The predictor process under faults: killed under load, its inference log's disk full."""

from __future__ import annotations

import asyncio
import resource
import threading
import time
from pathlib import Path

import httpx
import pytest

from dermaops.inference_log import LOG_NAME, parse_json_lines
from dermaops.serving.bench import synthetic_jpegs
from dermaops.serving.process import PredictorProcess
from dermaops.serving.soak import Payload, Tally, drive, mix
from tests.scrape import sample, wait_recorded

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> list[Payload]:
    payloads, _ = mix(synthetic_jpegs(tmp_path_factory.mktemp("jpegs"), 8), 32)
    return payloads


def records(folder: Path) -> list[dict[str, object]]:
    path = folder / LOG_NAME
    return parse_json_lines(path.read_bytes(), path)


def test_sigkill_under_load_then_restart(
    served_model: Path, tmp_path: Path, good: list[Payload]
) -> None:
    """SIGKILL while 8 requests are in flight: the clients see connection errors at once (no
    hang); restarted on the same port and log folder, it is ready again, answers everything,
    and the inference log reads whole: one record per answered image after the restart."""
    logs = tmp_path / "inference"
    env = {"DERMAOPS_SERVING_INFERENCE_LOG_DIR": str(logs)}
    predictor = PredictorProcess(served_model, tmp_path / "home", tmp_path / "server.log", env=env)
    predictor.start()
    try:
        plan = good * 400  # far more than is sent before the kill
        tally = Tally()
        load = threading.Thread(target=lambda: asyncio.run(drive(predictor.url, plan, 8, tally)))
        load.start()
        deadline = time.monotonic() + 120
        while len(tally.latencies_ms) < 100 and time.monotonic() < deadline:
            time.sleep(0.05)
        predictor.kill()
        load.join(timeout=120)
        assert not load.is_alive(), "the clients hung on a dead predictor"
        answered = len(tally.latencies_ms) - sum(tally.good_errors.values())
        assert tally.connection_errors > 0 and answered >= 100

        before = len(records(logs))
        predictor.start()
        again = Tally()
        asyncio.run(drive(predictor.url, good * 10, 8, again))
        assert not again.good_errors and not again.connection_errors
        images = sum(p.images for p in good * 10)
        wait_recorded(predictor.url)  # records are made after the answers
        assert len(records(logs)) == before + images
    finally:
        predictor.stop()


def test_inference_log_disk_full_answers_go_on(
    served_model: Path, tmp_path: Path, good: list[Payload]
) -> None:
    """A file-size limit set on the running predictor stops its inference log mid-line (EFBIG,
    as a full volume's ENOSPC): every request is still answered, each dropped record is
    counted, the failure is logged once, and writing resumes when the limit is lifted."""
    logs = tmp_path / "inference"
    logs.mkdir()
    (logs / LOG_NAME).write_text('{"filler":1}\n' * 8000)  # bigger than the server's own log
    env = {"DERMAOPS_SERVING_INFERENCE_LOG_DIR": str(logs)}
    server_log = tmp_path / "server.log"
    with PredictorProcess(served_model, tmp_path / "home", server_log, env=env) as predictor:
        limit = (logs / LOG_NAME).stat().st_size + 2000  # room for a few records only
        _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.prlimit(predictor.pid, resource.RLIMIT_FSIZE, (limit, hard))

        full = Tally()
        asyncio.run(drive(predictor.url, good * 20, 4, full))
        assert not full.good_errors and not full.connection_errors
        wait_recorded(predictor.url)
        dropped = sample(predictor.url, "dermaops_inference_log_failures_total", reason="EFBIG")
        dropped += sample(predictor.url, "dermaops_inference_log_failures_total", reason="backlog")
        images = sum(p.images for p in good * 20)
        kept = len(records(logs)) - 8000
        assert dropped > 0 and kept + dropped == images
        assert server_log.read_text().count("cannot write the inference log") == 1

        resource.prlimit(predictor.pid, resource.RLIMIT_FSIZE, (hard, hard))
        asyncio.run(drive(predictor.url, good, 4, Tally()))
        wait_recorded(predictor.url)
        assert len(records(logs)) - 8000 == kept + sum(p.images for p in good)
        assert "writing the inference log" in server_log.read_text()
        assert httpx.get(f"{predictor.url}/v2/health/ready", timeout=10).status_code == 200
