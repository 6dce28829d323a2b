#!/usr/bin/env bash
# Stimulus kernels on a GPU (issue 5): gaussian_noise, cue_conflict, toyworld_render.
# Installs fastclip in place (C++ part only: these ops are Triton kernels), runs the CUDA correctness tests, then
# times each kernel against the device-to-device copy bandwidth and its torch chain; the table is printed last.
# Needs: python with torch (CUDA), triton, numpy, scipy, pytest. Takes a few minutes on an H200.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python}

FASTCLIP_SKIP_CUDA=1 "$PYTHON" -m pip install --no-build-isolation --no-deps -q -e . 2>&1 | tail -n 3
"$PYTHON" -m pytest -q -m needs_cuda -p no:cacheprovider \
    tests/test_gaussian_noise.py tests/test_cue_conflict.py tests/test_toyworld_render_triton.py
"$PYTHON" benchmarks/device/stimuli.py
