"""The out-of-distribution guard, fitted at evaluation and answered by the torch-free predictor.

A model trained like the demo's (``demo_like``: a ResNet-18 from scratch on 1,000 generated
images, 64 px, ten epochs) is evaluated, which fits the guard and measures it on generated images
of four kinds it should refuse and two kinds of changed lesions it should let through; then its
registered folder is served on the ONNX backend.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
from pathlib import Path

import httpx
import pandas as pd
import pytest

from dermaops.data.ood import LESION_KINDS, OOD_KINDS, ood_images
from dermaops.model.artifact import GUARD, ModelArtifact
from dermaops.serving.process import predictor_process
from tests.e2e.conftest import DERMAOPS
from tests.integration.conftest import DemoLike
from tests.scrape import sample, wait_recorded

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _ood(model: DemoLike) -> dict[str, object]:
    found: dict[str, object] = json.loads((model.evaluation / "metrics.json").read_text())["ood"]
    return found


#: kind -> (least AUROC, least share caught at the threshold)
FLOORS = {
    "flat_colour": (0.95, 0.75),
    "text_screenshot": (0.98, 1.0),
    "natural_texture": (0.98, 0.9),
    "plain_skin": (0.85, 0.4),
}


def test_the_guard_tells_dermoscopy_from_what_it_should_not_judge(demo_like: DemoLike) -> None:
    ood = _ood(demo_like)
    assert ood["method"] == "mahalanobis" and ood["keep"] == 0.95 and ood["generated"] is True
    assert ood["auroc"] >= 0.95, ood  # type: ignore[operator]
    kinds = ood["kinds"]
    assert isinstance(kinds, dict) and set(kinds) == set(OOD_KINDS)
    assert all(k["images"] == 48 for k in kinds.values()), kinds
    # Each kind's own floor, under what docs/serving.md's table shows for this test's model
    # with room for the noise of training on CPUs: plain skin is the hard kind, and stays so.
    for kind, (auroc, caught) in FLOORS.items():
        assert kinds[kind]["auroc"] >= auroc and kinds[kind]["caught"] >= caught, (kind, kinds)
    # Held-out lesions, and lesions turned or zoomed as dermoscopy allows, pass.
    assert ood["held_out_passed"] >= 0.8  # type: ignore[operator]
    lesions = ood["lesion_kinds"]
    assert isinstance(lesions, dict) and set(lesions) == set(LESION_KINDS)
    assert all(k["passed"] >= 0.75 for k in lesions.values()), lesions
    # The measurement behind the choice: the energy of the logits misses most of these images.
    methods = ood["methods"]
    assert isinstance(methods, dict)
    assert methods["mahalanobis"]["auroc"] > methods["energy"]["auroc"] + 0.2
    report = (demo_like.evaluation / "report.md").read_text()
    assert "## Out-of-distribution guard" in report and "| plain skin | 48 |" in report
    guard = ModelArtifact.load(demo_like.model).guard
    assert guard is not None and guard.threshold == pytest.approx(ood["threshold"])


def _b64(image: bytes) -> dict[str, dict[str, str]]:
    return {"image_bytes": {"b64": base64.b64encode(image).decode()}}


def _screenshots(n: int) -> list[bytes]:
    out = []
    for image in ood_images("text_screenshot", n, seed=99):
        buf = io.BytesIO()
        image.save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def test_the_cpu_predictor_answers_with_the_guards_verdict(
    demo_like: DemoLike, tmp_path: Path
) -> None:
    index = pd.read_csv(demo_like.prepared / "index.csv")
    held_out = index[index["split"] == "test"].head(12)["image_id"]
    lesions = [next(demo_like.raw.glob(f"*/{i}.jpg")).read_bytes() for i in held_out]
    screenshots = _screenshots(3)
    with predictor_process(demo_like.model, tmp_path / "home", tmp_path / "predictor.log",
                           ["--backend", "onnx"]) as url:  # fmt: skip
        body = {"instances": [_b64(image) for image in [*lesions, *screenshots]]}
        answer = httpx.post(f"{url}/v1/models/dermaops:predict", json=body, timeout=60)
        assert answer.status_code == 200, answer.text
        predictions = answer.json()["predictions"]
        verdicts = [p["in_distribution"] for p in predictions]
        for p in predictions:
            assert p["ood"]["method"] == "mahalanobis" and p["ood"]["keep"] == 0.95
            assert p["in_distribution"] == (p["ood"]["score"] <= p["ood"]["threshold"])
            assert set(p["probabilities"]) == {"akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"}
        assert verdicts[12:] == [False] * 3, "every screenshot refused"
        assert sum(verdicts[:12]) >= 9, "held-out lesions pass (95 % of validation did)"

        (tmp_path / "screen.jpg").write_bytes(screenshots[1])
        table = subprocess.run([DERMAOPS, "predict", tmp_path / "screen.jpg", "--url", url],
                               capture_output=True, text=True, check=True, timeout=60)  # fmt: skip
        assert "screen.jpg: OUT OF DISTRIBUTION (guard score" in table.stdout, table.stdout
        refused = verdicts.count(False) + 1
        assert sample(url, "dermaops_out_of_distribution_total", model_version="local") == refused

        tensor = {"name": "image", "shape": [1], "datatype": "BYTES",
                  "data": [base64.b64encode(screenshots[0]).decode()]}  # fmt: skip
        v2 = httpx.post(f"{url}/v2/models/dermaops/infer", json={"inputs": [tensor]}, timeout=60)
        assert v2.status_code == 200, v2.text
        outputs = {o["name"]: o for o in v2.json()["outputs"]}
        assert outputs["in_distribution"]["data"] == [False]
        assert outputs["ood_score"]["data"][0] > v2.json()["parameters"]["ood_threshold"]
        wait_recorded(url)  # records are made after the answer
    log = (tmp_path / "home" / "inference" / "predictions.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in log]
    assert [r["in_distribution"] for r in records] == [*verdicts, False, False]  # the monitor too
    assert all(isinstance(r["ood_score"], float) for r in records)


def test_a_model_served_without_its_guard_says_so_in_the_log_and_in_every_answer(
    demo_like: DemoLike, tmp_path: Path
) -> None:
    """``dermaops serve --model-uri RUN/model`` before ``evaluate``: no guard to ask."""
    bare = tmp_path / "model"
    shutil.copytree(demo_like.model, bare)
    (bare / GUARD).unlink()
    log = tmp_path / "predictor.log"
    with predictor_process(bare, tmp_path / "home", log, ["--backend", "onnx"]) as url:
        body = {"instances": [_b64(image) for image in _screenshots(2)]}
        answer = httpx.post(f"{url}/v1/models/dermaops:predict", json=body, timeout=60)
        assert answer.status_code == 200, answer.text
        for p in answer.json()["predictions"]:
            assert p["in_distribution"] is None and p["ood"] is None
            assert "without an out-of-distribution guard" in p["unchecked"]
    said = log.read_text()
    assert "has no guard.npz" in said and "in_distribution is null" in said
