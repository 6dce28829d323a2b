"""`fastclip-eval report RUN_OR_EVAL_DIR... [--out DIR]`: how the metrics of one or several runs move over training.

Reads the results (and per-item files) that fastclip-eval wrote for each input (a run folder with eval/, or an
output folder with results.jsonl) and writes to --out (default: the one input's eval folder):
  figure.png  the paper's panels with every run overlaid (one colour per run);
  report.md   1. the peak epoch of every headline metric per run (the maximum; the minimum for the accuracy drop),
                 with its value and the last epoch's, 95% CIs as measured;
              2. the Spearman correlation between metric trajectories across epochs (e.g. shape bias vs TID2013
                 alignment, accuracy drop vs TID2013 alignment), with a percentile-bootstrap 95% CI over epochs
                 (fastclip.ops.bootstrap_ci); n/a below 3 common epochs;
              3. for every alignment metric with per-item values (iqa, two_afc, saliency, shape_bias), the paired
                 test between its peak epoch and the last epoch over the same items: for a correlation,
                 fastclip.ops.paired_difference_test (both Spearmans recomputed on the same resamples of the
                 pairs); for a mean (2AFC score, saliency metric, shape decisions), the paired bootstrap of the
                 difference of means (fastclip.eval.stats.paired_mean_difference). p is two-sided;
              4. the paper's findings (a)-(e), all inputs' runs pooled as one group (e.g. seeds), each with its
                 statistic, a hierarchical bootstrap 95% CI over runs and items, and whether it reproduces
                 (fastclip.eval.findings); these lines are printed too.
Runs with one name in two inputs are told apart by the input folder's name.
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from fastclip.eval.context import DEFAULT_RESAMPLES
from fastclip.eval.errors import InputError
from fastclip.eval.figure import write_figure
from fastclip.eval.findings import Finding, evaluate_findings, findings_section, run_sources
from fastclip.eval.items import items_path, load_items
from fastclip.eval.registry import get_benchmark_class, registered_names
from fastclip.eval.results import RESULTS_JSONL, read_results_jsonl
from fastclip.io import atomic_write_text

LOWER_IS_BETTER = {("noise_robustness", "relative_drop")}
ALIGNMENT_BENCHMARKS = ("iqa", "two_afc", "saliency", "shape_bias")
PAPER_PAIRS = (("shape_bias", "iqa"), ("noise_robustness", "iqa"), ("shape_bias", "noise_robustness"))


@dataclass(frozen=True)
class Series:
    """One headline metric of one run over epochs."""

    run: str
    benchmark: str
    dataset: str
    metric: str
    variant: str
    rows: tuple[dict, ...]  # sorted by epoch
    eval_dir: Path
    source_run: str  # the run's name inside its eval folder (file names use it)

    @property
    def label(self) -> str:
        variant = f" [{self.variant}]" if self.variant not in ("", "pooled", "mean") else ""
        name = self.metric if self.metric.startswith(self.benchmark) else f"{self.benchmark} {self.metric}"
        return f"{name}{variant} ({self.dataset})"

    @property
    def lower_is_better(self) -> bool:
        return (self.benchmark, self.metric) in LOWER_IS_BETTER

    def values(self) -> dict[int, float]:
        return {row["epoch"]: row["value"] for row in self.rows}

    def peak(self) -> dict | None:
        finite = [row for row in self.rows if math.isfinite(row["value"])]
        if not finite:
            return None
        choose = min if self.lower_is_better else max
        best = choose(row["value"] for row in finite)
        return next(row for row in finite if row["value"] == best)  # the earliest epoch reaching it


def eval_dir_of(item: str | Path) -> Path:
    item = Path(item)
    for folder in (item, item / "eval"):
        if (folder / RESULTS_JSONL).is_file():
            return folder
    raise InputError(f"{item}: no {RESULTS_JSONL} here or in {item / 'eval'}; run fastclip-eval on it first")


def load_inputs(inputs: Sequence[str | Path]) -> list[tuple[Path, list[dict]]]:
    """(eval folder, rows) per input; a run name found in two inputs is prefixed with the input's folder name."""
    loaded = [(folder, read_results_jsonl(folder / RESULTS_JSONL)) for folder in map(eval_dir_of, inputs)]
    seen: dict[str, int] = {}
    for _, rows in loaded:
        for run in {row["run"] for row in rows}:
            seen[run] = seen.get(run, 0) + 1
    out = []
    for folder, rows in loaded:
        prefix = (folder.parent.name if folder.name == "eval" else folder.name) + "/"
        out.append((folder, [dict(row, source_run=row["run"], run=(prefix + row["run"]) if seen[row["run"]] > 1 else row["run"]) for row in rows]))
    return out


