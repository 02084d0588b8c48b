#!/usr/bin/env bash
# Create .venv (Python 3.11) and install eqbench with its test tools; a no-op when up to date.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' 2>/dev/null || {
  echo "eqbench needs Python 3.11 (found $("$PY" --version 2>&1)). Set PYTHON=/path/to/python3.11." >&2
  exit 1
}
stamp=.venv/.eqbench-installed
want=$(cat pyproject.toml | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
echo "Installing eqbench and its dependencies into .venv (torch is large: a few minutes the first time)..."
.venv/bin/python -m pip install --quiet -e '.[dev]'
echo "$want" > "$stamp"
