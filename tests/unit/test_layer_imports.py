"""Each image carries only what its layer imports: the entry points, in a fresh interpreter.

The CPU predictor's image has no torch, the UI's no KServe; a module that imports one of those at
the top would fail there at start-up, so the test fails here first.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import dermaops.ui

FRAMEWORKS = [
    "torch", "torchvision", "pytorch_grad_cam", "cv2", "sklearn", "matplotlib", "kfp", "kserve",
    "mlflow", "evidently", "streamlit", "onnxruntime",
]  # fmt: skip

SERVING = """
import dermaops.serving.__main__, dermaops.serving.model, dermaops.serving.smoke
"""
MONITOR = """
import dermaops.monitoring.service, dermaops.monitoring.drift
"""
REGISTRY = """
import dermaops.registry.promotion, dermaops.registry.card, dermaops.registry.reconcile
"""
UI = f"""
from streamlit.testing.v1 import AppTest
AppTest.from_file({str(Path(dermaops.ui.__file__).parent / "app.py")!r}, default_timeout=60).run()
"""


def loaded(code: str, env: dict[str, str] | None = None) -> set[str]:
    """The frameworks a fresh interpreter has imported after ``code``."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True,
        env={**os.environ, **(env or {})}, timeout=120,
    )  # fmt: skip
    modules = set(json.loads(out.stdout.splitlines()[-1]))
    return {name for name in FRAMEWORKS if name in modules}


def test_the_cpu_predictor_loads_kserve_and_nothing_of_training() -> None:
    assert loaded(SERVING) == {"kserve"}


def test_the_monitor_loads_no_framework_until_it_runs_a_drift_job() -> None:
    assert loaded(MONITOR) == set()


def test_the_registry_loads_mlflow_and_no_scoring_framework() -> None:
    """``registry list``, promote, deploy and notify read metrics and render cards; the metrics
    that need scikit-learn (a second's import in every such process) import it themselves."""
    assert loaded(REGISTRY) == {"mlflow"}


def test_the_clinician_page_loads_streamlit_only(tmp_path: Path) -> None:
    env = {"DERMAOPS_UI_PREDICTOR_URL": "http://127.0.0.1:9",
           "DERMAOPS_UI_FEEDBACK_DIR": str(tmp_path)}  # fmt: skip
    assert loaded(UI, env) == {"streamlit"}


@pytest.mark.parametrize("framework", ["torch", "kserve"])
def test_the_probe_sees_a_framework_that_is_imported(framework: str) -> None:
    assert framework in loaded(f"import {framework}")
