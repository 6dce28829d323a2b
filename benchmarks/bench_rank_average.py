"""rank_average on 256 x 3000 with ties: the C++ extension vs scipy.stats.rankdata row by row vs rank_average_ref.

Goal (issue 2): extension >= 3x faster than the scipy row loop, and equal to scipy on every row.
    pytest benchmarks/bench_rank_average.py --benchmark-only --benchmark-group-by=param:shape
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch

from fastclip.ops import rank_average, rank_average_ref

SHAPES = {"256x3000": (256, 3000)}
PROVIDERS = ["extension", "scipy_rows", "reference"]


def tied_data(rows: int, n: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 100, (rows, n), generator=generator).to(torch.float32)


def scipy_rows(x: np.ndarray) -> np.ndarray:
    return np.stack([scipy.stats.rankdata(row, method="average") for row in x])


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("shape", list(SHAPES))
def test_rank_average(benchmark, bench_info, provider, shape):
    x = tied_data(*SHAPES[shape])
    bench_info.update(provider=provider, shape=shape, ties="integers 0..99")
    if provider == "extension":
        result = benchmark(rank_average, x, backend="extension").numpy()
    elif provider == "reference":
        result = benchmark(rank_average_ref, x).numpy()
    else:
        result = benchmark(scipy_rows, x.numpy())
    np.testing.assert_array_equal(result, scipy_rows(x.numpy()))
