"""The monitor scores the served version on clinicians' labels: feedback written by the UI's
own code for a model that misses melanoma, read by `monitor serve --feedback-dir` beside the
registry's record of what the version was registered with."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pandas as pd
import pytest

from dermaops.data.feedback import record_feedback
from dermaops.registry import Registry
from dermaops.registry.promotion import model_version
from dermaops.registry.tags import MELANOMA_SENSITIVITY_TAG
from tests.conftest import Trained
from tests.integration.monitor_process import monitor_process
from tests.integration.test_registry import _register
from tests.scrape import sample

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_missed_melanomas_show_in_the_live_metrics_the_alert_reads(
    trained: Trained, served_model: Path, dermaops_home: Path, jpeg_bytes: Callable[..., bytes]
) -> None:
    reg = Registry()
    version = _register(reg, trained, "kfp-live")
    registered = float(model_version(reg, version).tags[MELANOMA_SENSITIVITY_TAG])
    store = dermaops_home / "feedback"
    for i in range(14):  # 14 melanomas, 2 flagged: the model misses most of them
        record_feedback(store, jpeg_bytes(300 + i, 200), "mel", "Dr A", version, "nv",
                        melanoma_flag=i < 2)  # fmt: skip
    for i in range(20):
        record_feedback(store, jpeg_bytes(400 + i, 300), "nv", "Dr B", version, "nv",
                        melanoma_flag=False)  # fmt: skip
    flags = ["--registry-model", reg.model_name, "--feedback-dir", str(store)]
    with monitor_process(dermaops_home, served_model, dermaops_home / "inference", "true",
                         wait_for="/healthz", args=flags) as monitor:  # fmt: skip
        scored = httpx.get(f"{monitor.url}/performance", timeout=60).json()["versions"][version]
        assert (scored["cases"], scored["melanomas"]) == (34, 14)
        assert scored["melanoma_sensitivity"] == pytest.approx(2 / 14)
        assert scored["melanoma_specificity"] == 1.0
        assert scored["accuracy"] == pytest.approx(20 / 34)
        low = scored["ci95"]["melanoma_sensitivity"][0]
        url, v = monitor.url, {"version": version}
        assert sample(url, "dermaops_feedback_cases", **v) == 34
        assert sample(url, "dermaops_feedback_melanomas", **v) == 14
        assert sample(url, "dermaops_live_melanoma_sensitivity", **v) == pytest.approx(2 / 14)
        assert sample(url, "dermaops_live_melanoma_sensitivity_lower", **v) == low
        assert sample(url, "dermaops_registered_melanoma_sensitivity", **v) == registered
        assert sample(url, "dermaops_feedback_disagreements_total", dx="mel", predicted="nv") == 14
        assert low <= 2 / 14, "14 melanomas: the interval's lower end under the estimate"

        report = httpx.get(f"{url}/report", params={"kind": "performance"}, timeout=60)
        assert report.status_code == 200 and report.headers["content-type"].startswith("text/html")
        assert "Model Quality Metrics" in report.text, "Evidently's classification report"
        unknown = httpx.get(f"{url}/report", params={"kind": "performance", "version": "99"},
                            timeout=60)  # fmt: skip
        assert unknown.status_code == 404 and f"labelled: {version}" in unknown.json()["detail"]

        # A pass over the same cases keeps the report on disk; a new case rebuilds it.
        written = dermaops_home / "monitoring" / f"performance_report-v{version}.html"
        before = written.stat().st_mtime_ns
        httpx.get(f"{url}/performance", timeout=60).raise_for_status()
        assert written.stat().st_mtime_ns == before, "no new Evidently run for the same cases"
        record_feedback(store, jpeg_bytes(700, 500), "mel", "Dr A", version, "mel",
                        melanoma_flag=True)  # fmt: skip
        again = httpx.get(f"{url}/performance", timeout=60).json()["versions"][version]
        assert again["cases"] == 35 and written.stat().st_mtime_ns > before


def test_the_classification_report_takes_two_classes_or_more(tmp_path: Path) -> None:
    """Evidently reads two labels as a binary task (melanoma the positive class here), and no
    report scores a single class: that window is named, not reported."""
    from dermaops.errors import DermaOpsError
    from dermaops.monitoring.feedback import performance_report

    two = pd.DataFrame({"dx": ["mel"] * 4 + ["nv"] * 6, "predicted_dx": ["nv"] * 10})
    performance_report(two, tmp_path / "two.html")
    assert "Model Quality Metrics" in (tmp_path / "two.html").read_text()
    many = pd.DataFrame({"dx": ["mel", "nv", "bkl", "bcc"],
                         "predicted_dx": ["nv", "nv", "bkl", "mel"]})  # fmt: skip
    performance_report(many, tmp_path / "many.html")
    one = pd.DataFrame({"dx": ["mel"] * 3, "predicted_dx": ["mel"] * 3})
    with pytest.raises(DermaOpsError, match="every labelled case and answer is mel"):
        performance_report(one, tmp_path / "one.html")
    assert not (tmp_path / "one.html").exists()
