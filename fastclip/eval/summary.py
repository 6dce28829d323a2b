"""The short markdown summary fastclip-eval prints: one line per (run, epoch), one column per headline number
(each benchmark's `headline` (metric, variant) pairs, per dataset), then where the files are."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Mapping

from fastclip.eval.registry import get_benchmark, registered_names


def _headline_columns(rows: list[Mapping]) -> list[tuple[str, str, str, str]]:
    """(benchmark, dataset, metric, variant) columns, in order of first appearance in the rows."""
    known = set(registered_names())
    columns: dict[tuple[str, str, str, str], None] = {}
    for row in rows:
        if row["benchmark"] not in known:
            continue
        for metric, variant in get_benchmark(row["benchmark"]).headline:
            if (row["metric"], row["variant"]) == (metric, variant):
                columns[(row["benchmark"], row["dataset"], metric, variant)] = None
    return list(columns)


def _cell(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.3f}"


def markdown_summary(
    rows: Iterable[Mapping], out_dir: str | Path, *, evaluated: int = 0, skipped: int = 0
) -> str:
    rows = list(rows)
    out_dir = Path(out_dir)
    lines = [f"## fastclip-eval: {out_dir}", ""]
    if not rows:
        return "\n".join(lines + ["No results yet."])
    columns = _headline_columns(rows)
    values = {
        (row["run"], row["epoch"], row["benchmark"], row["dataset"], row["metric"], row["variant"]): row["value"]
        for row in rows
    }
    samples = {(row["run"], row["epoch"]): row["samples_seen"] for row in rows}
    header = ["run", "epoch", "samples seen"] + [
        " ".join(dict.fromkeys(part for part in (benchmark, metric, variant) if part)) + f" ({dataset})"
        for benchmark, dataset, metric, variant in columns
    ]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for run, epoch in sorted(samples):
        cells = [run, str(epoch), "" if samples[(run, epoch)] is None else str(samples[(run, epoch)])]
        cells += [_cell(values.get((run, epoch, *column))) for column in columns]
        lines.append("| " + " | ".join(cells) + " |")
    trials = f" Trials CSVs: {out_dir / 'trials'}." if (out_dir / "trials").is_dir() else ""
    lines += [
        "",
        f"Evaluated {evaluated} (epoch, benchmark, dataset) unit(s); skipped {skipped} already in the table "
        "(--force re-runs them).",
        f"Full table: {out_dir / 'results.csv'} ({len(rows)} rows; also results.jsonl).{trials} "
        f"Figure: {out_dir / 'figure.png'}.",
    ]
    return "\n".join(lines)
