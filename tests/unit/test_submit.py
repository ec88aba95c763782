"""Submitting to a KFP cluster: the schedule and the errors a user meets without one."""

from __future__ import annotations

from pathlib import Path

import pytest

from dermaops.errors import ConfigError
from dermaops.pipelines.submit import SubmitError, daily_cron, submit
from dermaops.pipelines.training import COMPILED


def test_daily_cron_is_kfp_six_field() -> None:
    assert daily_cron("02:30") == "0 30 2 * * *"
    for bad in ("2:3:4", "25:00", "noon"):
        with pytest.raises(ConfigError, match="--daily-at"):
            daily_cron(bad)


def test_missing_package_and_unreachable_host_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="dermaops pipeline compile"):
        list(submit("http://127.0.0.1:9", tmp_path / "none.yaml", "dermaops", {}))
    package = COMPILED / "training_pipeline.yaml"
    with pytest.raises(SubmitError, match=r"KFP at http://127\.0\.0\.1:9 did not take"):
        list(submit("http://127.0.0.1:9", package, "dermaops", {}))  # nothing listens on 9
