#!/usr/bin/env bash
# Correlations, bootstrap CIs and saliency metrics on a GPU (issue 6).
# Builds the extension with its CUDA kernels (Spearman ranks with rank_average's), runs the CUDA tests of the three
# op test files, then checks the GPU results against the CPU paths and times the issue's three GPU goals; the table
# is printed last. Needs: python with torch (CUDA), triton, numpy, scipy, pytest, nvcc matching torch.version.cuda.
# A few minutes on an H200 (most of it the build).
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python}

"$PYTHON" setup.py build_ext --inplace 2>&1 | tail -n 3
"$PYTHON" -m pytest -q -m needs_cuda -p no:cacheprovider \
    tests/test_correlation.py tests/test_bootstrap.py tests/test_saliency_metrics.py
"$PYTHON" benchmarks/device/metrics.py
