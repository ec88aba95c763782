"""``python -m dermaops.serving.smoke``: is a deployed predictor really answering?

Used by the chart's ``helm test`` and the container test: waits for readiness, classifies one
generated lesion over v1 and v2, checks the answers' shape, and optionally that the monitor is
up. Exits 0 when everything answered as it should, 1 with the reason otherwise.
"""

from __future__ import annotations

import argparse
import io
import sys

import httpx
import numpy as np

from dermaops.client import PredictorClient
from dermaops.data.synth_render import STYLES, draw_lesion, photograph
from dermaops.errors import DermaOpsError
from dermaops.labels import CLASSES
from dermaops.net import wait_until_ready


def lesion_jpeg(seed: int = 0) -> bytes:
    """One generated nevus photograph as JPEG bytes (no file, no patient)."""
    rng = np.random.default_rng(seed)
    image = photograph(draw_lesion(STYLES["nv"], rng, None), (0.85, 0.66, 0.56), rng)
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def check(url: str, model: str, monitor_url: str = "", wait: float = 120) -> list[str]:
    """What was checked, one line each.

    Raises:
        DermaOpsError: naming the first check that failed.
    """
    url = url.rstrip("/")
    wait_until_ready(f"{url}/v2/health/ready", wait)
    done = [f"ready: {url}/v2/health/ready"]
    with PredictorClient(url, model) as client:
        v1 = client.predict([lesion_jpeg()])
        outputs = client.infer([lesion_jpeg()])
    (prediction,) = v1.predictions
    total = sum(prediction.probabilities.values())
    if set(prediction.probabilities) != set(CLASSES) or abs(total - 1) > 1e-3:
        raise DermaOpsError(f"v1 probabilities are not the 7 classes summing to 1: {prediction}")
    done.append(f"v1: top {prediction.top_k[0].dx}, model version {v1.model_version}")
    if outputs["probabilities"]["shape"] != [1, len(CLASSES)]:
        raise DermaOpsError(f"v2 probabilities have shape {outputs['probabilities']['shape']}")
    done.append(f"v2: label {outputs['label']['data'][0]}")
    if monitor_url:
        wait_until_ready(f"{monitor_url.rstrip('/')}/healthz", wait)
        done.append(f"monitor: {monitor_url}/healthz")
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the predictor, e.g. http://NAME-predictor")
    parser.add_argument("--model-name", default="dermaops")
    parser.add_argument("--monitor-url", default="")
    parser.add_argument("--wait", type=float, default=120, help="seconds to wait for readiness")
    args = parser.parse_args(argv)
    try:
        for line in check(args.url, args.model_name, args.monitor_url, args.wait):
            print(f"ok  {line}")
    except (DermaOpsError, httpx.HTTPError, KeyError, ValueError) as e:
        print(f"FAIL {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
