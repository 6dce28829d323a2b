"""The paper's findings, tested on one run or a group of runs (e.g. seeds) the way a paper would test them.

Hernández-Cámara et al. (arXiv 2508.09814) report, over CLIP's training epochs:
  (a) texture bias falls;                  (b) the relative accuracy drop under Gaussian noise falls;
  (c) zero-shot accuracy rises;            (d) low-level (IQA) alignment peaks early, then declines;
  (e) across epochs, shape bias correlates positively with noise robustness (negatively with the accuracy drop)
      and negatively with low-level alignment.

Every statistic is computed from the per-item values fastclip-eval keeps (OUT/items/, fastclip.eval.items), so its
95% interval comes from a hierarchical percentile bootstrap: each resample draws runs with replacement, then, for
every drawn run, the items (cue-conflict trials, images, IQA pairs) with replacement, the same items at every epoch
(so the comparison between epochs stays paired). The trend statistics are
  - the paired difference last epoch - first epoch, averaged over runs;
  - Spearman's rho of the metric against the epoch (fastclip.ops.spearman), averaged over runs;
  - (d) the value at the peak of the runs' mean trajectory minus the last epoch's, the peak re-chosen in every
    resample (so the choice of the peak is part of the uncertainty);
  - (e) Spearman's rho between two metrics' trajectories across epochs, averaged over runs.
A finding reproduces when its statistic has the paper's sign and its 95% interval excludes 0. Nothing here knows how
a run was trained (toy-world preset, data, model): only its results and per-item files are read.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from fastclip.eval.items import items_path, load_items

RESAMPLE_CHUNK = 250  # resamples held in memory at once


@dataclass(frozen=True)
class MetricSpec:
    """How one metric's per-run, per-epoch value is computed from its per-item file."""

    key: str
    label: str
    benchmark: str
    metric: str  # the items file's row metric
    variant: str | None  # the row variant; None: every row of `metric` (noise: one row per sigma)
    reduce: str  # "mean", "one_minus_mean", "relative_drop", "spearman"


TEXTURE_BIAS = MetricSpec("texture_bias", "texture bias", "shape_bias", "shape_bias", "pooled", "one_minus_mean")
SHAPE_BIAS = MetricSpec("shape_bias", "shape bias", "shape_bias", "shape_bias", "pooled", "mean")
ACCURACY_DROP = MetricSpec("relative_drop", "relative accuracy drop under noise", "noise_robustness", "accuracy",
                           None, "relative_drop")  # fmt: skip
ROBUSTNESS = MetricSpec("robustness", "noise robustness (- relative drop)", "noise_robustness", "accuracy", None,
                        "negative_relative_drop")  # fmt: skip
ZERO_SHOT = MetricSpec("top1", "zero-shot top-1 accuracy", "zeroshot", "top1", "", "mean")
IQA_HEADLINE_VARIANT = "layer=embedding,distance=normalized_euclidean"
LOW_LEVEL = MetricSpec("iqa", "low-level (IQA) alignment, Spearman", "iqa", "spearman", IQA_HEADLINE_VARIANT,
                       "spearman")  # fmt: skip


@dataclass
class RunItems:
    """One run's per-item values of one metric on one dataset: values (E, K, n) over epochs, rows, items."""

    run: str
    epochs: list[int]
    values: torch.Tensor
    target: torch.Tensor | None  # (n,) for a correlation


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float
    high: float

    def excludes_zero(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high) and (self.low > 0 or self.high < 0)

    def text(self, digits: int = 3) -> str:
        if not math.isfinite(self.value):
            return "n/a"
        interval = f" [{self.low:.{digits}f}, {self.high:.{digits}f}]" if math.isfinite(self.low) else " [n/a]"
        return f"{self.value:+.{digits}f}{interval}"


@dataclass(frozen=True)
class Finding:
    code: str  # "a" .. "e"
    claim: str
    dataset: str
    reproduced: bool | None  # None: not testable (missing data)
    statistic: str  # the deciding statistic's name
    estimate: Estimate | None
    details: str  # the supporting statistics and the sample: runs, epochs, items

    def line(self) -> str:
        verdict = {True: "REPRODUCED", False: "NOT REPRODUCED", None: "NOT TESTED"}[self.reproduced]
        stat = f"{self.statistic} = {self.estimate.text()}" if self.estimate is not None else self.statistic
        return f"({self.code}) {self.claim} [{self.dataset}]: {verdict}; {stat}; {self.details}"