def headline_series(loaded: list[tuple[Path, list[dict]]]) -> list[Series]:
    known = set(registered_names())
    series = []
    for folder, rows in loaded:
        groups: dict[tuple, list[dict]] = {}
        for row in rows:
            if row["benchmark"] not in known:
                continue
            if (row["metric"], row["variant"]) in get_benchmark_class(row["benchmark"]).headline:
                key = (row["run"], row["benchmark"], row["dataset"], row["metric"], row["variant"], row["source_run"])
                groups.setdefault(key, []).append(row)
        for (run, benchmark, dataset, metric, variant, source_run), members in groups.items():
            members = tuple(sorted(members, key=lambda row: row["epoch"]))
            series.append(Series(run, benchmark, dataset, metric, variant, members, folder, source_run))
    return sorted(series, key=lambda s: (s.run, s.benchmark, s.dataset, s.metric, s.variant))


def _number(value: float, digits: int = 3) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _interval(low: float, high: float) -> str:
    return "" if not (math.isfinite(low) and math.isfinite(high)) else f" [{low:.3f}, {high:.3f}]"


def peak_section(series: list[Series]) -> list[str]:
    lines = [
        "## 1. Peak epoch of each metric", "",
        "The maximum over epochs (the minimum for the accuracy drop); ties go to the earliest epoch. 95% CIs as "
        "measured.", "",
        "| run | metric | peak epoch | value at peak | last epoch | value at last |", "|---|---|---|---|---|---|",
    ]  # fmt: skip
    for s in series:
        peak, last = s.peak(), s.rows[-1]
        if peak is None:
            lines.append(f"| {s.run} | {s.label} | – | – | {last['epoch']} | – |")
            continue
        lines.append(
            f"| {s.run} | {s.label} | {peak['epoch']} | {_number(peak['value'])}{_interval(peak['ci_low'], peak['ci_high'])} "
            f"| {last['epoch']} | {_number(last['value'])}{_interval(last['ci_low'], last['ci_high'])} |"
        )
    return lines + [""]


