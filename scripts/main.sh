#!/usr/bin/env bash
# The main job on the built-in default: pretrain VICReg, TIR+VICReg and TIR's matched control
# (lambda = 0; same seed and steps) on the built-in photos, evaluate them on the synthetic probes and
# kNN, and print the leaderboard (`eqbench demo`; about fifteen minutes on two CPU cores). Runs and results go to runs/demo
# (override with EQBENCH_DEMO_DIR); extra arguments go to `eqbench demo` (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export HF_HUB_OFFLINE=1
.venv/bin/eqbench demo --out "${EQBENCH_DEMO_DIR:-runs/demo}" "$@"
