"""What the GPU check scripts of benchmarks/device/ share: CUDA-event timing and the markdown result table.

The scripts run as `python benchmarks/device/<name>.py`, so this folder is on sys.path and `from _common import ...`
finds this file.
"""

from __future__ import annotations

import statistics
from typing import Callable, Sequence

import torch


def time_ms(fn: Callable[[], object], *, repeats: int = 7, warmup: int = 2) -> float:
    """Median milliseconds of fn() over `repeats` CUDA-event-timed calls, after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def print_markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A table ready for benchmarks/RESULTS.md: the header row, the separator, then one line per row of cells."""
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
