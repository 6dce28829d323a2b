"""The README's main job in miniature: fastclip-train for 2 short epochs on the toy world, then fastclip-eval of
every epoch, ending with the results table, trials CSVs and the figure."""

from __future__ import annotations

import contextlib
import io
import math

from fastclip.eval.benchmarks.shape_bias import shape_bias_from_trials_csv
from fastclip.eval.cli import main as eval_main
from fastclip.eval.results import COLUMNS, read_results_csv
from fastclip.models import load_checkpoint
from fastclip.train.cli import main as train_main

TRAIN = ["--train-num-samples", "64", "--batch-size", "32", "--epochs", "2", "--seed", "3", "--device", "cpu"]
EVAL = ["--toyworld-size", "1", "--batch-size", "128", "--device", "cpu"]


def test_train_two_epochs_then_evaluate_both(tmp_path):
    logs = tmp_path / "logs"
    assert train_main(["--logs", str(logs), "--name", "e2e", *TRAIN]) == 0
    run = logs / "e2e"
    checkpoints = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert checkpoints == ["epoch_1.pt", "epoch_2.pt"]
    state = load_checkpoint(run / "checkpoints" / "epoch_2.pt")
    assert state["epoch"] == 2 and state["model_name"] == "fc-tiny-vit" and state["samples_seen"] == 128

    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert eval_main([str(run), *EVAL]) == 0
    out = run / "eval"
    assert (out / "results.csv").read_text().splitlines()[0] == ",".join(COLUMNS)
    rows = read_results_csv(out / "results.csv")
    assert {row["epoch"] for row in rows} == {1, 2}
    assert {row["benchmark"] for row in rows} >= {"zeroshot", "shape_bias", "noise_robustness"}
    assert {row["samples_seen"] for row in rows if row["epoch"] == 1} == {64}
    for epoch in (1, 2):
        trials = out / "trials" / "toyworld_cue_conflict" / f"e2e_epoch{epoch}.csv"
        pooled = [
            row for row in rows
            if row["epoch"] == epoch and row["metric"] == "shape_bias" and row["variant"] == "pooled"
        ]  # fmt: skip
        recomputed = shape_bias_from_trials_csv(trials).pooled.shape_bias
        assert len(pooled) == 1
        value = pooled[0]["value"]
        assert value == recomputed or (math.isnan(value) and math.isnan(recomputed))
    assert (out / "figure.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "results.jsonl").exists()
    assert "| run | epoch |" in stdout.getvalue()
