"""Writes RESULTS.md's benchmark tables from the stored pytest-benchmark runs (benchmarks/results/*.json).

    python benchmarks/report.py [RUN.json ...] [--results benchmarks/RESULTS.md]

Without arguments every JSON under benchmarks/results/ is read and, for each benchmark, the newest stored record
counts. The tables replace what lies between `<!-- bench:begin -->` and `<!-- bench:end -->` in RESULTS.md (added
at the end when absent); everything outside the markers, other engineers' generated sections included, is left as
it is. Every ratio is computed here from the stored medians:
- pairs (benchmarks/conftest.py timed_pair): fastclip and its baseline interleaved in one test;
- groups (benchmarks/conftest.py timed): providers of one group in one run; the ratio is the best baseline's
  median over fastclip's, and a group whose providers were timed with different warm-up or rounds gets none.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"
RESULTS_MD = HERE / "RESULTS.md"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
FASTCLIP_PROVIDERS = ("fastclip", "extension")
NOT_BASELINES = ("reference", "batched")  # fastclip's own slower paths, shown but not the baseline to beat


class ReportError(Exception):
    pass


def load_runs(paths: list[Path]) -> dict[str, dict]:
    """The newest record of every benchmark (by fullname) across the runs, with its run's metadata attached."""
    newest: dict[str, dict] = {}
    for path in paths:
        try:
            run = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ReportError(f"{path}: not a pytest-benchmark JSON file ({exc})") from exc
        if "benchmarks" not in run:
            raise ReportError(f"{path}: no 'benchmarks' key: not a pytest-benchmark JSON file")
        for bench in run["benchmarks"]:
            record = dict(bench, run=dict(file=path.name, datetime=run.get("datetime", ""),
                                          commit=run.get("commit_info", {}).get("id", "")[:9],
                                          dirty=run.get("commit_info", {}).get("dirty", False),
                                          machine=run.get("machine_info", {})))  # fmt: skip
            if bench["fullname"] not in newest or record["run"]["datetime"] >= newest[bench["fullname"]]["run"]["datetime"]:
                newest[bench["fullname"]] = record
    return newest


def _seconds(value: float) -> str:
    if value >= 1:
        return f"{value:.2f} s"
    if value >= 1e-3:
        return f"{value * 1e3:.1f} ms"
    return f"{value * 1e6:.0f} us"


def _spread(stats: dict) -> str:
    return f"{_seconds(stats['median'])} ({_seconds(stats['min'])}-{_seconds(stats['max'])})"


def _load(record: dict) -> str:
    info = record.get("extra_info", {})
    before, after = info.get("load_average_before"), info.get("load_average_after")
    if not before:
        return "-"
    return f"{before[0]:.1f}" + (f" -> {after[0]:.1f}" if after else "")


def _timing(record: dict) -> str:
    timing = record.get("extra_info", {}).get("timing")
    return f"{timing['warmup']} + {timing['rounds']}" if timing else "?"


def _run_label(record: dict) -> str:
    run = record["run"]
    return f"{run['commit']}{'+' if run['dirty'] else ''}, {run['datetime'][:16].replace('T', ' ')}"


PROVIDER_PARAMS = ("provider", "backend")


def _provider(record: dict) -> str:
    params = record.get("params") or {}
    for key in PROVIDER_PARAMS:
        if key in params:
            return str(params[key])
    return str(record.get("extra_info", {}).get("provider", record["name"]))


def _group_of(record: dict) -> str:
    """The benchmark's group, else its test name with every parameter but the provider's."""
    if record.get("group"):
        return record["group"]
    params = {k: v for k, v in (record.get("params") or {}).items() if k not in PROVIDER_PARAMS}
    base = record["name"].split("[", 1)[0]
    return base + (f"[{', '.join(f'{k}={v}' for k, v in params.items())}]" if params else "")


