#!/usr/bin/env bash
# The kernel audit under triton 3.6.0, the version the lent H200 runs (this machine's venv has 3.8):
#   bash benchmarks/audit_triton36.sh --targets sm_80,sm_90 --production --no-cuda
# installs triton==3.6.0 from the package index into .triton36/ (gitignored) once, then runs
# `python -m fastclip.kernels.audit` with that Triton first on sys.path; arguments go to the audit.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
target=${TRITON36_DIR:-.triton36}
if ! PYTHONPATH="$target" "$python" -c 'import sys, triton; sys.exit(triton.__version__ != "3.6.0")' 2>/dev/null; then
    echo "installing triton==3.6.0 into $target" >&2
    "$python" -m pip install --quiet --no-deps --target "$target" triton==3.6.0
fi
PYTHONPATH="$target${PYTHONPATH:+:$PYTHONPATH}" exec "$python" -m fastclip.kernels.audit "$@"
