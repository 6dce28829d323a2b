#!/usr/bin/env bash
# The one command for a lent GPU machine (bare and offline: Python, torch, Triton, numpy, scipy, pytest,
# pytest-benchmark, pybind11, nvcc, g++). From the checkout's root or anywhere:
#
#   bash benchmarks/device/run.sh                 build for this GPU, CUDA tests, timings (<= 8 minutes)
#   bash benchmarks/device/run.sh --dry-run       the same sequence without a GPU: imports, build configuration,
#                                                 test collection; CUDA steps report "skipped: no device"
#   bash benchmarks/device/run.sh --only metrics,stimuli     rerun some steps (the others are listed as skipped)
#
# Results go to $OUT (else runs/device/): device.json (per step: status, seconds, figures, log tail), device.md
# (a table to paste into benchmarks/RESULTS.md) and device.log (every step's whole output). Steps are independent:
# a failing one is recorded and the next one runs. Knobs: PYTHON (default python3), FASTCLIP_CUDA_ARCHS (default:
# this GPU's compute capability), FASTCLIP_COMMIT (the commit to record where the copy has no .git),
# FASTCLIP_DEVICE_DRY_RUN=1 (= --dry-run). `python3 benchmarks/device/run.py --help` lists the options; the steps
# are described at the top of that file.
cd "$(dirname "$0")/../.." || exit 1
PYTHON=${PYTHON:-python3}
OUT=${OUT:-runs/device}
export PYTHON OUT

"$PYTHON" benchmarks/device/run.py "$@"
status=$?
if [ ! -s "$OUT/device.json" ] && [ "$status" -ne 0 ]; then
    # run.py itself could not start (no such interpreter, a broken Python): leave a record that says so.
    mkdir -p "$OUT"
    printf '{"fastclip_device_run": 1, "error": "benchmarks/device/run.py did not run with PYTHON=%s (exit code %s)", "steps": []}\n' \
        "$PYTHON" "$status" > "$OUT/device.json"
    printf 'Device run failed before its first step: `%s benchmarks/device/run.py` exited with %s.\n' \
        "$PYTHON" "$status" > "$OUT/device.md"
fi
exit "$status"
