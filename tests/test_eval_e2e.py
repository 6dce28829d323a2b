"""fastclip-eval end to end: the toy-world suite through fastclip-train's --eval-every hook (2 epochs), the CLI and
the report; a paper-like suite on tiny fixtures of every dataset type; --follow; two CPU ranks under torchrun."""

from __future__ import annotations

import contextlib
import io
import math
import subprocess
import sys

import pytest
import torch

from fastclip.eval.cli import main
from fastclip.eval.context import options_for_suite
from fastclip.eval.items import load_items
from fastclip.eval.results import read_results_jsonl
from fastclip.eval.runner import DONE_MARKER, follow, start_evaluator
from fastclip.eval.suite import default_suite
from fastclip.models import create_model, save_checkpoint
from tests.eval_fixtures import write_paper_like_suite
from tests.helpers import REPO_ROOT

ZEROSHOT_ONLY = ["--benchmarks", "zeroshot", "--toyworld-size", "1", "--device", "cpu"]


def _checkpoint(run, epoch: int) -> None:
    torch.manual_seed(epoch)
    bundle = create_model("fc-tiny-vit")
    save_checkpoint(
        run / "checkpoints" / f"epoch_{epoch}.pt", model=bundle.model, optimizer=None, epoch=epoch, name=run.name,
        model_name=bundle.model_name, model_cfg=bundle.model_cfg, samples_seen=10 * epoch,
    )  # fmt: skip


def _quiet(function, *args):
    with contextlib.redirect_stdout(io.StringIO()) as out:
        status = function(*args)
    return status, out.getvalue()


