#!/usr/bin/env bash
# Fused contrastive loss on a GPU (issue 3): CLIP and SigLIP Triton kernels.
# Installs fastclip in place (C++ part only: this op is Triton kernels + cuBLAS), runs the CUDA tests, then checks
# correctness against float64 at B = 4097 and times forward+backward for B in {8192, 32768, 65536} x D in
# {512, 768, 1024} against open_clip (or the reference loss when open_clip is not installed); the table and the
# issue's goals are printed last. Needs: python with torch (CUDA), triton, numpy, pytest. A few minutes on an H200.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python}

FASTCLIP_SKIP_CUDA=1 "$PYTHON" -m pip install --no-build-isolation --no-deps -q -e . 2>&1 | tail -n 3
"$PYTHON" -m pytest -q -m needs_cuda -p no:cacheprovider tests/test_contrastive_loss_triton.py
"$PYTHON" benchmarks/device/contrastive_loss_check.py
