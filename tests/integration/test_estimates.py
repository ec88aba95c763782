"""Label-free estimates from a real predictor's inference log, read with the served model's
calibration priors and class bias: `dermaops monitor estimate` before any clinician has
labelled a case."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dermaops.client import PredictorClient
from dermaops.evaluation.sources import EstimateSourceError, calibration_source
from dermaops.inference_log import read_records
from dermaops.labels import CLASSES
from dermaops.model.artifact import CALIBRATION, CLASS_BIAS, REFERENCE
from dermaops.serving.process import PredictorProcess
from dermaops.serving.smoke import lesion_jpeg

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_priors_come_from_the_calibration_data_and_an_uncalibrated_model_is_refused(
    served_model: Path, tmp_path: Path
) -> None:
    source = calibration_source(served_model)
    frame = pd.read_csv(served_model / REFERENCE)
    labelled = frame[frame["split"].isin(["train", "val"])]["dx"]
    expected = [float((labelled == c).mean()) for c in CLASSES]
    assert np.allclose(source.priors, expected) and source.priors.sum() == pytest.approx(1)
    calibration = json.loads((served_model / CALIBRATION).read_text())
    assert source.bias is not None, "evaluate fitted the class bias and assemble kept it"
    assert np.allclose(source.bias, [calibration[CLASS_BIAS][c] for c in CLASSES])
    raw = tmp_path / "raw"
    shutil.copytree(served_model, raw)
    (raw / CALIBRATION).unlink()
    with pytest.raises(EstimateSourceError, match="its probabilities are not calibrated"):
        calibration_source(raw)


def test_monitor_estimate_reads_the_served_versions_answers(
    served_model: Path, tmp_path: Path, dermaops_home: Path
) -> None:
    logs = tmp_path / "log"
    env = {"DERMAOPS_SERVING_MODEL_VERSION": "7", "DERMAOPS_SERVING_INFERENCE_LOG_DIR": str(logs)}
    with PredictorProcess(served_model, dermaops_home, tmp_path / "predictor.log", env=env) as p:
        client = PredictorClient(p.url)
        for seed in range(60):
            client.predict([lesion_jpeg(seed), lesion_jpeg(1000 + seed)])
    assert len(read_records(logs)) == 120

    def run(**env: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "dermaops", "monitor", "estimate", "--reference",
             str(served_model), "--reference-version", "7", "--log-dir", str(logs)],
            capture_output=True, text=True, timeout=300, env=os.environ | env, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    out = run()
    assert out.startswith("version 7: 120 answers, ")
    assert "assuming P(image | label) unchanged" in out and "assuming P(label | image)" in out
    assert "melanoma sensitivity" in out and "(95% " in out and "nothing about patients" in out
    fewer = run(DERMAOPS_ESTIMATE_MIN_RECORDS="500")
    assert fewer.startswith("version 7: no estimate (120 images; an estimate needs at least 500)")


def test_the_bench_scores_the_test_split_again_as_another_camera_would_send_it(
    served_model: Path, prepared_small: Path
) -> None:
    """The device scenarios' scoring is evaluation's: with no shift it gives the evaluation's
    own test probabilities; the darker, warmer camera moves them; its scenarios report errors
    and no target (no assumption holds), and every window of them is marked unreliable (its
    image statistics differ from the reference's at the estimated class mix), none of a
    melanoma share tripled."""
    from dermaops.evaluation.estimate_bench import (
        DEVICE,
        DEVICE_SCENARIOS,
        bench_estimate,
        score_test_split,
    )
    from dermaops.evaluation.result import EvaluationMetrics

    evaluation = served_model.parent / "evaluation"
    temperature = EvaluationMetrics.read(evaluation).temperature
    saved = np.load(evaluation / "test_predictions.npz")
    same = score_test_split(served_model, prepared_small, temperature, (1.0, 1.0, 1.0))
    assert np.allclose(same.probs, saved["probs"], atol=1e-5)
    assert (same.labels == saved["labels"]).all() and same.admitted is not None
    darker = score_test_split(served_model, prepared_small, temperature, DEVICE)
    assert np.abs(darker.probs - same.probs).max() > 0.01
    result = bench_estimate(evaluation, served_model, windows=10, size=60, draws=20,
                            data=prepared_small)  # fmt: skip
    assert result["device_gain"] == list(DEVICE)
    for name in DEVICE_SCENARIOS:  # the darker camera's images are told apart: unreliable
        scenario = result["scenarios"][name]
        assert scenario["mae_ours_balanced_accuracy"] is not None
        assert scenario["unreliable_windows"] == 1.0, scenario
    assert result["scenarios"]["melanoma x3"]["unreliable_windows"] == 0.0, "the class mix alone"
    assert not any(c["check"].startswith("device") for c in result["checks"])
