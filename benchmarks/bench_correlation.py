"""Correlations and bootstrap CIs: fastclip vs scipy.stats, under benchmarks/conftest.py's timing discipline (same
warm-up, rounds and median on both sides, float64 inputs on both, the same statistics computed).

- IQA rows: spearman / pearson / kendall_tau_b of L layer distances against one human-score vector, at TID2013's
  size (39 rows = 13 layers x 3 distances, n = 3,000) and KADID-10k's (24 rows, n = 10,125). Baselines: scipy
  vectorised along the rows where scipy can (rankdata(axis=1) + pearsonr(axis=1); pearsonr(axis=1)), and the scipy
  row loop (the only way for kendalltau); the best of them is the one to beat.
- Kendall tau-b of one pair at n = 3,000, 10,125 (KADID) and 100,000: fastclip vs scipy.stats.kendalltau.
- the paired BCa bootstrap CI of Spearman, n = 3,000, 10,000 resamples, vs scipy.stats.bootstrap(vectorized=True)
  (the done-when of issue 6: >= 20x, bounds within Monte-Carlo error), both sides interleaved in one test.

    pytest benchmarks/bench_correlation.py --benchmark-only
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch

from conftest import Timing, timed, timed_pair  # benchmarks/conftest.py (pytest puts benchmarks/ on sys.path)
from fastclip.ops import bootstrap_ci, kendall_tau_b, pearson, spearman

BOOT_N, RESAMPLES = 3_000, 10_000
ROW_SHAPES = {"tid2013_39x3000": (39, 3_000), "kadid10k_24x10125": (24, 10_125)}
KENDALL_SIZES = (3_000, 10_125, 100_000)
ROWS_TIMING = Timing(rounds=5, warmup=1)
KENDALL_TIMING = Timing(rounds=7, warmup=1)
BOOTSTRAP_TIMING = Timing(rounds=3, warmup=1)


def layer_data(rows: int, n: int, seed: int = 0):
    """Model distances of `rows` layers and human scores with ties (MOS on a 0.01 grid), correlated ~0.5."""
    rng = np.random.default_rng(seed)
    human = np.round(rng.uniform(1, 5, size=n), 2)
    layers = 0.6 * human + rng.normal(size=(rows, n))
    return layers, human


def scipy_rows(statistic, layers, human):
    return np.array([statistic(row, human).statistic for row in layers])


def scipy_vectorised(method, layers, human):
    if method == "spearman":
        layers, human = scipy.stats.rankdata(layers, axis=1), scipy.stats.rankdata(human)
    return scipy.stats.pearsonr(layers, np.broadcast_to(human, layers.shape), axis=1).statistic


def _spearman_statistic(a, b, axis=-1):
    rank_a, rank_b = scipy.stats.rankdata(a, axis=axis), scipy.stats.rankdata(b, axis=axis)
    return scipy.stats.pearsonr(rank_a, rank_b, axis=axis).statistic


def scipy_bootstrap(x, y, resamples=RESAMPLES):
    return scipy.stats.bootstrap(
        (x, y), _spearman_statistic, paired=True, vectorized=True, n_resamples=resamples, batch=500, method="BCa", rng=0
    )


SCIPY_ROW_STATISTICS = {"spearman": scipy.stats.spearmanr, "pearson": scipy.stats.pearsonr,
                        "kendall": scipy.stats.kendalltau}  # fmt: skip
FASTCLIP_ROW_STATISTICS = {"spearman": spearman, "pearson": pearson, "kendall": kendall_tau_b}


@pytest.mark.parametrize("provider", ["fastclip", "scipy_vectorised", "scipy_loop"])
@pytest.mark.parametrize("method", ["spearman", "pearson", "kendall"])
@pytest.mark.parametrize("shape", list(ROW_SHAPES))
def test_rows(benchmark, bench_info, shape, method, provider):
    if method == "kendall" and provider == "scipy_vectorised":
        pytest.skip("scipy.stats.kendalltau has no axis: the row loop is scipy's way")
    benchmark.group = f"rows_{shape}_{method}"
    layers, human = layer_data(*ROW_SHAPES[shape])
    bench_info.update(provider=provider, method=method, shape=shape, dtype="float64")
    if provider == "fastclip":
        x, y = torch.from_numpy(layers), torch.from_numpy(human)
        result = timed(benchmark, FASTCLIP_ROW_STATISTICS[method], ROWS_TIMING, x, y).numpy()
    elif provider == "scipy_vectorised":
        result = timed(benchmark, scipy_vectorised, ROWS_TIMING, method, layers, human)
    else:
        result = timed(benchmark, scipy_rows, ROWS_TIMING, SCIPY_ROW_STATISTICS[method], layers, human)
    expected = scipy_rows(SCIPY_ROW_STATISTICS[method], layers, human)
    np.testing.assert_allclose(result, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("provider", ["fastclip", "scipy"])
@pytest.mark.parametrize("n", KENDALL_SIZES)
def test_kendall(benchmark, bench_info, n, provider):
    benchmark.group = f"kendall_n{n}"
    layers, human = layer_data(1, n, seed=1)
    bench_info.update(provider=provider, n=n, dtype="float64")
    if provider == "fastclip":
        x, y = torch.from_numpy(layers[0]), torch.from_numpy(human)
        value = timed(benchmark, kendall_tau_b, KENDALL_TIMING, x, y).item()
    else:
        value = timed(benchmark, lambda: scipy.stats.kendalltau(layers[0], human).statistic, KENDALL_TIMING)
    assert value == pytest.approx(scipy.stats.kendalltau(layers[0], human).statistic, abs=1e-12)


def quantile_monte_carlo_error(distribution: np.ndarray, q: float) -> float:
    """Standard error of the q-quantile of R resamples, from the order statistics a binomial SE away on each side."""
    spread = np.sqrt(q * (1 - q) / len(distribution))
    low, high = np.quantile(distribution, [max(0.0, q - spread), min(1.0, q + spread)])
    return (high - low) / 2



def test_bootstrap_done_when(benchmark, bench_info):
    """Issue 6's goal, both sides interleaved in one test: fastclip's BCa bootstrap >= 20x scipy.stats.bootstrap
    (vectorised), bounds within Monte-Carlo error of scipy's."""
    layers, human = layer_data(1, BOOT_N, seed=2)
    x, y = torch.from_numpy(layers[0]), torch.from_numpy(human)
    last = {}

    def fast():
        last["fast"] = bootstrap_ci(x, y, method="spearman")

    def baseline():
        last["scipy"] = scipy_bootstrap(layers[0], human)

    bench_info.update(provider="fastclip vs scipy.stats.bootstrap(vectorized=True)", n=BOOT_N, resamples=RESAMPLES,
                      interval="BCa", dtype="float64")  # fmt: skip
    result = timed_pair(benchmark, fast, baseline, BOOTSTRAP_TIMING)
    ours, theirs = last["fast"], last["scipy"]
    # Both bounds are quantiles of 10,000 resamples; the difference of two independent estimates has standard error
    # sqrt(2) times each one's, which the order statistics of our distribution give.
    distribution = ours.distribution.numpy()
    se_low = quantile_monte_carlo_error(distribution, float(np.mean(distribution <= ours.low.item())))
    se_high = quantile_monte_carlo_error(distribution, float(np.mean(distribution <= ours.high.item())))
    low_z = abs(ours.low.item() - theirs.confidence_interval.low) / (np.sqrt(2) * se_low)
    high_z = abs(ours.high.item() - theirs.confidence_interval.high) / (np.sqrt(2) * se_high)
    bench_info.update(bounds=(round(ours.low.item(), 5), round(ours.high.item(), 5)),
                      scipy_bounds=tuple(round(float(b), 5) for b in theirs.confidence_interval),
                      bound_differences_in_mc_standard_errors=(round(low_z, 2), round(high_z, 2)))  # fmt: skip
    assert low_z <= 4 and high_z <= 4
    if result:
        assert result["ratio"] >= 20, f"bootstrap is {result['ratio']:.1f}x scipy (goal >= 20x)"
