"""The demo's clinicians: label new lesions through the page's own code, then send a screenshot.

Usage: python scripts/demo_clinicians.py PREDICTOR_URL FEEDBACK_DIR [N]

N new lesions (generated, with a seed the training set never used) are classified and labelled
the way the clinician page does it (``dermaops.ui.client.classify``, then
``dermaops.data.feedback.record_feedback`` with the model's answer beside the diagnosis), so the
monitor can score the served version on them. Then a screenshot of a page is sent: the guard
should answer that it is not a dermoscopic image, and the page would say so instead of a
diagnosis. Generated data: nothing here is a clinical result.
"""

from __future__ import annotations

import io
import sys
import tempfile
from pathlib import Path

import pandas as pd

from dermaops.data.feedback import record_feedback
from dermaops.data.ood import ood_images
from dermaops.data.synth import SynthSettings, synthesize
from dermaops.ui.client import classify, guard_warning

CLINICIAN = "demo-clinician@dermaops.local"
SEED = 20261130  # not the training set's seed: new lesions


def label_new_lesions(url: str, store: Path, n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "new"
        synthesize(raw, SynthSettings(n=n, seed=SEED, workers=2))
        metadata = pd.read_csv(raw / "HAM10000_metadata.csv")
        agreed = 0
        for row in metadata.itertuples(index=False):
            image = next(raw.glob(f"*/{row.image_id}.jpg")).read_bytes()
            answer = classify(url, image)
            predicted = answer.top[0][0]
            record_feedback(store, image, str(row.dx), CLINICIAN, answer.model_version, predicted,
                            melanoma_flag=answer.melanoma_flag)  # fmt: skip
            agreed += predicted == row.dx
    print(f"{n} new lesions labelled through the page's code into {store}: the model's top "
          f"class was the clinician's diagnosis for {agreed}")  # fmt: skip


def send_a_screenshot(url: str) -> None:
    (screenshot,) = ood_images("text_screenshot", 1, seed=SEED)
    buf = io.BytesIO()
    screenshot.save(buf, "JPEG", quality=90)
    answer = classify(url, buf.getvalue())
    verdict = {True: "in distribution", False: "OUT OF DISTRIBUTION", None: "not checked"}
    print(f"a screenshot of a web page: {verdict[answer.in_distribution]} "
          f"(guard {answer.ood}); the page shows:")  # fmt: skip
    print(f"  {guard_warning(answer) or 'the diagnosis (the guard let it through)'}")


if __name__ == "__main__":
    predictor, feedback = sys.argv[1], Path(sys.argv[2])
    label_new_lesions(predictor, feedback, int(sys.argv[3]) if len(sys.argv) > 3 else 40)
    send_a_screenshot(predictor)