def trajectory_correlation(a: Series, b: Series, *, resamples: int, seed: int) -> tuple[float, float, float, int]:
    """(Spearman, CI low, CI high, n epochs) of two series over their common epochs with finite values."""
    from fastclip.ops import bootstrap_ci, spearman

    va, vb = a.values(), b.values()
    epochs = sorted(e for e in set(va) & set(vb) if math.isfinite(va[e]) and math.isfinite(vb[e]))
    if len(epochs) < 3:
        return math.nan, math.nan, math.nan, len(epochs)
    x = torch.tensor([va[e] for e in epochs], dtype=torch.float64)
    y = torch.tensor([vb[e] for e in epochs], dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # constant trajectories and resamples give NaN
        rho = float(spearman(x, y))
        result = bootstrap_ci(x, y, method="spearman", resamples=resamples, seed=seed, interval="percentile")
    return rho, float(result.low), float(result.high), len(epochs)


def trajectory_section(series: list[Series], *, resamples: int, seed: int) -> list[str]:
    lines = [
        "## 2. How the metrics move together", "",
        "Spearman correlation between two metrics' trajectories across the epochs of a run, with a percentile "
        "bootstrap 95% CI over epochs (n/a below 3 epochs). The paper's pairs (shape bias, accuracy drop and "
        "low-level alignment) come first.", "",
        "| run | metric A | metric B | Spearman | 95% CI | epochs |", "|---|---|---|---|---|---|",
    ]  # fmt: skip
    by_run: dict[str, list[Series]] = {}
    for s in series:
        by_run.setdefault(s.run, []).append(s)
    for run, members in by_run.items():
        pairs = list(itertools.combinations(members, 2))
        rank = {pair: index for index, pair in enumerate(PAPER_PAIRS)}
        pairs.sort(key=lambda p: rank.get((p[0].benchmark, p[1].benchmark), rank.get((p[1].benchmark, p[0].benchmark), len(rank))))
        for a, b in pairs:
            rho, low, high, n = trajectory_correlation(a, b, resamples=resamples, seed=seed)
            ci = "" if not math.isfinite(low) else f"[{low:.3f}, {high:.3f}]"
            value = _number(rho) if n >= 3 else "n/a"
            lines.append(f"| {run} | {a.label} | {b.label} | {value} | {ci} | {n} |")
    return lines + [""]


def paired_test(s: Series, *, resamples: int, seed: int) -> str:
    """The table cells of the peak-vs-last test of one series."""
    from fastclip.ops import paired_difference_test

    peak, last = s.peak(), s.rows[-1]
    if peak is None:
        return "– | – | – | no finite value"
    if peak["epoch"] == last["epoch"]:
        return "– | – | – | the peak is the last epoch"
    paths = [items_path(s.eval_dir, s.benchmark, s.dataset, s.source_run, row["epoch"]) for row in (peak, last)]
    if not all(path.is_file() for path in paths):
        return "– | – | – | per-item files missing (evaluated before they were kept?)"
    at_peak, at_last = (load_items(path) for path in paths)
    row = at_peak.row(s.metric, s.variant)
    if row is None or at_last.row(s.metric, s.variant) != row or at_peak.values.shape != at_last.values.shape:
        return "– | – | – | the per-item files of the two epochs do not match"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if at_peak.kind == "correlation":
            result = paired_difference_test(
                at_peak.orientation * at_peak.values[row], at_last.orientation * at_last.values[row], at_peak.target,
                method="spearman", resamples=resamples, seed=seed, interval="percentile",
            )  # fmt: skip
            difference, low, high, p = (float(t) for t in (result.difference, result.low, result.high, result.pvalue))
        else:
            from fastclip.eval.stats import paired_mean_difference

            result = paired_mean_difference(at_peak.values[row], at_last.values[row], resamples=resamples, seed=seed)
            difference, low, high, p = (float(result[k][0]) for k in ("difference", "low", "high", "pvalue"))
    return f"{_number(difference)} | [{_number(low)}, {_number(high)}] | {_number(p, 4)} | {at_peak.values.shape[1]} items"


def paired_section(series: list[Series], *, resamples: int, seed: int) -> list[str]:
    lines = [
        "## 3. Peak epoch vs last epoch (alignment metrics)", "",
        "Paired over the same items (pairs, triplets, images, trials): the difference peak - last, its percentile "
        "bootstrap 95% CI and the two-sided bootstrap p-value.", "",
        "| run | metric | peak epoch | last epoch | difference | 95% CI | p | items |", "|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for s in series:
        if s.benchmark not in ALIGNMENT_BENCHMARKS:
            continue
        peak = s.peak()
        lines.append(
            f"| {s.run} | {s.label} | {peak['epoch'] if peak else '–'} | {s.rows[-1]['epoch']} | "
            f"{paired_test(s, resamples=resamples, seed=seed)} |"
        )
    return lines + [""]


def write_report(inputs: Sequence[str | Path], out_dir: Path, *, resamples: int, seed: int) -> tuple[Path, list[Finding]]:
    loaded = load_inputs(inputs)
    rows = [row for _, folder_rows in loaded for row in folder_rows]
    if not rows:
        raise InputError(f"no results in {', '.join(map(str, inputs))}")
    series = headline_series(loaded)
    runs = sorted({row["run"] for row in rows})
    lines = [
        f"# fastclip-eval report: {', '.join(runs)}", "",
        "Inputs: " + ", ".join(f"`{folder}`" for folder, _ in loaded) + f". Figure: `figure.png`. "
        f"Bootstrap: {resamples} resamples, seed {seed}.", "",
    ]  # fmt: skip
    lines += peak_section(series)
    lines += trajectory_section(series, resamples=resamples, seed=seed)
    lines += paired_section(series, resamples=resamples, seed=seed)
    findings = evaluate_findings(run_sources(loaded), resamples=resamples, seed=seed)
    lines += findings_section(findings, resamples=resamples, seed=seed, runs=runs)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_figure(rows, out_dir / "figure.png")
    path = out_dir / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path, findings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fastclip-eval report",
        description="Overlay the evaluations of one or several runs: figure.png and report.md (peak epochs, "
        "correlations between metric trajectories, peak-vs-last paired tests, and whether the runs, pooled as one "
        "group of seeds, reproduce the paper's findings (a)-(e), printed too).",
    )
    parser.add_argument("inputs", nargs="+", metavar="RUN_OR_EVAL_DIR", help="run folders (with eval/) or eval outputs")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: the one input's eval folder)")
    parser.add_argument("--resamples", type=int, default=DEFAULT_RESAMPLES, help="bootstrap resamples (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap draws (default %(default)s)")
    args = parser.parse_args(argv)
    if args.resamples < 1 or args.seed < 0:
        parser.error("--resamples must be >= 1 and --seed >= 0")
    try:
        if args.out is None and len(args.inputs) > 1:
            raise InputError("several inputs: pass --out FOLDER for the report")
        out_dir = args.out if args.out is not None else eval_dir_of(args.inputs[0])
        path, findings = write_report(args.inputs, out_dir, resamples=args.resamples, seed=args.seed)
    except InputError as exc:
        print(f"fastclip-eval report: error: {exc}", file=sys.stderr)
        return 2
    for finding in findings:
        print(finding.line())
    print(f"wrote {path} and {path.parent / 'figure.png'}")
    return 0