def pair_table(records: dict[str, dict]) -> list[str]:
    rows = [r for r in records.values() if "baseline" in r.get("extra_info", {})]
    if not rows:
        return []
    lines = ["| benchmark | fastclip median (min-max) | baseline | baseline median (min-max) | ratio | warm-up + rounds "
             "| load 1-min | run |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for record in sorted(rows, key=lambda r: r["fullname"]):
        info = record["extra_info"]
        ratio = info["baseline"]["median"] / record["stats"]["median"]
        lines.append(
            f"| `{record['name']}` | {_spread(record['stats'])} | {info.get('provider', '')} | "
            f"{_spread(info['baseline'])} | **{ratio:.2f}x** | {_timing(record)} | {_load(record)} | {_run_label(record)} |"
        )
    return lines


def group_tables(records: dict[str, dict]) -> list[str]:
    groups: dict[str, list[dict]] = {}
    for record in records.values():
        info = record.get("extra_info", {})
        if "baseline" in info or "timing" not in info:  # pairs are above; untimed records (a goal test) have no median
            continue
        groups.setdefault(_group_of(record), []).append(record)
    lines = ["| group | provider | median (min-max) | vs fastclip | warm-up + rounds | load 1-min | run |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    summary = ["| group | fastclip | best baseline | ratio (baseline / fastclip median) |", "|---|---|---|---|"]
    for name in sorted(groups):
        members = sorted(groups[name], key=lambda r: r["stats"]["median"])
        timings = {_timing(r) for r in members}
        fast = next((r for r in members if _provider(r) in FASTCLIP_PROVIDERS), None)
        for record in members:
            provider = _provider(record)
            relative = "-"
            if fast is not None and len(timings) == 1:
                relative = f"{record['stats']['median'] / fast['stats']['median']:.2f}x"
            lines.append(f"| {name} | {provider} | {_spread(record['stats'])} | {relative} | {_timing(record)} | "
                         f"{_load(record)} | {_run_label(record)} |")  # fmt: skip
        baselines = [r for r in members if r is not fast and _provider(r) not in NOT_BASELINES]
        if fast is None or not baselines:
            continue
        if len(timings) > 1:
            summary.append(f"| {name} | - | - | none: providers timed differently ({', '.join(sorted(timings))}) |")
            continue
        best = baselines[0]
        ratio = best["stats"]["median"] / fast["stats"]["median"]
        summary.append(f"| {name} | {_seconds(fast['stats']['median'])} | {_provider(best)} "
                       f"{_seconds(best['stats']['median'])} | **{ratio:.2f}x** |")  # fmt: skip
    return summary + [""] + lines


def runs_table(records: dict[str, dict]) -> list[str]:
    runs = {}
    for record in records.values():
        runs.setdefault(record["run"]["file"], record["run"])
    lines = ["| stored run | date (UTC) | commit | machine | load at start | libraries |", "|---|---|---|---|---|---|"]
    for file in sorted(runs):
        run = runs[file]
        machine = run["machine"]
        fastclip = machine.get("fastclip", {})
        libraries = ", ".join(f"{k} {v}" for k, v in fastclip.get("libraries", {}).items())
        cpu = machine.get("cpu", {}).get("brand_raw", machine.get("processor", ""))
        where = f"{cpu}, {fastclip.get('cpu_count', '?')} CPUs, GPU {fastclip.get('gpu', '?')}"
        load = machine.get("load_average_at_start", "-")
        lines.append(f"| `results/{file}` | {run['datetime'][:19].replace('T', ' ')} | {run['commit']}"
                     f"{' (uncommitted changes)' if run['dirty'] else ''} | {where} | {load} | {libraries} |")  # fmt: skip
    return lines


def render(records: dict[str, dict]) -> str:
    stamp = datetime.now().strftime("%Y-%m-%d %H:%M")
    parts = [BEGIN, f"<!-- written by `python benchmarks/report.py` on {stamp} from benchmarks/results/*.json: "
             "edit the script, not this section -->", ""]  # fmt: skip
    pairs = pair_table(records)
    if pairs:
        parts += ["### Paired comparisons (both sides interleaved in one test)", ""] + pairs + [""]
    parts += ["### Provider groups (one run; medians)", ""] + group_tables(records) + [""]
    parts += ["### Stored runs", ""] + runs_table(records) + ["", END]
    return "\n".join(parts)


def write_section(markdown: Path, section: str) -> None:
    text = markdown.read_text() if markdown.exists() else "# Benchmark results\n"
    if BEGIN in text and END in text:
        before, rest = text.split(BEGIN, 1)
        after = rest.split(END, 1)[1]
        text = before + section + after
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    temporary = markdown.with_suffix(".md.tmp")
    temporary.write_text(text)
    temporary.replace(markdown)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", type=Path, help="pytest-benchmark JSON files (default: benchmarks/results/*.json)")
    parser.add_argument("--results", type=Path, default=RESULTS_MD, help="the markdown file to update")
    args = parser.parse_args(argv)
    paths = args.runs or sorted(RESULTS_DIR.glob("*.json"))
    try:
        if not paths:
            raise ReportError(f"no stored runs: {RESULTS_DIR} holds no .json (run `make bench` first)")
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise ReportError(f"no such file: {', '.join(missing)}")
        write_section(args.results, render(load_runs(paths)))
    except ReportError as exc:
        print(f"report.py: {exc}", file=sys.stderr)
        return 1
    print(f"report.py: wrote the tables of {args.results} from {len(paths)} stored run(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
