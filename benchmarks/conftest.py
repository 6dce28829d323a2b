"""pytest-benchmark harness: every benchmark records the machine, library versions and git commit in extra_info.

Run with `make bench` (or `pytest benchmarks --benchmark-only`). Quote ratios measured in one run, not absolute times.
"""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


def _git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO_ROOT, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _triton_version() -> str:
    from fastclip import _triton

    return _triton.triton_version() or "absent"


def machine_info() -> dict:
    info = {
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "triton": _triton_version(),
        "commit": _git_commit(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
    }
    return info


def sync(device: torch.device | str) -> None:
    """Wait for queued GPU work so that a timed call measures the work, not the launch."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


@pytest.fixture
def bench_info(benchmark):
    """Fills benchmark.extra_info with the machine description; returns the dict for provider-specific additions."""
    benchmark.extra_info.update(machine_info())
    return benchmark.extra_info
