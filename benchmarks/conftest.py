"""pytest-benchmark harness: one timing discipline for every benchmark, and what each run records.

Discipline (issue 13): both sides of a comparison get the same warm-up calls, the same number of timed rounds and
the same statistic (the median, with min and max kept), on the same inputs in the same dtype, computing the same
outputs. Two ways to time, both through pytest-benchmark's timer:
- `timed(benchmark, fn, timing)`: one provider of a group (pytest-benchmark's `group`, one test per provider); every
  provider of the group passes the same `Timing`, and benchmarks/report.py takes the ratios of the group's medians
  from one stored run (it refuses a group whose providers were timed differently).
- `timed_pair(benchmark, fast, baseline, timing)`: both sides in one test, interleaved (each round times the
  baseline, then fastclip), so that a machine whose load drifts slows both alike; the baseline's median, min and
  max go to extra_info["baseline"], the ratio to extra_info["ratio"]. Goals are asserted on these pairs.

Every benchmark records the machine, load average (before and after it), library versions and git commit:
pytest-benchmark's machine_info / commit_info plus `pytest_benchmark_update_machine_info` below, and extra_info.
`make bench` stores the JSON under benchmarks/results/ and benchmarks/report.py writes RESULTS.md's tables from it.
"""

from __future__ import annotations

import importlib.metadata
import itertools
import os
import platform
import statistics
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
LIBRARIES = ("torch", "torchvision", "triton", "numpy", "scipy", "open_clip_torch", "nvidia-dali-cuda120",
             "nvidia-dali-cuda130", "pillow", "pytest-benchmark")  # fmt: skip


@dataclass(frozen=True)
class Timing:
    """Warm-up calls and timed rounds, the same for every side of a comparison."""

    rounds: int = 5
    warmup: int = 1


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=REPO_ROOT, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def machine_info() -> dict:
    return {
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpu_count": os.cpu_count(),
        "cpu_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
        "commit": _git("rev-parse", "--short", "HEAD"),
        "libraries": library_versions(),
    }


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info.update(fastclip=machine_info_cached(), load_average_at_start=load_average())


_MACHINE_INFO: dict | None = None


def machine_info_cached() -> dict:
    global _MACHINE_INFO
    if _MACHINE_INFO is None:
        _MACHINE_INFO = machine_info()
    return _MACHINE_INFO


def sync(device: torch.device | str) -> None:
    """Wait for queued GPU work so that a timed call measures the work, not the launch."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


@pytest.fixture
def bench_info(benchmark):
    """benchmark.extra_info with the machine, the commit and the load average before (and, once the test has run,
    after) it; returns the dict for provider-specific additions."""
    benchmark.extra_info.update(machine_info_cached(), load_average_before=load_average())
    yield benchmark.extra_info
    benchmark.extra_info["load_average_after"] = load_average()


def summary(seconds: list[float]) -> dict[str, float]:
    return {"median": statistics.median(seconds), "min": min(seconds), "max": max(seconds), "rounds": len(seconds)}


def timed(benchmark, fn: Callable, timing: Timing, *args, **kwargs):
    """One provider of a group: `timing.warmup` untimed calls, then `timing.rounds` timed calls of fn."""
    benchmark.extra_info["timing"] = asdict(timing)
    return benchmark.pedantic(
        fn, args=args, kwargs=kwargs, rounds=timing.rounds, warmup_rounds=timing.warmup, iterations=1
    )


def timed_pair(benchmark, fast: Callable, baseline: Callable, timing: Timing) -> dict:
    """fastclip (`fast`, timed by pytest-benchmark) and its baseline under one discipline, interleaved: every warm-up
    and timed round calls the baseline, then fast. Returns {"fast": summary, "baseline": summary, "ratio":
    baseline median / fast median}, also stored in extra_info."""
    baseline_seconds: list[float] = []
    calls = itertools.count()

    def run_baseline_first():
        call = next(calls)
        start = time.perf_counter()
        baseline()
        if call >= timing.warmup:
            baseline_seconds.append(time.perf_counter() - start)

    benchmark.extra_info["timing"] = asdict(timing)
    benchmark.pedantic(fast, setup=run_baseline_first, rounds=timing.rounds, warmup_rounds=timing.warmup, iterations=1)
    if benchmark.stats is None:  # --benchmark-disable: one call of each, nothing timed
        return {}
    data = benchmark.stats.stats
    fast_summary = {"median": data.median, "min": data.min, "max": data.max, "rounds": data.rounds}
    result = {"fast": fast_summary, "baseline": summary(baseline_seconds)}
    result["ratio"] = result["baseline"]["median"] / fast_summary["median"]
    benchmark.extra_info.update(baseline=result["baseline"], ratio=round(result["ratio"], 3))
    return result
