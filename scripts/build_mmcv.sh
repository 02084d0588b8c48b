#!/usr/bin/env bash
# Install the OpenMMLab stack (mmcv 2.1.0 with CPU ops, mmengine, mmsegmentation, mmdet) into a
# Python environment that already has torch. No mmcv 2.1.0 wheel exists for torch 2.14, so mmcv is
# built from its source release once (about 20 minutes on 2 idle cores; 44 minutes measured with
# the cores shared with other jobs) and the wheel is cached under
#   ${EQBENCH_WHEEL_CACHE:-${XDG_CACHE_HOME:-~/.cache}/eqbench/wheels}/torch-<version>-py<XY>/
# and reused on every later run (seconds). A no-op when the right versions already import.
#
# Usage: scripts/build_mmcv.sh [PYTHON]     (default: .venv/bin/python)
# Why each step (see docs/environment.md): mmcv-lite lacks mmcv._ext, which mmseg/mmdet models
# need; mmcv 2.2 is refused by mmseg 1.2.2 and mmdet 3.3.0; torch 2.14's headers need C++20;
# mmcv's setup.py imports pkg_resources, gone from setuptools 81.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-.venv/bin/python}
MMCV_VERSION=2.1.0
OPENMMLAB=("mmengine==0.10.7" "mmsegmentation==1.2.2" "mmdet==3.3.0" "ftfy" "regex")

[ -x "$PY" ] || command -v "$PY" >/dev/null 2>&1 || {
  echo "build_mmcv.sh: no Python at '$PY'. Run scripts/setup.sh first or pass a Python." >&2
  exit 1
}
"$PY" -c 'import torch' 2>/dev/null || {
  echo "build_mmcv.sh: torch does not import in '$PY'; install eqbench (scripts/setup.sh) first." >&2
  exit 1
}

installed() {
  "$PY" - <<PYEOF 2>/dev/null
import mmcv, mmcv.ops, mmengine, mmseg, mmdet  # mmcv.ops loads the compiled mmcv._ext
assert mmcv.__version__ == "$MMCV_VERSION", mmcv.__version__
assert (mmengine.__version__, mmseg.__version__, mmdet.__version__) == ("0.10.7", "1.2.2", "3.3.0")
PYEOF
}
if installed; then
  echo "OpenMMLab is installed (mmcv $MMCV_VERSION with ops, mmengine, mmseg, mmdet)."
  exit 0
fi

torch_version=$("$PY" -c 'import torch; print(torch.__version__.replace("+", "_"))')
py_tag=$("$PY" -c 'import sys; print(f"py{sys.version_info[0]}{sys.version_info[1]}")')
cache_root=${EQBENCH_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/eqbench/wheels}
cache="$cache_root/torch-$torch_version-$py_tag"
mkdir -p "$cache"
wheel=$(ls "$cache"/mmcv-"$MMCV_VERSION"-*.whl 2>/dev/null | head -n1 || true)

if [ -z "$wheel" ]; then
  echo "Building mmcv $MMCV_VERSION (CPU ops) for torch $torch_version, $py_tag: 20-45 minutes" \
       "on 2 cores, once; the wheel is cached in $cache."
  start=$(date +%s)
  work=$(mktemp -d "${TMPDIR:-/tmp}/eqbench-mmcv.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  # build tools in the target environment (the build runs without isolation, against its torch)
  "$PY" -m pip install --quiet 'setuptools>=77,<81' wheel ninja
  # the source release; pip runs its setup.py for metadata, which needs torch: no isolation
  "$PY" -m pip download --quiet --no-deps --no-binary :all: --no-build-isolation \
    "mmcv==$MMCV_VERSION" -d "$work/src"
  tar -xzf "$work/src/mmcv-$MMCV_VERSION.tar.gz" -C "$work/src"
  src="$work/src/mmcv-$MMCV_VERSION"
  grep -q -- '-std=c++17' "$src/setup.py" || {
    echo "build_mmcv.sh: mmcv's setup.py no longer names -std=c++17; update this script." >&2
    exit 1
  }
  sed -i 's/-std=c++17/-std=c++20/g' "$src/setup.py"
  MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
    "$PY" -m pip wheel --no-build-isolation --no-deps -w "$work/dist" "$src"
  built=$(ls "$work"/dist/mmcv-"$MMCV_VERSION"-*.whl)
  # strip debug symbols from the extension (tens of MB -> about 1.4 MB); wheel pack rewrites RECORD
  "$PY" -m wheel unpack --dest "$work/unpacked" "$built" >/dev/null
  find "$work/unpacked" -name '*.so' -exec strip --strip-debug {} +
  mkdir -p "$work/stripped"
  "$PY" -m wheel pack --dest-dir "$work/stripped" "$work/unpacked"/mmcv-"$MMCV_VERSION" >/dev/null
  stripped=$(ls "$work"/stripped/mmcv-"$MMCV_VERSION"-*.whl)
  # atomic: a half-copied wheel never sits in the cache under its final name
  cp "$stripped" "$cache/.partial.whl"
  mv "$cache/.partial.whl" "$cache/$(basename "$stripped")"
  wheel="$cache/$(basename "$stripped")"
  echo "Built $(basename "$wheel") ($(du -h "$wheel" | cut -f1)) in $(( $(date +%s) - start )) s."
else
  echo "Using the cached $wheel."
fi

"$PY" -m pip install --quiet "$wheel" "${OPENMMLAB[@]}"
installed || {
  echo "build_mmcv.sh: OpenMMLab still does not import after installing; see the errors above." >&2
  "$PY" -c 'import mmcv.ops, mmseg.models, mmdet.models'
  exit 1
}
echo "OpenMMLab installed: mmcv $MMCV_VERSION (CPU ops), mmengine 0.10.7, mmsegmentation 1.2.2," \
     "mmdet 3.3.0."
