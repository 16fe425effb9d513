#!/usr/bin/env bash
# The GPU check on a GPU machine that has PyTorch but not this project installed:
#
#   bash benchmarks/gpu_node.sh [ARGS of python -m benchmarks --gpu]   # e.g. --out-dir DIR --note "lent H100"
#
# Wheels in $GPU_CHECK_WHEELS (default .whl of this checkout, made with `python -m benchmarks.gpu_wheels`
# where pip reaches PyPI) are installed into a temporary folder put on PYTHONPATH (removed at the end),
# so the machine's own Python is left as it is; then `python -m benchmarks --gpu ARGS` runs with this
# checkout first on PYTHONPATH (paths in ARGS are relative to the current directory). $PYTHON picks the
# interpreter (default python3). The exit status is the check's.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
wheels=${GPU_CHECK_WHEELS:-$root/.whl}
shopt -s nullglob
found=("$wheels"/*.whl)
path=$root
if ((${#found[@]})); then
  site=$(mktemp -d "${TMPDIR:-/tmp}/detlaunch-wheels.XXXXXX")
  trap 'rm -rf "$site"' EXIT
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check \
    --target "$site" "${found[@]}"
  path=$root:$site
  echo "gpu_node.sh: ${#found[@]} wheel(s) from $wheels installed into $site (on PYTHONPATH)" >&2
else
  echo "gpu_node.sh: no wheels in $wheels; using this Python's packages" >&2
fi
export PYTHONPATH="$path${PYTHONPATH:+:$PYTHONPATH}"
"$python" -m benchmarks --gpu "$@"
