#!/usr/bin/env bash
# GPU data path on an H200 (16 CPU cores): DALI mixed decoding at hw_decoder_load {0, 0.65, 0.9} vs the torch
# DataLoader with 16 workers vs torchvision's GPU decode_jpeg (nvJPEG), 256-px img2dataset-style JPEG shards ->
# 224 px with open_clip's training transform; img/s, host CPU use, GPU memory growth over 5,000 batches.
# Prints a markdown table last; copy it into benchmarks/RESULTS.md ("Data pipeline") with the date and GPU.
#
# DALI is not installed on the device machine, which cannot reach a package registry. Install it before this
# script runs, one of two ways:
#   - where the machine can reach PyPI: `pip install nvidia-dali-cuda130==2.4.0` (the CUDA 13 build);
#   - from a wheel file copied to the machine: `DALI_WHEEL=/path/to/nvidia_dali_cuda130-2.4.0-...whl bash data.sh`,
#     or a wheel placed in the repository's wheels/ folder (fetch it elsewhere with
#     `pip download nvidia-dali-cuda130==2.4.0 --no-deps --only-binary=:all: --python-version 3.12 \
#        --platform manylinux2014_x86_64 -d wheels/`).
#     The wheel is about half a gigabyte (476 MB installed), far over the 64 MiB working tree that the session
#     device tool copies to the machine, so it cannot travel with the repository: the machine must already hold it.
# Without DALI, the DALI rows are skipped (the script says so) and the memory-growth run measures torchvision's
# nvJPEG path instead. fastclip._C is not needed by the data path, so nothing is compiled here.
#
# Usage: bash benchmarks/device/data.sh [--batches 60] [--memory-batches 5000] [...]   (python data.py --help)
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python}

if ! "$PYTHON" -c "import nvidia.dali" 2>/dev/null; then
    wheel=${DALI_WHEEL:-$(ls wheels/nvidia_dali_cuda*.whl 2>/dev/null | head -n 1 || true)}
    if [ -n "$wheel" ]; then
        echo "installing DALI from $wheel"
        "$PYTHON" -m pip install --no-deps --no-index "$wheel" >/dev/null
    else
        echo "DALI is not installed and no wheel was given (DALI_WHEEL or wheels/): the DALI rows are skipped" >&2
    fi
fi

if "$PYTHON" -c "import nvidia.dali" 2>/dev/null; then
    # The GPU correctness test of the DALI backend (mixed decoder against the CPU pipeline).
    "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_data_dali.py -k mixed_gpu || echo "mixed-decoder test FAILED" >&2
fi

exec "$PYTHON" benchmarks/device/data.py "$@"