def test_toyworld_suite_via_the_training_hook_then_the_cli_and_the_report(tmp_path):
    from fastclip.train.cli import main as train_main

    logs = tmp_path / "logs"
    train_main([
        "--logs", str(logs), "--name", "toy", "--device", "cpu", "--train-num-samples", "32", "--batch-size", "16",
        "--epochs", "2", "--warmup", "1", "--eval-every", "1", "--eval-suite", "toyworld",
    ])  # fmt: skip
    run, out = logs / "toy", logs / "toy" / "eval"
    assert (run / DONE_MARKER).exists()
    rows = read_results_jsonl(out / "results.jsonl")
    units = {(row["benchmark"], row["dataset"]) for row in rows}
    assert {benchmark for benchmark, _ in units} == {"zeroshot", "noise_robustness", "shape_bias", "iqa", "two_afc", "saliency"}
    for benchmark, dataset in units:
        assert {row["epoch"] for row in rows if (row["benchmark"], row["dataset"]) == (benchmark, dataset)} == {1, 2}
    assert {row["samples_seen"] for row in rows if row["epoch"] == 2} == {64}
    iqa = {row["variant"] for row in rows if row["metric"] == "spearman"}
    assert "layer=block2,distance=normalized_euclidean" in iqa and len(iqa) == 4 * 3  # embedding + 3 blocks
    assert (out / "figure.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "trials" / "toyworld_cue_conflict" / "toy_epoch2.csv").exists()
    items = load_items(out / "items" / "iqa" / "toyworld_iqa" / "toy_epoch1.npz")
    assert items.kind == "correlation" and items.values.shape == (12, 160)
    noise = load_items(out / "items" / "noise_robustness" / "toyworld_heldout" / "toy_epoch2.npz")
    accuracy = {row["variant"]: row["value"] for row in rows if row["benchmark"] == "noise_robustness"
                and row["metric"] == "accuracy" and row["epoch"] == 2}  # fmt: skip
    heldout = {row["n"] for row in rows if row["benchmark"] == "noise_robustness" and row["metric"] == "accuracy"}
    assert noise.kind == "mean" and noise.values.shape == (6, *heldout)  # clean + 5 sigmas, per image 1 if correct
    assert [float(v) for v in noise.values.mean(1)] == pytest.approx([accuracy[v] for v in noise.variants])
    top1 = load_items(out / "items" / "zeroshot" / "toyworld_heldout" / "toy_epoch2.npz")
    assert torch.equal(top1.values, noise.values[:1])  # the clean images' answers

    # The CLI finds every unit done by the hook; the report overlays the epochs.
    status, stdout = _quiet(main, [str(run), "--suite", "toyworld", "--device", "cpu"])
    assert status == 0 and "Evaluated 0 (epoch, benchmark, dataset) unit(s); skipped 12" in stdout
    status, _ = _quiet(main, ["report", str(run), "--resamples", "200"])
    report = (out / "report.md").read_text()
    assert status == 0 and "## 1. Peak epoch" in report and "## 3. Peak epoch vs last epoch" in report
    assert "| toy | iqa spearman [layer=embedding,distance=normalized_euclidean] (toyworld_iqa) |" in report


def test_paper_like_suite_on_every_dataset_type(tmp_path):
    suite = write_paper_like_suite(tmp_path / "data")
    run = tmp_path / "run"
    _checkpoint(run, 1)
    status, stdout = _quiet(main, [str(run), "--suite", str(suite), "--device", "cpu", "--batch-size", "64"])
    assert status == 0
    rows = read_results_jsonl(run / "eval" / "results.jsonl")
    units = {(row["benchmark"], row["dataset"]) for row in rows}
    assert units == {
        ("zeroshot", "cifar100"), ("zeroshot", "imagefolder"), ("noise_robustness", "cifar100"),
        ("shape_bias", "cue-conflict"), ("iqa", "tid2013"), ("iqa", "kadid10k"), ("iqa", "iqa_csv"),
        ("two_afc", "bapps"), ("two_afc", "nights"), ("saliency", "mit1003"), ("saliency", "cat2000"),
        ("saliency", "salicon"), ("saliency", "saliency_folders"),
    }  # fmt: skip

    def value(**match):
        (row,) = [row for row in rows if all(row[key] == wanted for key, wanted in match.items())]
        return row

    assert value(dataset="cue-conflict", metric="shape_bias_human", variant="pooled")["n"] > 0
    assert not math.isnan(value(dataset="cue-conflict", metric="shape_bias_in1k", variant="pooled")["n"])
    assert value(dataset="bapps", metric="2afc", variant="group=cnn,layer=embedding,distance=cosine")["n"] == 4
    assert value(dataset="tid2013", metric="spearman", variant="layer=embedding,distance=l2")["n"] == 12
    assert value(dataset="cifar100", metric="accuracy", variant="sigma=0.38")["n"] == 20
    mit = {row["metric"] for row in rows if row["dataset"] == "mit1003"}
    assert {"cc", "nss", "auc_judd", "auc_shuffled", "info_gain"} <= mit  # maps and fixation points
    assert {row["metric"] for row in rows if row["dataset"] == "salicon"} == {"cc", "sim", "kld"}  # maps only
    trials = run / "eval" / "trials" / "cue-conflict"
    assert sorted(path.name for path in trials.iterdir()) == ["run_epoch1.csv", "run_epoch1_in1k.csv"]


def test_follow_waits_for_checkpoints_until_the_done_marker(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    options = options_for_suite(default_suite().only(["zeroshot"]), torch.device("cpu"), toyworld_size=1)
    evaluator = start_evaluator(run / "eval", options)
    naps = []

    def training(seconds):  # stands in for time passing while fastclip-train writes epochs
        naps.append(seconds)
        if len(naps) <= 2:
            _checkpoint(run, len(naps))
        else:
            (run / DONE_MARKER).write_text("2\n")

    report = follow([run], evaluator, poll_seconds=5.0, timeout_seconds=math.inf, sleep=training)
    assert naps == [5.0, 5.0, 5.0]
    assert sorted(key.epoch for key in report.evaluated) == [1, 2]

    # Without the marker, --follow stops after --follow-timeout without a new checkpoint.
    (run / DONE_MARKER).unlink()
    status, stdout = _quiet(main, [str(run), "--follow", "--poll-interval", "0.05", "--follow-timeout", "0.2", *ZEROSHOT_ONLY])
    assert status == 0 and "skipped 2" in stdout


def test_torchrun_splits_checkpoints_across_two_ranks(tmp_path):
    run = tmp_path / "run"
    for epoch in (1, 2, 3):
        _checkpoint(run, epoch)
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "fastclip.eval.cli", str(run), *ZEROSHOT_ONLY,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.count("## fastclip-eval") == 1  # rank 0 alone writes the summary
    assert "Evaluated 3 (epoch, benchmark, dataset) unit(s)" in done.stdout
    rows = read_results_jsonl(run / "eval" / "results.jsonl")
    assert sorted({row["epoch"] for row in rows}) == [1, 2, 3] and len(rows) == 6  # top1 and top5 per epoch
    assert not (run / "eval" / "parts").exists()
