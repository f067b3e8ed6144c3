#!/usr/bin/env bash
# The main job, end to end on the built-in synthetic data, on whatever this machine has (CPU is fine):
# set up .venv, then `cpnet pipeline`: generate data, train the quickstart config, evaluate, export,
# FP16 and INT8 (both flavours), the TensorRT pre-flight checks, engines where TensorRT and a GPU are,
# the drift report and the demo on a generated clip. Everything lands in runs/quickstart (one log per
# step in runs/quickstart/logs); the end screen says where. A second run skips the steps that are fresh;
# arguments go to cpnet pipeline (--from STEP, --only STEP, key.sub=value overrides, ...).
# The parameters and FLOPs of every named config: .venv/bin/cpnet summary (not part of the main job).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
bash scripts/setup.sh
setup=$(( $(date +%s) - start ))
DATA=${CPNET_DATA:-data/synthetic}
RUN=${CPNET_RUN:-runs/quickstart}
rc=0
.venv/bin/cpnet pipeline --data "$DATA" -o "$RUN" "$@" || rc=$?
echo "quickstart: $(( $(date +%s) - start )) s in all, setup $setup s (exit $rc)"
exit $rc
