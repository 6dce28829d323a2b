"""What the GPU steps of benchmarks/device/ share: CUDA-event timing, the markdown table, and the figures file that
run.py gathers into $OUT/device.json.

The steps run as `python benchmarks/device/<name>.py`, so this folder is on sys.path and `from _common import ...`
finds this file.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from typing import Callable, Sequence

import torch

FIGURES_ENV = "FASTCLIP_DEVICE_FIGURES"
# A step that cannot run here (a package or the device it needs is missing) exits with this code, after printing
# why; run.py records the step as skipped with that line (the automake convention for a skipped test).
SKIP_EXIT_CODE = 77


class Figures:
    """A step's measured rows and facts, rewritten to $FASTCLIP_DEVICE_FIGURES after every change, so that a step
    stopped at its time budget still hands run.py what it measured so far."""

    def __init__(self) -> None:
        self.path = os.environ.get(FIGURES_ENV)
        self.rows: list[dict] = []
        self.facts: dict = {}

    def add(self, name: str, value: float | None, unit: str, goal: str = "", meets: bool | None = None,
            check: str = "") -> None:
        """One measured figure: what was measured, its value and unit, the goal it answers to and whether it meets
        it (None: no goal), and the correctness check that came with it ("ok", "MISMATCH", "")."""
        self.rows.append({"name": name, "value": value, "unit": unit, "goal": goal, "meets": meets, "check": check})
        self._write()

    def fact(self, key: str, value) -> None:
        self.facts[key] = value
        self._write()

    def _write(self) -> None:
        if not self.path:
            return
        temporary = f"{self.path}.tmp"
        with open(temporary, "w") as handle:
            json.dump({"rows": self.rows, "facts": self.facts}, handle, indent=1)
        os.replace(temporary, self.path)


def skip_step(reason: str) -> None:
    """End this step as skipped (see SKIP_EXIT_CODE), saying why in one line."""
    print(f"skipped: {reason}", flush=True)
    sys.exit(SKIP_EXIT_CODE)


def require_cuda(step: str) -> None:
    if not torch.cuda.is_available():
        skip_step(f"{step} needs a CUDA device; none is visible")


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
