#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite, lint and type checks.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export HF_HUB_OFFLINE=1
.venv/bin/ruff check eqbench tests benchmarks
.venv/bin/ruff format --check eqbench tests benchmarks
.venv/bin/mypy
.venv/bin/python -m pytest -n 2 "$@"
