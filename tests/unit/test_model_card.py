"""The model card says where the model came from, how it did, and for whom it did worse."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from dermaops.evaluation.card import Lineage, write_card
from dermaops.evaluation.result import MelanomaFigures
from dermaops.evaluation.subgroups import SubgroupSettings, evaluate_subgroups
from dermaops.labels import CLASSES
from dermaops.model.artifact import Preprocessing
from tests.formats import metrics
from tests.unit.test_subgroups import _set


def test_card_has_provenance_operating_point_flagged_gap_and_lineage(tmp_path: Path) -> None:
    prepared, model_dir = tmp_path / "prepared", tmp_path / "model"
    prepared.mkdir()
    model_dir.mkdir()
    manifest = {"images": 4, "generated": False, "fingerprint": "abc",
                "settings": {"fractions": [0.8, 0.1, 0.1]}}  # fmt: skip
    (prepared / "manifest.json").write_text(json.dumps(manifest))
    index = pd.DataFrame({"image_id": list("abcd"), "lesion_id": ["L1", "L1", "L2", "L3"],
                          "split": ["train", "train", "val", "test"],
                          "dataset": ["ham10000"] * 4})  # fmt: skip
    index.to_csv(prepared / "index.csv", index=False)
    (model_dir / "model.json").write_text(json.dumps(
        {"arch": "resnet50", "classes": list(CLASSES),
         "preprocessing": Preprocessing(224).as_dict(), "best_epoch": 7,
         "train_settings": {"weights": "imagenet", "epochs": 20, "lr": 0.001}}
    ))  # fmt: skip
    meta, scores = _set()
    measured = metrics(
        images=600, accuracy=0.8, balanced_accuracy=0.7, f1_macro=0.65, auc_macro_ovr=0.9,
        temperature=1.3, ece=0.03, ece_uncalibrated=0.08,
        melanoma=MelanomaFigures(threshold=0.21, target_sensitivity=0.85, val_sensitivity=0.86,
                                 val_specificity=0.88, test_sensitivity=0.8, test_specificity=0.9,
                                 test_support=60),
        subgroups= evaluate_subgroups(meta, scores, SubgroupSettings(bootstrap=50)),
        ood={
            "method": "mahalanobis", "threshold": 44.4, "keep": 0.95, "auroc": 0.976,
            "caught": 0.86, "held_out_passed": 0.91, "held_out_images": 100,
            "kinds": {"flat_colour": {"images": 48, "auroc": 0.98, "caught": 0.875},
                      "plain_skin": {"images": 48, "auroc": 0.93, "caught": 0.58}},
            "lesion_kinds": {"rotated_lesion": {"images": 48, "passed": 0.94}},
            "methods": {"mahalanobis": {"auroc": 0.976, "caught": 0.86},
                        "energy": {"auroc": 0.43, "caught": 0.18}},
        },
    )  # fmt: skip
    lineage = Lineage("dermaops", "4", "run123", "kfp-9", "3", "2026-11-28T10:00:00+00:00")
    md, html = write_card(measured, model_dir, prepared, lineage, tmp_path / "card")
    text = md.read_text()
    assert text.startswith("# Model card: dermaops version 4") and "GENERATED" not in text
    assert "Source: ham10000; 4 images" in text and "| test | 1 | 1 |" in text
    assert "at least 0.210" in text and "about 1 in 5 melanomas would pass unflagged" in text
    assert "Weaker for sex = female" in text and "**FLAGGED**" in text
    assert "Champion when registered: version 3" in text and "pipeline run: kfp-9" in text
    assert "resnet50" in text and "imagenet" in text and "T = 1.300" in text
    assert "<title>Model card: dermaops v4</title>" in html.read_text()
    assert "## Out-of-distribution guard" in text and "score is above 44.4" in text
    assert "| plain skin | 48 | 0.930 | 58.0% |" in text and "| **all** | 96 | **0.976** |" in text
    assert "rotated lesion 94.0% of 48" in text and "energy 0.430 AUROC" in text
