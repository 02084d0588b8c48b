#!/usr/bin/env bash
# The main job on the built-in default: evaluate the built-in baseline checkpoints on the built-in
# data (the `core` group: synthetic probes, invariance scores, kNN and linear probe) and print the
# leaderboard. Results go to runs/demo/results (override with EQBENCH_DEMO_DIR). The demo uses
# 2000 training pairs per probe to stay within minutes on a laptop CPU; the task files default to
# 10000 (drop the --set options below for the full protocol).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export HF_HUB_OFFLINE=1
out=${EQBENCH_DEMO_DIR:-runs/demo}
for ckpt in baseline:pixels baseline:random:vit_tiny_patch16_224; do
  .venv/bin/eqbench eval --task core --checkpoint "$ckpt" --results-dir "$out/results" \
    --set n_train=2000 --set n_test=500 "$@"
done
.venv/bin/eqbench leaderboard --results-dir "$out/results"