# ------------------------------------------------------------------------------------------------ per-item data


def load_run_items(spec: MetricSpec, eval_dir: Path, run: str, source_run: str, dataset: str,
                   epochs: Sequence[int]) -> RunItems | None:  # fmt: skip
    """The run's items of `spec` at `epochs`; None when a file is missing or the files do not line up."""
    values, target = [], None
    for epoch in epochs:
        path = items_path(eval_dir, spec.benchmark, dataset, source_run, epoch)
        if not path.is_file():
            return None
        items = load_items(path)
        rows = [k for k, (m, v) in enumerate(zip(items.metrics, items.variants))
                if m == spec.metric and (spec.variant is None or v == spec.variant)]  # fmt: skip
        if not rows:
            return None
        if spec.variant is None:  # noise: sigma rows, clean (sigma=0) first
            rows.sort(key=lambda k: float(items.variants[k].split("=")[1]))
        block = items.values[rows].double()
        if spec.reduce == "spearman":
            block = block * items.orientation
            target = items.target.double()
        values.append(block)
    if len({tuple(v.shape) for v in values}) != 1:
        return None
    return RunItems(run, list(epochs), torch.stack(values), target)


def trajectories(spec: MetricSpec, values: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """(..., E, K, n) items (and (..., n) target) -> (..., E) metric values."""
    from fastclip.ops import spearman

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if spec.reduce in ("mean", "one_minus_mean"):
            mean = values[..., 0, :].nanmean(dim=-1)
            return 1 - mean if spec.reduce == "one_minus_mean" else mean
        if spec.reduce in ("relative_drop", "negative_relative_drop"):
            accuracy = values.nanmean(dim=-1)  # (..., E, K)
            clean = accuracy[..., :1]
            drop = ((clean - accuracy[..., 1:]) / clean).mean(dim=-1)
            return -drop if spec.reduce == "negative_relative_drop" else drop
        if spec.reduce == "spearman":
            return spearman(values[..., 0, :], target.unsqueeze(-2).expand(values[..., 0, :].shape))
    raise ValueError(f"unknown reduction {spec.reduce!r}")


# ------------------------------------------------------------------------------------------------ the bootstrap


class GroupBootstrap:
    """Hierarchical resamples of a group of R runs: runs with replacement, then each drawn run's items.

    The run draws are shared by every metric (so a correlation between two metrics pairs the same runs); item draws
    are per metric and per run slot (counter-based: fastclip.ops.bootstrap.resample_indices, seeded by `seed`).
    """

    def __init__(self, runs: int, *, resamples: int, seed: int):
        from fastclip.ops.bootstrap import resample_indices

        self.runs, self.resamples, self.seed = runs, resamples, seed
        self.run_draws = resample_indices(seed, 0, resamples, runs)  # (B, R)

    def item_draws(self, slot: int, stream: int, first: int, count: int, n: int) -> torch.Tensor:
        from fastclip.ops.bootstrap import resample_indices

        return resample_indices(self.seed + 7919 * (1 + slot) + 104729 * stream, first, count, n)

    def trajectories(self, spec: MetricSpec, group: list[RunItems], stream: int) -> torch.Tensor:
        """(B, R, E) resampled trajectories of the group."""
        values = torch.stack([run.values for run in group])  # (R, E, K, n)
        targets = torch.stack([run.target for run in group]) if group[0].target is not None else None
        n = values.shape[-1]
        out = torch.empty(self.resamples, self.runs, values.shape[1], dtype=torch.float64)
        for first in range(0, self.resamples, RESAMPLE_CHUNK):
            count = min(RESAMPLE_CHUNK, self.resamples - first)
            for slot in range(self.runs):
                drawn_runs = self.run_draws[first : first + count, slot]  # (b,)
                items = self.item_draws(slot, stream, first, count, n)  # (b, n)
                picked = values[drawn_runs]  # (b, E, K, n)
                picked = picked.gather(-1, items[:, None, None, :].expand_as(picked))
                target = None
                if targets is not None:
                    target = targets[drawn_runs].gather(-1, items)  # (b, n)
                out[first : first + count, slot] = trajectories(spec, picked, target)
        return out


def percentile_interval(samples: torch.Tensor) -> tuple[float, float]:
    finite = samples[torch.isfinite(samples)]
    if finite.numel() < 0.9 * samples.numel() or finite.numel() == 0:  # mostly undefined: no interval
        return math.nan, math.nan
    low, high = torch.quantile(finite, torch.tensor([0.025, 0.975], dtype=finite.dtype)).tolist()
    return low, high


def _estimate(point: torch.Tensor, samples: torch.Tensor) -> Estimate:
    return Estimate(float(point), *percentile_interval(samples))


# --------------------------------------------------------------------------------------------- group statistics


def last_minus_first(traj: torch.Tensor) -> torch.Tensor:
    """(..., R, E) -> (...): mean over runs of the last epoch's value minus the first's."""
    return (traj[..., -1] - traj[..., 0]).mean(dim=-1)


def rho_with_epoch(traj: torch.Tensor, epochs: Sequence[int]) -> torch.Tensor:
    """(..., R, E) -> (...): mean over runs of Spearman's rho between the metric and the epoch."""
    from fastclip.ops import spearman

    if traj.shape[-1] < 3:
        return torch.full(traj.shape[:-2], math.nan, dtype=torch.float64)
    x = torch.tensor(epochs, dtype=torch.float64).expand(traj.shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return spearman(x, traj).nanmean(dim=-1)


def peak_minus_last(traj: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., R, E) -> ((...) mean over runs of value at the group-mean peak minus the last value, (...) peak index)."""
    peak = traj.mean(dim=-2).nan_to_num(-math.inf).argmax(dim=-1)  # (...)
    at_peak = traj.gather(-1, peak[..., None, None].expand(*traj.shape[:-1], 1))[..., 0]
    return (at_peak - traj[..., -1]).mean(dim=-1), peak


def cross_rho(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(..., R, E) twice -> (...): mean over runs of Spearman's rho between the two trajectories across epochs."""
    from fastclip.ops import spearman

    if a.shape[-1] < 3:
        return torch.full(a.shape[:-2], math.nan, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return spearman(a, b).nanmean(dim=-1)


# ----------------------------------------------------------------------------------------------------- findings


@dataclass
class RunSource:
    """Where one run's results live: its eval folder, its name there, and its rows."""

    run: str
    source_run: str
    eval_dir: Path
    rows: list[dict]


def datasets_of(sources: list[RunSource], benchmark: str) -> list[str]:
    """Datasets of `benchmark` evaluated for every run of the group, in name order."""
    sets = [{row["dataset"] for row in s.rows if row["benchmark"] == benchmark} for s in sources]
    return sorted(set.intersection(*sets)) if sets else []


def common_epochs(sources: list[RunSource], benchmark: str, dataset: str) -> list[int]:
    sets = [{row["epoch"] for row in s.rows if (row["benchmark"], row["dataset"]) == (benchmark, dataset)}
            for s in sources]  # fmt: skip
    return sorted(set.intersection(*sets)) if sets else []


def group_items(spec: MetricSpec, sources: list[RunSource], dataset: str, epochs: list[int]) -> list[RunItems] | None:
    group = [load_run_items(spec, s.eval_dir, s.run, s.source_run, dataset, epochs) for s in sources]
    if any(g is None for g in group) or len({tuple(g.values.shape) for g in group}) != 1:
        return None
    return group


def _sample_text(group: list[RunItems], epochs: list[int]) -> str:
    return f"{len(group)} run(s), epochs {epochs[0]}-{epochs[-1]}, {group[0].values.shape[-1]} items"


def _not_tested(code: str, claim: str, dataset: str, why: str) -> Finding:
    return Finding(code, claim, dataset, None, why, None, "")


def trend_finding(code: str, claim: str, spec: MetricSpec, sign: int, sources: list[RunSource], dataset: str,
                  boot: GroupBootstrap, stream: int) -> Finding:  # fmt: skip
    """(a), (b), (c): the paired difference last - first has the paper's sign and its interval excludes 0."""
    epochs = common_epochs(sources, spec.benchmark, dataset)
    if len(epochs) < 2:
        return _not_tested(code, claim, dataset, f"needs >= 2 common epochs, got {len(epochs)}")
    group = group_items(spec, sources, dataset, epochs)
    if group is None:
        return _not_tested(code, claim, dataset, "per-item files missing or not aligned across runs")
    point = torch.stack([trajectories(spec, g.values, g.target) for g in group])  # (R, E)
    samples = boot.trajectories(spec, group, stream)
    difference = _estimate(last_minus_first(point), last_minus_first(samples))
    rho = _estimate(rho_with_epoch(point, epochs), rho_with_epoch(samples, epochs))
    per_run = point[:, -1] - point[:, 0]
    moving = int(((per_run * sign) > 0).sum())
    reproduced = difference.excludes_zero() and difference.value * sign > 0
    first, last = point[:, 0].mean().item(), point[:, -1].mean().item()
    details = (f"{spec.label} {first:.3f} -> {last:.3f} (mean of runs); {moving}/{len(group)} runs move that way; "
               f"Spearman rho vs epoch = {rho.text(2)}; {_sample_text(group, epochs)}")  # fmt: skip
    return Finding(code, claim, dataset, reproduced, "last - first", difference, details)


def peak_finding(sources: list[RunSource], dataset: str, boot: GroupBootstrap, stream: int) -> Finding:
    """(d): low-level alignment peaks before the last epoch and declines from there (interval of peak - last > 0)."""
    claim, spec = "low-level (IQA) alignment peaks early and declines", LOW_LEVEL
    epochs = common_epochs(sources, spec.benchmark, dataset)
    if len(epochs) < 3:
        return _not_tested("d", claim, dataset, f"needs >= 3 common epochs, got {len(epochs)}")
    group = group_items(spec, sources, dataset, epochs)
    if group is None:
        return _not_tested("d", claim, dataset, "per-item files missing or not aligned across runs")
    point = torch.stack([trajectories(spec, g.values, g.target) for g in group])
    samples = boot.trajectories(spec, group, stream)
    drop_point, peak_point = peak_minus_last(point)
    drop_samples, peak_samples = peak_minus_last(samples)
    decline = _estimate(drop_point, drop_samples)
    peak_epoch = epochs[int(peak_point)]
    early = peak_epoch <= epochs[(len(epochs) - 1) // 2]
    rho = _estimate(rho_with_epoch(point, epochs), rho_with_epoch(samples, epochs))
    share_before_last = float((peak_samples < len(epochs) - 1).double().mean())
    reproduced = peak_epoch < epochs[-1] and decline.excludes_zero() and decline.value > 0
    trajectory = ", ".join(f"{v:.3f}" for v in point.mean(dim=0).tolist())
    details = (f"mean trajectory {trajectory}; peak at epoch {peak_epoch} ({'early' if early else 'not early'}: "
               f"first half of the epochs), before the last epoch in {share_before_last:.0%} of resamples; Spearman "
               f"rho vs epoch = {rho.text(2)}; {_sample_text(group, epochs)}")  # fmt: skip
    return Finding("d", claim, dataset, reproduced, "peak - last", decline, details)


def correlation_finding(claim: str, a: MetricSpec, a_dataset: str, b: MetricSpec, b_dataset: str, sign: int,
                        sources: list[RunSource], boot: GroupBootstrap, streams: tuple[int, int]) -> Finding:  # fmt: skip
    """(e): Spearman's rho across epochs between two metrics has the paper's sign and its interval excludes 0."""
    dataset = f"{a_dataset} x {b_dataset}"
    epochs = sorted(set(common_epochs(sources, a.benchmark, a_dataset)) & set(common_epochs(sources, b.benchmark, b_dataset)))
    if len(epochs) < 3:
        return _not_tested("e", claim, dataset, f"needs >= 3 common epochs, got {len(epochs)}")
    group_a, group_b = group_items(a, sources, a_dataset, epochs), group_items(b, sources, b_dataset, epochs)
    if group_a is None or group_b is None:
        return _not_tested("e", claim, dataset, "per-item files missing or not aligned across runs")
    point_a = torch.stack([trajectories(a, g.values, g.target) for g in group_a])
    point_b = torch.stack([trajectories(b, g.values, g.target) for g in group_b])
    rho = _estimate(cross_rho(point_a, point_b),
                    cross_rho(boot.trajectories(a, group_a, streams[0]), boot.trajectories(b, group_b, streams[1])))
    reproduced = rho.excludes_zero() and rho.value * sign > 0
    expected = "positive" if sign > 0 else "negative"
    details = f"the paper's sign: {expected}; {len(group_a)} run(s), epochs {epochs[0]}-{epochs[-1]}"
    return Finding("e", claim, dataset, reproduced, "mean Spearman rho across epochs", rho, details)


def run_sources(loaded: list[tuple[Path, list[dict]]]) -> list[RunSource]:
    """One RunSource per run of fastclip.eval.report.load_inputs' (eval folder, rows) pairs, in name order."""
    sources = []
    for folder, rows in loaded:
        by_run: dict[str, list[dict]] = {}
        for row in rows:
            by_run.setdefault(row["run"], []).append(row)
        for run, members in by_run.items():
            sources.append(RunSource(run, members[0].get("source_run", run), folder, members))
    return sorted(sources, key=lambda s: s.run)


def evaluate_findings(sources: list[RunSource], *, resamples: int, seed: int) -> list[Finding]:
    """Every finding (a)-(e) for the group of runs `sources`, one per dataset (pair) that all runs were evaluated on."""
    if not sources:
        return []
    boot = GroupBootstrap(len(sources), resamples=resamples, seed=seed)
    streams: dict[tuple[str, str], int] = {}

    def stream(spec: MetricSpec, dataset: str) -> int:  # one item-draw stream per (benchmark, dataset)
        return streams.setdefault((spec.benchmark, dataset), len(streams))

    findings: list[Finding] = []
    plans: list[tuple[str, str, MetricSpec, int]] = [
        ("a", "texture bias falls over training", TEXTURE_BIAS, -1),
        ("b", "the relative accuracy drop under noise falls", ACCURACY_DROP, -1),
        ("c", "zero-shot accuracy rises", ZERO_SHOT, +1),
    ]
    for code, claim, spec, sign in plans:
        datasets = datasets_of(sources, spec.benchmark)
        if not datasets:
            findings.append(_not_tested(code, claim, "-", f"no {spec.benchmark} results in every run"))
        for dataset in datasets:
            findings.append(trend_finding(code, claim, spec, sign, sources, dataset, boot, stream(spec, dataset)))
    iqa_sets = datasets_of(sources, "iqa")
    if not iqa_sets:
        findings.append(_not_tested("d", "low-level (IQA) alignment peaks early and declines", "-", "no iqa results"))
    for dataset in iqa_sets:
        findings.append(peak_finding(sources, dataset, boot, stream(LOW_LEVEL, dataset)))
    pairs: list[tuple[str, MetricSpec, MetricSpec, int]] = [
        ("shape bias and noise robustness correlate across epochs", SHAPE_BIAS, ROBUSTNESS, +1),
        ("shape bias and low-level alignment anti-correlate across epochs", SHAPE_BIAS, LOW_LEVEL, -1),
    ]
    for claim, a, b, sign in pairs:
        combos = [(x, y) for x in datasets_of(sources, a.benchmark) for y in datasets_of(sources, b.benchmark)]
        if not combos:
            findings.append(_not_tested("e", claim, "-", f"needs {a.benchmark} and {b.benchmark} results"))
        for a_dataset, b_dataset in combos:
            findings.append(correlation_finding(claim, a, a_dataset, b, b_dataset, sign, sources, boot,
                                                (stream(a, a_dataset), stream(b, b_dataset))))  # fmt: skip
    return findings


def findings_section(findings: list[Finding], *, resamples: int, seed: int, runs: list[str]) -> list[str]:
    lines = [
        "## 4. The paper's findings", "",
        f"Runs pooled as one group (e.g. seeds): {', '.join(runs)}. Hierarchical percentile bootstrap over runs and "
        f"items ({resamples} resamples, seed {seed}); a finding reproduces when its statistic has the paper's sign and "
        "its 95% interval excludes 0 (fastclip/eval/findings.py).", "",
    ]  # fmt: skip
    lines += [f"- {finding.line()}" for finding in findings]
    return lines + [""]

