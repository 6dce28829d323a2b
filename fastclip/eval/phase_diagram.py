"""`python -m fastclip.eval.phase_diagram SWEEP_DIR --out FIGURE.png`: the toy world's phase diagram.

SWEEP_DIR holds one fastclip-train run per (world, seed), each evaluated with fastclip-eval (RUN/eval). The world
of a run is read from its params.json (the knobs fastclip-train recorded); runs are grouped by texture
predictivity. The figure has three panels:
  1. texture bias (1 - shape bias on the toy world's cue-conflict set) against the epoch: one thin line per run,
     the mean of the setting's seeds thick, one colour per predictivity;
  2. low-level (IQA) alignment (Spearman, headline layer and distance) against the epoch, likewise;
  3. the epoch of peak low-level alignment per run (dots) and per setting's mean trajectory (cross).
Beside the figure, FIGURE.md tables the numbers: per run, texture bias at the first and last epoch, and the peak
epoch of IQA alignment; per setting, the mean change of texture bias.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from fastclip.eval.errors import InputError
from fastclip.eval.results import RESULTS_JSONL, read_results_jsonl
from fastclip.io import atomic_path, atomic_write_text

CUE_CONFLICT = ("shape_bias", "toyworld_cue_conflict", "shape_bias", "pooled")
LOW_LEVEL = ("iqa", "toyworld_iqa", "spearman", "layer=embedding,distance=normalized_euclidean")
KNOB = "texture_predictivity"


@dataclass
class SweepRun:
    name: str
    predictivity: float
    texture_bias: dict[int, float]  # epoch -> value
    low_level: dict[int, float]

    def peak_epoch(self) -> int | None:
        finite = {e: v for e, v in self.low_level.items() if math.isfinite(v)}
        return min(finite, key=lambda e: (-finite[e], e)) if finite else None


def _series(rows: list[dict], key: tuple[str, str, str, str], flip: bool) -> dict[int, float]:
    benchmark, dataset, metric, variant = key
    return {
        row["epoch"]: (1 - row["value"]) if flip else row["value"]
        for row in rows
        if (row["benchmark"], row["dataset"], row["metric"], row["variant"]) == key
    }


def load_sweep(folder: Path) -> list[SweepRun]:
    """Every run folder under `folder` with params.json and eval/results.jsonl, sorted by (predictivity, name)."""
    if not folder.is_dir():
        raise InputError(f"{folder}: no such sweep folder")
    runs = []
    for run_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        params_path, results_path = run_dir / "params.json", run_dir / "eval" / RESULTS_JSONL
        if not (params_path.is_file() and results_path.is_file()):
            continue
        params = json.loads(params_path.read_text())
        if params.get(KNOB) is None:
            raise InputError(f"{params_path}: no {KNOB} (not a toy-world run of this fastclip?)")
        rows = read_results_jsonl(results_path)
        runs.append(SweepRun(run_dir.name, float(params[KNOB]), _series(rows, CUE_CONFLICT, True),
                             _series(rows, LOW_LEVEL, False)))  # fmt: skip
    if not runs:
        raise InputError(f"{folder}: no evaluated runs (RUN/params.json and RUN/eval/{RESULTS_JSONL})")
    return sorted(runs, key=lambda r: (-r.predictivity, r.name))


def mean_trajectory(runs: list[SweepRun], attribute: str) -> dict[int, float]:
    """The mean over runs at every epoch all of them have."""
    series = [getattr(run, attribute) for run in runs]
    epochs = sorted(set.intersection(*(set(s) for s in series)))
    return {e: sum(s[e] for s in series) / len(series) for e in epochs}


def by_setting(runs: list[SweepRun]) -> dict[float, list[SweepRun]]:
    settings: dict[float, list[SweepRun]] = {}
    for run in runs:
        settings.setdefault(run.predictivity, []).append(run)
    return settings


def _peak(trajectory: dict[int, float]) -> int | None:
    return min(trajectory, key=lambda e: (-trajectory[e], e)) if trajectory else None


def write_phase_diagram(runs: list[SweepRun], path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    settings = by_setting(runs)
    figure = Figure(figsize=(14, 4.2), layout="constrained")
    FigureCanvasAgg(figure)
    bias_axes, iqa_axes, peak_axes = (figure.add_subplot(1, 3, k) for k in (1, 2, 3))
    colours = {p: f"C{index % 10}" for index, p in enumerate(settings)}
    for predictivity, members in settings.items():
        colour = colours[predictivity]
        for axes, attribute in ((bias_axes, "texture_bias"), (iqa_axes, "low_level")):
            for run in members:
                series = getattr(run, attribute)
                axes.plot(list(series), list(series.values()), color=colour, alpha=0.35, linewidth=1)
            mean = mean_trajectory(members, attribute)
            axes.plot(list(mean), list(mean.values()), color=colour, linewidth=2.5, marker="o", markersize=4,
                      label=f"texture predictivity {predictivity:g} ({len(members)} seeds)")  # fmt: skip
        peaks = [run.peak_epoch() for run in members]
        peak_axes.scatter([predictivity] * len(peaks), peaks, color=colour, alpha=0.6, s=30)
        mean_peak = _peak(mean_trajectory(members, "low_level"))
        if mean_peak is not None:
            peak_axes.scatter([predictivity], [mean_peak], color=colour, marker="x", s=90, linewidths=2.5)
    bias_axes.set_title("texture bias on cue-conflict images", fontsize="medium")
    bias_axes.set_ylabel("texture bias (1 - shape bias)")
    iqa_axes.set_title("low-level alignment (synthetic IQA)", fontsize="medium")
    iqa_axes.set_ylabel("Spearman with distortion level")
    peak_axes.set_title("epoch of peak low-level alignment", fontsize="medium")
    peak_axes.set_xlabel("texture predictivity in training (shape: 1.0)")
    peak_axes.set_ylabel("epoch (dots: runs; x: mean of seeds)")
    peak_axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    for axes in (bias_axes, iqa_axes):
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.legend(fontsize="x-small")
    for axes in (bias_axes, iqa_axes, peak_axes):
        axes.grid(alpha=0.3)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=90)
    return path


def _number(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.3f}"


def phase_table(runs: list[SweepRun]) -> str:
    lines = [
        "| texture predictivity | run | texture bias, first epoch | texture bias, last epoch | change | peak IQA epoch |",
        "|---|---|---|---|---|---|",
    ]
    for run in runs:
        epochs = sorted(run.texture_bias)
        first = run.texture_bias[epochs[0]] if epochs else None
        last = run.texture_bias[epochs[-1]] if epochs else None
        change = last - first if epochs else None
        lines.append(f"| {run.predictivity:g} | {run.name} | {_number(first)} | {_number(last)} | {_number(change)} "
                     f"| {run.peak_epoch() or '–'} |")  # fmt: skip
    lines += ["", "| texture predictivity | seeds | mean texture bias by epoch | mean change | peak epoch of mean IQA |",
              "|---|---|---|---|---|"]  # fmt: skip
    for predictivity, members in by_setting(runs).items():
        mean = mean_trajectory(members, "texture_bias")
        trajectory = ", ".join(f"{v:.3f}" for v in mean.values())
        change = list(mean.values())[-1] - list(mean.values())[0] if mean else None
        lines.append(f"| {predictivity:g} | {len(members)} | {trajectory} | {_number(change)} | "
                     f"{_peak(mean_trajectory(members, 'low_level')) or '–'} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fastclip.eval.phase_diagram",
        description="Draw the toy world's phase diagram (texture-bias trajectories and peak epoch of low-level "
        "alignment per texture predictivity) from a folder of evaluated runs, and table its numbers.",
    )
    parser.add_argument("sweep", type=Path, help="folder holding the sweep's run folders")
    parser.add_argument("--out", type=Path, default=None, help="figure path (default SWEEP/phase_diagram.png); "
                        "the table goes beside it with the suffix .md")  # fmt: skip
    args = parser.parse_args(argv)
    out = args.out if args.out is not None else args.sweep / "phase_diagram.png"
    try:
        runs = load_sweep(args.sweep)
    except InputError as exc:
        print(f"phase_diagram: error: {exc}", file=sys.stderr)
        return 2
    write_phase_diagram(runs, out)
    table = phase_table(runs)
    atomic_write_text(out.with_suffix(".md"), table)
    print(table, end="")
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
