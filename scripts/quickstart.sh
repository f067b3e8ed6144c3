#!/usr/bin/env bash
# The main job, end to end on the built-in synthetic data, on whatever this machine has (CPU is fine):
# set up, print parameters and FLOPs of every named config, generate data, train the quickstart
# config, evaluate it. Everything lands in runs/quickstart.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PY=.venv/bin/python
DATA=${CPNET_DATA:-data/synthetic}
RUN=${CPNET_RUN:-runs/quickstart}
start=$(date +%s)
# every named config: build, one forward pass on a random batch, parameters and FLOPs
$PY -m cpnet.summary
if [ ! -f "$DATA/classes.yaml" ]; then
  $PY -m cpnet.data.synthetic --out "$DATA" --train 400 --val 100 --size 128 --seed 0
fi
$PY -m cpnet.train --config quickstart --data-root "$DATA" --work-dir "$RUN" "$@"
$PY -m cpnet.evaluate "$RUN" --data-root "$DATA" --out "$RUN/eval.json"
echo "quickstart finished in $(( $(date +%s) - start )) s (setup excluded); results in $RUN"
