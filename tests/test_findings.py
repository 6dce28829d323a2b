"""The paper's findings (fastclip.eval.findings) on synthetic results whose answer is known, and their report lines."""

from __future__ import annotations

import contextlib
import io
import math
from pathlib import Path

import pytest
import torch
from scipy.stats import spearmanr

from fastclip.eval.cli import main
from fastclip.eval.findings import (
    GroupBootstrap,
    TEXTURE_BIAS,
    cross_rho,
    evaluate_findings,
    last_minus_first,
    peak_minus_last,
    rho_with_epoch,
    run_sources,
)
from fastclip.eval.items import ItemValues, items_path, save_items
from fastclip.eval.report import load_inputs
from fastclip.eval.results import ResultsTable

EPOCHS = (1, 2, 3, 4, 5)
SIGMAS = (0.0, 0.04, 0.08, 0.12)
IQA_VARIANT = "layer=embedding,distance=normalized_euclidean"

# Per epoch: P(shape decision), clean accuracy, mean relative drop under noise, IQA Spearman target.
REPRODUCING = {
    "shape": (0.15, 0.3, 0.45, 0.55, 0.6),
    "accuracy": (0.5, 0.6, 0.7, 0.75, 0.8),
    "drop": (0.5, 0.4, 0.3, 0.25, 0.2),
    "iqa": (0.7, 0.8, 0.6, 0.5, 0.4),
}
CONTRARY = {  # the cue-equal world's direction: texture takes over, noise hurts more, alignment only rises
    "shape": (0.15, 0.1, 0.06, 0.03, 0.01),
    "accuracy": (0.8, 0.78, 0.75, 0.73, 0.7),
    "drop": (0.06, 0.1, 0.15, 0.2, 0.25),
    "iqa": (0.3, 0.4, 0.5, 0.6, 0.7),
}


