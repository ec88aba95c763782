"""KFP's retry policy, run by the local runner, recovers a transient ingest failure."""

# No ``from __future__ import annotations``: KFP reads the test pipeline's annotations as types.
from pathlib import Path

import pytest
from kfp import dsl, local

from dermaops.components.build import build
from dermaops.data.loaders import load_raw
from dermaops.pipelines import PipelineSettings
from dermaops.pipelines.training import _configure
from tests.fault_server import FaultyServer
from tests.integration.mirrors import mirror_dataverse

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_transient_ingest_failure_is_retried(
    http_server: FaultyServer, synth_raw: Path, tmp_path: Path
) -> None:
    mirror_dataverse(http_server, synth_raw, faults={12: ["503"]})
    ingest = build().ingest
    settings = PipelineSettings(ingest_backoff="1s")

    @dsl.pipeline(name="ingest-only")
    def ingest_only(base_url: str) -> None:
        # One download attempt per task: only KFP's retry can get past the 503.
        task = ingest(source="dataverse", base_url=base_url, download_attempts=1)
        _configure(task, "ingest", settings, cached=False)

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path))
    ingest_only(base_url=http_server.url)  # tasks inherit this test's DERMAOPS_HOME
    assert len(http_server.hits("/api/access/datafile/12")) == 2, "failed once, then retried"
    raw = next(tmp_path.glob("ingest-only-*/ingest/raw"))
    assert len(load_raw(raw).records) == 80
