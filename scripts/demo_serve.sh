#!/usr/bin/env bash
# The end of `make demo`: serve the deployed champion on loopback, classify one image, send
# normal then shifted traffic, run the drift job after each, and show the monitor's gauges.
# Usage: scripts/demo_serve.sh BIN_DIR PORT MONITOR_PORT   (DERMAOPS_HOME set by make)
set -euo pipefail
bin=$1 port=$2 monitor_port=$3
home=${DERMAOPS_HOME:?}
if [[ ! -f $home/serving/current.json ]]; then
  echo "no model deployed yet (the gate stopped it): nothing to serve"
  exit 0
fi
image=$(find "$home/pipelines" -path '*ingest*' -name '*.jpg' -print -quit)
images=$(dirname "$image")
url=http://127.0.0.1:$port
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT

"$bin/dermaops" serve --http-port "$port" > "$home/serve.log" 2>&1 &
pids+=($!)
echo "== serving the champion on $url (log: $home/serve.log)"
"$bin/dermaops" predict "$image" --url "$url" --wait 120

echo "== 60 images as the model knows them, then the drift job on those 60"
"$bin/dermaops" traffic "$images" --url "$url" --n 60
"$bin/dermaops" monitor drift --window 60 --out "$home/monitoring/normal"
echo "== 60 images from a 'new dermatoscope' (darker, blurred, bluer), then drift again"
"$bin/dermaops" traffic "$images" --url "$url" --n 60 --shifted
"$bin/dermaops" monitor drift --window 60

echo "== clinicians label new lesions on the page, and someone sends a screenshot"
"$bin/python" scripts/demo_clinicians.py "$url" "$home/feedback" 40

echo "== the monitor: drift gauges, and the served version scored on the clinicians' labels"
"$bin/dermaops" monitor serve --port "$monitor_port" --feedback-dir "$home/feedback" \
  > "$home/monitor.log" 2>&1 &
pids+=($!)
monitor=http://127.0.0.1:$monitor_port
"$bin/python" - "$monitor" <<'PY'
import sys
import httpx
from dermaops.net import wait_until_ready

monitor = sys.argv[1]
wait_until_ready(f"{monitor}/summary", 120)  # the first scheduled run is at start-up
for line in httpx.get(f"{monitor}/metrics").text.splitlines():
    if line.startswith(("dermaops_drift_share", "dermaops_drift_detected", "dermaops_drift_window")):
        print(line)
for version, p in httpx.get(f"{monitor}/performance", timeout=120).json()["versions"].items():
    def shown(value, spec):
        return "n/a" if value is None else format(value, spec)

    low, high = p["ci95"].get("melanoma_sensitivity") or (None, None)
    print(f"version {version} on {p['cases']} labelled cases: accuracy {shown(p['accuracy'], '.0%')}, "
          f"macro-F1 {shown(p['f1_macro'], '.3f')}, melanoma sensitivity "
          f"{shown(p['melanoma_sensitivity'], '.0%')} (95% interval {shown(low, '.0%')} to "
          f"{shown(high, '.0%')}) on {p['melanomas']} melanomas; generated data, not a clinical result")
PY
echo
echo "Drift report:   $home/monitoring/drift_report.html (before the shift: $home/monitoring/normal/)"
echo "Predictor logs: $home/inference/predictions.jsonl (statistics and predictions, no pixels)"
echo "Run the monitor yourself: DERMAOPS_HOME=$home $bin/dermaops monitor serve --port $monitor_port \\"
echo "    --feedback-dir $home/feedback"
echo "  then open $monitor/report, $monitor/report?kind=performance and $monitor/metrics"
echo "Clinician UI: DERMAOPS_HOME=$home $bin/dermaops serve --http-port $port &"
echo "  DERMAOPS_HOME=$home $bin/dermaops ui --predictor-url $url   then open http://127.0.0.1:8501"
