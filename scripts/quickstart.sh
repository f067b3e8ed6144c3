#!/usr/bin/env bash
# The main job, end to end on the built-in synthetic data, on whatever this machine has (CPU is fine):
# set up, print parameters and FLOPs of every named config, generate data, train the quickstart
# config, evaluate it. Everything lands in runs/quickstart.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
CPNET=.venv/bin/cpnet
DATA=${CPNET_DATA:-data/synthetic}
RUN=${CPNET_RUN:-runs/quickstart}
start=$(date +%s)
# every named config: build, one forward pass on a random batch, parameters and FLOPs
$CPNET summary
if [ ! -f "$DATA/classes.yaml" ]; then
  $CPNET data -o "$DATA" --train 400 --val 100 --size 128 --seed 0
fi
$CPNET train quickstart --data-root "$DATA" -o "$RUN" "$@"
$CPNET evaluate "$RUN" --data-root "$DATA" --json "$RUN/eval.json"
echo "quickstart finished in $(( $(date +%s) - start )) s (setup excluded); results in $RUN"
