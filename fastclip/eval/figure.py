"""figure.png: the paper's panels against the epoch, for whatever was evaluated.

Panels (each drawn only when its rows exist): zero-shot accuracy clean and under noise; IQA alignment (Spearman of
the headline layer and distance: TID2013, KADID-10k, ...); texture bias (1 - shape bias); normalised accuracy drop;
2AFC agreement; saliency CC; saliency NSS. One line per (run, dataset, variant); the 95% CI as a band where the
metric has one and the panel has few lines; human references as dashed horizontal lines: the observers of the
shape-bias raw data when given (else Geirhos et al.'s pooled 0.959 for real cue-conflict sets), and the agreement
expected between two observers for 2AFC. Several runs overlay (fastclip-eval report), one colour per run.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping

from fastclip.io import atomic_path

PANEL_COLUMNS = 4
MAX_BANDS = 3  # more overlapping CI bands in one panel hide the lines; the table keeps every CI
GEIRHOS_HUMAN_SHAPE_BIAS = 0.959  # pooled over the 10 observers of Geirhos et al. (reference/eval.md §1)
IQA_HEADLINE = "layer=embedding,distance=normalized_euclidean"
TWO_AFC_HEADLINE = "layer=embedding,distance=cosine"


@dataclass(frozen=True)
class Line:
    benchmark: str
    metric: str
    variant: Callable[[str], bool]
    flip: bool = False  # plot 1 - value (texture bias from shape bias)


@dataclass(frozen=True)
class Panel:
    title: str
    ylabel: str
    lines: tuple[Line, ...]
    human: tuple[Line, ...] = field(default=())


def _is(value: str) -> Callable[[str], bool]:
    return lambda variant: variant == value


def _noisy(variant: str) -> bool:
    return variant.startswith("sigma=") and variant != "sigma=0"


PANELS = (
    Panel("zero-shot accuracy: clean and noisy", "top-1 accuracy", (
        Line("zeroshot", "top1", _is("")), Line("noise_robustness", "accuracy", _noisy),
    )),  # fmt: skip
    Panel("low-level alignment (IQA)", "Spearman", (Line("iqa", "spearman", _is(IQA_HEADLINE)),)),
    Panel("texture bias", "texture / (shape + texture) decisions", (
        Line("shape_bias", "shape_bias", _is("pooled"), flip=True),
        Line("shape_bias", "shape_bias_in1k", _is("pooled"), flip=True),
    ), (Line("shape_bias", "shape_bias_human", _is("pooled"), flip=True),)),  # fmt: skip
    Panel("normalised accuracy drop", "(clean - noisy) / clean", (
        Line("noise_robustness", "relative_drop", _is("mean")),
    )),  # fmt: skip
    Panel("mid-level alignment (2AFC)", "2AFC score", (Line("two_afc", "2afc", _is(TWO_AFC_HEADLINE)),),
          (Line("two_afc", "2afc_human", _is("")),)),  # fmt: skip
    Panel("saliency: CC", "CC", (Line("saliency", "cc", lambda v: v.startswith("map=")),)),
    Panel("saliency: NSS", "NSS", (Line("saliency", "nss", lambda v: v.startswith("map=")),)),
)


def _matches(line: Line, row: Mapping) -> bool:
    return row["benchmark"] == line.benchmark and row["metric"] == line.metric and line.variant(str(row["variant"]))


def _value(row: Mapping, key: str, flip: bool) -> float:
    return 1.0 - row[key] if flip else row[key]


def panel_lines(panel: Panel, rows: list[Mapping]) -> dict[tuple[str, str, str, str], list[Mapping]]:
    """(run, dataset, metric, variant) -> rows sorted by epoch, for the panel's lines."""
    lines: dict = defaultdict(list)
    for line in panel.lines:
        for row in rows:
            if _matches(line, row):
                lines[(row["run"], row["dataset"], row["metric"], row["variant"], line.flip)].append(row)
    return {key: sorted(value, key=lambda row: row["epoch"]) for key, value in lines.items()}


def human_references(panel: Panel, rows: list[Mapping], lines) -> dict[str, float]:
    """label -> value of the panel's human reference lines."""
    references: dict[str, list[float]] = defaultdict(list)
    for line in panel.human:
        for row in rows:
            if _matches(line, row) and math.isfinite(row["value"]):
                references[f"humans ({row['dataset']})"].append(_value(row, "value", line.flip))
    out = {label: sum(values) / len(values) for label, values in references.items()}
    if panel.title == "texture bias":
        for run, dataset, *_ in lines:
            if not dataset.startswith("toyworld") and f"humans ({dataset})" not in out:
                out["humans (Geirhos et al. 2019)"] = 1.0 - GEIRHOS_HUMAN_SHAPE_BIAS
    return out


def write_figure(rows: Iterable[Mapping], path: str | Path) -> Path:
    """Draw the figure (matplotlib's Agg canvas, no display needed) and write it atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    rows = list(rows)
    runs = sorted({row["run"] for row in rows})
    several_runs = len(runs) > 1
    panels = [(panel, lines) for panel in PANELS if (lines := panel_lines(panel, rows))]
    columns = max(1, min(PANEL_COLUMNS, len(panels)))
    panel_rows = max(1, math.ceil(len(panels) / columns))
    figure = Figure(figsize=(4.6 * columns, 3.6 * panel_rows), layout="constrained")
    FigureCanvasAgg(figure)
    if not panels:
        figure.text(0.5, 0.5, "no results yet", ha="center", va="center")
    colours = {run: f"C{index % 10}" for index, run in enumerate(runs)}
    styles = ("-", "--", ":", "-.")
    for index, (panel, lines) in enumerate(panels, start=1):
        axes = figure.add_subplot(panel_rows, columns, index)
        series = defaultdict(int)
        for (run, dataset, metric, variant, flip), line in lines.items():
            epochs = [row["epoch"] for row in line]
            label = ", ".join(part for part in (run if several_runs else "", dataset, _short(metric, variant)) if part)
            style = {}
            if several_runs:
                style = {"color": colours[run], "linestyle": styles[series[run] % len(styles)]}
                series[run] += 1
            values = [_value(row, "value", flip) for row in line]
            (drawn,) = axes.plot(epochs, values, marker="o", markersize=3, label=label, **style)
            lows = [_value(row, "ci_high" if flip else "ci_low", flip) for row in line]
            highs = [_value(row, "ci_low" if flip else "ci_high", flip) for row in line]
            if len(lines) <= MAX_BANDS and all(math.isfinite(value) for value in lows + highs):
                axes.fill_between(epochs, lows, highs, color=drawn.get_color(), alpha=0.15, linewidth=0)
        for label, value in human_references(panel, rows, lines).items():
            axes.axhline(value, color="black", linestyle="--", linewidth=1, label=label)
        axes.set_title(panel.title, fontsize="medium")
        axes.set_xlabel("epoch")
        axes.set_ylabel(panel.ylabel, fontsize="small")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
        axes.legend(fontsize="x-small")
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=110)
    return Path(path)


def _short(metric: str, variant: str) -> str:
    """A line's label within its panel: the variant unless it is the panel's headline."""
    if metric == "top1":
        return "clean"
    if variant in ("", "pooled", "mean", IQA_HEADLINE, TWO_AFC_HEADLINE):
        return "" if metric != "shape_bias_in1k" else "ImageNet-1k mapping"
    if metric == "accuracy":
        return f"noisy {variant}"
    return variant
