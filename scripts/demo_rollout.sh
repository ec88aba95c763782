#!/usr/bin/env bash
# The rollout part of `make demo`: a new champion is not served at once. The pipeline's run is
# registered again by hand (a new version of the same model), promoted, and rolled out: the
# stable predictor keeps answering and mirrors every request to the challenger (shadow), the
# judge pairs their answers, and the rollout is promoted (or rolled back) on what they answered.
# Usage: scripts/demo_rollout.sh BIN_DIR PORT CHALLENGER_PORT   (DERMAOPS_HOME set by make)
set -euo pipefail
bin=$1 port=$2 challenger_port=$3
home=${DERMAOPS_HOME:?}
if [[ ! -f $home/serving/current.json ]]; then
  echo "no model deployed yet (the gate stopped it): nothing to roll out"
  exit 0
fi
run=$(find "$home/pipelines" -maxdepth 1 -name 'dermaops-training-*' | sort | tail -n 1)
images=$(dirname "$(find "$home/pipelines" -path '*ingest*' -name '*.jpg' -print -quit)")
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT

# Demo-sized stages: judged as soon as 50 images are paired (the chart's defaults: 10 min and
# 200 images per stage). Locally a rollout is shadow then full: no router splits traffic here.
export DERMAOPS_ROLLOUT_ENABLED=true DERMAOPS_ROLLOUT_MIN_STAGE_S=0
export DERMAOPS_ROLLOUT_JUDGE='{"min_pairs": 50, "min_requests": 50}'

echo "== a new version: the pipeline's trained run registered again by hand, then promoted"
registered=$("$bin/dermaops" registry register --run "$run/train/model" \
  --eval "$run/evaluate/evaluation" --data "$run/prepare/prepared" \
  --baseline "$run/baseline/evaluation")
echo "$registered"
version=$(sed -n 's/^registered [^ ]* version \([0-9]*\) .*/\1/p' <<< "$registered")
"$bin/dermaops" registry promote "$version"
"$bin/dermaops" rollout status

echo "== the stable version answers and mirrors each request to version $version (shadow)"
challenger=http://127.0.0.1:$challenger_port url=http://127.0.0.1:$port
DERMAOPS_SERVING_CHALLENGER=true DERMAOPS_SERVING_INFERENCE_LOG_DIR="$home/inference-challenger" \
  "$bin/dermaops" serve --model-uri "models:/dermaops/$version" --http-port "$challenger_port" \
  > "$home/challenger.log" 2>&1 &
pids+=($!)
DERMAOPS_SERVING_SHADOW_URL=$challenger "$bin/dermaops" serve --http-port "$port" \
  > "$home/serve-stable.log" 2>&1 &
pids+=($!)
"$bin/python" -c "import sys; from dermaops.net import wait_until_ready as w; \
[w(u + '/v2/health/ready', 120) for u in sys.argv[1:]]" "$challenger" "$url"
count='import sys; from pathlib import Path; from dermaops.inference_log import read_records as r
print(len(r(Path(sys.argv[1]))))'
before=$("$bin/python" -c "$count" "$home/inference")
"$bin/dermaops" traffic "$images" --url "$url" --n 60
"$bin/python" - "$home/inference" $((before + 60)) "$home/inference-challenger" 60 <<'PY'
import sys, time
from pathlib import Path
from dermaops.inference_log import read_records

# Both predictors write their records after answering: wait for the 60 of each.
deadline = time.monotonic() + 120
for folder, wanted in zip(sys.argv[1::2], map(int, sys.argv[2::2])):
    while len(read_records(Path(folder))) < wanted and time.monotonic() < deadline:
        time.sleep(0.5)
    if len(read_records(Path(folder))) < wanted:
        print(f"{folder}: fewer than {wanted} records after 120 s; the judge may wait")
PY

echo "== the judge: paired checks on the mirrored images, then the verdict acted on"
"$bin/dermaops" rollout step --log-dir "$home/inference" --log-dir "$home/inference-challenger"
"$bin/dermaops" rollout status
echo
echo "The same rollout on a cluster: the monitor judges each stage on a schedule, in canary"
echo "steps (10 %, 50 %): KServe's canaryTrafficPercent (Serverless) or spec.canary"
echo "(RawDeployment); see docs/rollouts.md."
