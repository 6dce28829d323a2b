#!/usr/bin/env bash
# The toy world's phase diagram: train one run per (texture predictivity, seed), evaluate texture bias and low-level
# (IQA) alignment after every epoch, then draw the figure. Re-running continues: finished runs and evaluated epochs
# are skipped (fastclip-train --resume latest, fastclip-eval's results table).
#
#   scripts/toyworld_sweep.sh [LOGS] [FIGURE]       settings from the environment (defaults below)
set -euo pipefail
VENV=${VENV:-.venv}
LOGS=${1:-runs/sweep}
FIGURE=${2:-$LOGS/phase_diagram.png}
PREDICTIVITIES=${SWEEP_PREDICTIVITY:-1.0 0.8 0.6 0.4}
SEEDS=${SWEEP_SEEDS:-0 1}
EPOCHS=${SWEEP_EPOCHS:-5}
SAMPLES=${SWEEP_SAMPLES:-8192}
WARMUP=${SWEEP_WARMUP:-50}
PARALLEL=${SWEEP_PARALLEL:-1}

one_run() {  # predictivity seed
    local name="texture-$1-seed-$2"
    local resume=""
    test -d "$LOGS/$name/checkpoints" && resume="--resume latest"
    "$VENV/bin/fastclip-train" --logs "$LOGS" --name "$name" --seed "$2" --toyworld-preset cue-equal \
        --texture-predictivity "$1" --epochs "$EPOCHS" --train-num-samples "$SAMPLES" --warmup "$WARMUP" $resume
    "$VENV/bin/fastclip-eval" "$LOGS/$name" --suite toyworld --benchmarks shape_bias,iqa > "$LOGS/$name.eval.log"
}

mkdir -p "$LOGS"
start=$(date +%s)
jobs_running=0
for seed in $SEEDS; do
    for predictivity in $PREDICTIVITIES; do
        one_run "$predictivity" "$seed" &
        jobs_running=$((jobs_running + 1))
        if [ "$jobs_running" -ge "$PARALLEL" ]; then wait -n; jobs_running=$((jobs_running - 1)); fi
    done
done
wait
"$VENV/bin/python" -m fastclip.eval.phase_diagram "$LOGS" --out "$FIGURE"
echo "sweep: $(( ($(date +%s) - start) / 60 )) min; figure $FIGURE"
