#!/usr/bin/env bash
# `make gpu-check` on a lent GPU machine: that machine's python3 has torch, CUDA and most of what
# fastseg needs, but not fastai or albumentations; wheels carried in .whl/ (README, "GPU check")
# are installed into /tmp/site first. Arguments go to tools/gpu_check.py (--out DIR, --dry-run, --only).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "gpu-check: installing the carried wheels failed"; exit 1; }
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
exec "$PY" tools/gpu_check.py "$@"