def _write_run(folder: Path, run: str, curves: dict, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    table = ResultsTable()
    quality = torch.arange(160, dtype=torch.float64)
    for k, epoch in enumerate(EPOCHS):
        def rows(benchmark, dataset, measurements):
            table.rows.extend(
                {"run": run, "epoch": epoch, "samples_seen": 100 * epoch, "benchmark": benchmark, "dataset": dataset,
                 "metric": metric, "variant": variant, "value": value, "ci_low": math.nan, "ci_high": math.nan,
                 "n": 1, "seconds": 0.0}
                for metric, variant, value in measurements
            )  # fmt: skip

        shape = (torch.rand(240, generator=generator) < curves["shape"][k]).double()
        shape[::16] = math.nan  # trials where neither cue was chosen do not count
        save_items(items_path(folder, "shape_bias", "toy_cc", run, epoch),
                   ItemValues("mean", ["shape_bias"], ["pooled"], shape[None]))  # fmt: skip
        rows("shape_bias", "toy_cc", [("shape_bias", "pooled", float(shape.nanmean()))])

        clean = curves["accuracy"][k]
        accuracies = [clean] + [clean * (1 - curves["drop"][k] * (2 * j / len(SIGMAS))) for j in range(1, len(SIGMAS))]
        correct = torch.stack([(torch.rand(400, generator=generator) < a).double() for a in accuracies])
        variants = [f"sigma={s:g}" for s in SIGMAS]
        save_items(items_path(folder, "noise_robustness", "toy_heldout", run, epoch),
                   ItemValues("mean", ["accuracy"] * len(SIGMAS), variants, correct))  # fmt: skip
        measured = correct.mean(1)
        drop = float(((measured[0] - measured[1:]) / measured[0]).mean())
        rows("noise_robustness", "toy_heldout", [("relative_drop", "mean", drop)])
        save_items(items_path(folder, "zeroshot", "toy_heldout", run, epoch),
                   ItemValues("mean", ["top1"], [""], correct[:1]))  # fmt: skip
        rows("zeroshot", "toy_heldout", [("top1", "", float(measured[0]))])

        rho = curves["iqa"][k]
        noise = torch.randn(160, generator=generator, dtype=torch.float64) * quality.std()
        similarity = rho * (quality - quality.mean()) + math.sqrt(1 - rho**2) * noise
        save_items(items_path(folder, "iqa", "toy_iqa", run, epoch),
                   ItemValues("correlation", ["spearman"], [IQA_VARIANT], -similarity[None], quality, -1.0))
        rows("iqa", "toy_iqa", [("spearman", IQA_VARIANT, rho)])
    table.save(folder)


def _group(tmp_path: Path, curves: dict, name: str) -> list[Path]:
    folders = []
    for seed in range(3):
        folder = tmp_path / f"{name}-s{seed}" / "eval"
        folder.mkdir(parents=True)
        _write_run(folder, f"{name}-s{seed}", curves, seed)
        folders.append(folder.parent)
    return folders


def _verdicts(folders: list[Path]) -> dict[str, list]:
    findings = evaluate_findings(run_sources(load_inputs(folders)), resamples=200, seed=0)
    verdicts: dict[str, list] = {}
    for finding in findings:
        verdicts.setdefault(finding.code, []).append(finding)
    return verdicts


def test_a_group_that_follows_the_paper_reproduces_every_finding(tmp_path):
    verdicts = _verdicts(_group(tmp_path, REPRODUCING, "paper"))
    assert sorted(verdicts) == ["a", "b", "c", "d", "e"]
    for code, findings in verdicts.items():
        for finding in findings:
            assert finding.reproduced is True, finding.line()
    a = verdicts["a"][0]
    assert a.estimate.high < 0 and a.estimate.value == pytest.approx(-0.45, abs=0.08)  # 0.85 -> 0.4
    assert "3/3 runs move that way" in a.details and "Spearman rho vs epoch = -0.9" in a.details
    assert verdicts["b"][0].estimate.value == pytest.approx(-0.3, abs=0.08)
    d = verdicts["d"][0]
    assert "peak at epoch 2 (early" in d.details and d.estimate.value == pytest.approx(0.4, abs=0.12)
    correlations = {f.claim.split(" and ")[1].split(" ")[0]: f.estimate.value for f in verdicts["e"]}
    assert correlations["noise"] > 0.8 and correlations["low-level"] < -0.5


def test_a_group_that_goes_the_other_way_reproduces_no_trend(tmp_path):
    verdicts = _verdicts(_group(tmp_path, CONTRARY, "equal"))
    for code in "abcd":
        for finding in verdicts[code]:
            assert finding.reproduced is False, finding.line()
    # The couplings of (e) do not depend on the direction of training: shape bias falling with robustness and
    # against low-level alignment still has the paper's signs.
    assert all(finding.reproduced for finding in verdicts["e"])
    assert verdicts["a"][0].estimate.low > 0  # texture bias rises, clearly
    assert "peak at epoch 5" in verdicts["d"][0].details


def test_missing_item_files_are_not_tested_rather_than_guessed(tmp_path):
    folders = _group(tmp_path, REPRODUCING, "paper")
    (folders[1] / "eval" / "items" / "iqa" / "toy_iqa" / "paper-s1_epoch3.npz").unlink()
    verdicts = _verdicts(folders)
    assert verdicts["d"][0].reproduced is None and "missing" in verdicts["d"][0].line()
    assert verdicts["a"][0].reproduced is True


def test_group_statistics_on_known_trajectories():
    traj = torch.tensor([[0.9, 0.8, 0.5, 0.4, 0.3], [0.7, 0.6, 0.6, 0.5, 0.1]], dtype=torch.float64)
    assert float(last_minus_first(traj)) == pytest.approx(-0.6)
    expected = (spearmanr(EPOCHS, traj[0]).statistic + spearmanr(EPOCHS, traj[1]).statistic) / 2  # a tie in run 2
    assert float(rho_with_epoch(traj, EPOCHS)) == pytest.approx(expected)
    bump = torch.tensor([[0.2, 0.6, 0.5, 0.4, 0.3]], dtype=torch.float64)
    difference, peak = peak_minus_last(bump)
    assert int(peak) == 1 and float(difference) == pytest.approx(0.3)
    assert float(cross_rho(traj, -traj)) == pytest.approx(-1.0)


def test_bootstrap_draws_runs_and_items_reproducibly():
    boot = GroupBootstrap(3, resamples=300, seed=5)
    assert boot.run_draws.shape == (300, 3) and int(boot.run_draws.max()) <= 2
    assert torch.equal(boot.run_draws, GroupBootstrap(3, resamples=300, seed=5).run_draws)
    from fastclip.eval.findings import RunItems

    constant = [RunItems(f"r{r}", list(EPOCHS), torch.full((5, 1, 50), 0.25, dtype=torch.float64), None)
                for r in range(3)]  # fmt: skip
    samples = boot.trajectories(TEXTURE_BIAS, constant, stream=0)
    assert samples.shape == (300, 3, 5) and torch.allclose(samples, torch.full_like(samples, 0.75))


def test_report_prints_the_finding_lines_and_writes_them(tmp_path):
    folders = _group(tmp_path, REPRODUCING, "paper")
    out = tmp_path / "report"
    with contextlib.redirect_stdout(io.StringIO()) as stdout:
        status = main(["report", *map(str, folders), "--out", str(out), "--resamples", "200"])
    assert status == 0
    lines = stdout.getvalue().splitlines()
    assert any(line.startswith("(a) texture bias falls over training [toy_cc]: REPRODUCED; last - first = -0.")
               for line in lines), lines  # fmt: skip
    assert any(line.startswith("(b) the relative accuracy drop under noise falls [toy_heldout]: REPRODUCED")
               for line in lines)  # fmt: skip
    assert sum(line.startswith("(e) ") for line in lines) == 2
    report = (out / "report.md").read_text()
    assert "## 4. The paper's findings" in report and "paper-s0, paper-s1, paper-s2" in report
    assert "- (d) low-level (IQA) alignment peaks early and declines [toy_iqa]: REPRODUCED" in report
