#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite, lint and type checks.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export HF_HUB_OFFLINE=1
# Chromium for the HTML-leaderboard test (Debian's package; the test skips where it is missing)
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "Installing Chromium for the HTML leaderboard test..."
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1; } \
    || echo "Chromium could not be installed: the HTML leaderboard browser test will be skipped."
fi
.venv/bin/ruff check eqbench tests benchmarks
.venv/bin/ruff format --check eqbench tests benchmarks
.venv/bin/mypy
.venv/bin/eqbench leaderboard --results-dir results --check
.venv/bin/python -m pytest -n 2 "$@"
