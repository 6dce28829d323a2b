"""rank_average on 256 x 3000 with ties, float32 on every side: the C++ extension vs scipy.stats.rankdata(x, axis=1)
(what a user calls) and the scipy row loop, and rank_average_ref, under benchmarks/conftest.py's discipline.

Goal (issue 2): extension >= 3x faster than scipy's best, and equal to scipy on every row.
    pytest benchmarks/bench_rank_average.py --benchmark-only
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch

from conftest import Timing, timed  # benchmarks/conftest.py (pytest puts benchmarks/ on sys.path)
from fastclip.ops import rank_average, rank_average_ref

SHAPES = {"256x3000": (256, 3000)}
PROVIDERS = ["extension", "scipy_axis", "scipy_rows", "reference"]
TIMING = Timing(rounds=9, warmup=1)


def tied_data(rows: int, n: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 100, (rows, n), generator=generator).to(torch.float32)


def scipy_rows(x: np.ndarray) -> np.ndarray:
    return np.stack([scipy.stats.rankdata(row, method="average") for row in x])


def scipy_axis(x: np.ndarray) -> np.ndarray:
    return scipy.stats.rankdata(x, method="average", axis=1)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("shape", list(SHAPES))
def test_rank_average(benchmark, bench_info, provider, shape):
    benchmark.group = f"rank_average_{shape}"
    x = tied_data(*SHAPES[shape])
    bench_info.update(provider=provider, shape=shape, ties="integers 0..99", dtype="float32")
    if provider == "extension":
        result = timed(benchmark, rank_average, TIMING, x, backend="extension").numpy()
    elif provider == "reference":
        result = timed(benchmark, rank_average_ref, TIMING, x).numpy()
    else:
        result = timed(benchmark, scipy_axis if provider == "scipy_axis" else scipy_rows, TIMING, x.numpy())
    np.testing.assert_array_equal(result, scipy_axis(x.numpy()))
