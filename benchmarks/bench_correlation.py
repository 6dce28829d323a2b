"""Correlations and bootstrap CIs: fastclip vs scipy.stats.

- spearman / kendall_tau_b on 24 x 10,125 (KADID-10k size: 24 layers against one human-score vector) vs a scipy
  loop over the rows;
- Kendall tau-b at n = 100,000: the extension vs scipy.stats.kendalltau;
- a 10,000-resample paired bootstrap BCa CI of Spearman at n = 3,000 (TID2013 size) vs scipy.stats.bootstrap with a
  vectorised statistic (rankdata + pearsonr along the resample axis: as vectorised as scipy allows).

Done-when (issue 6, 2 CPU cores), measured in one run by test_done_when_cpu: the bootstrap >= 20x faster than
scipy with bounds that agree within Monte-Carlo error; Kendall at n = 100,000 at least as fast as scipy.
    pytest benchmarks/bench_correlation.py --benchmark-only --benchmark-group-by=group
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import scipy.stats
import torch

from fastclip.ops import bootstrap_ci, kendall_tau_b, spearman

ROWS, PAIRS = 24, 10_125
BOOT_N, RESAMPLES = 3_000, 10_000
KENDALL_N = 100_000


def layer_data(rows: int = ROWS, n: int = PAIRS, seed: int = 0):
    """Model distances of `rows` layers and human scores with ties (MOS on a 0.01 grid), correlated ~0.5."""
    rng = np.random.default_rng(seed)
    human = np.round(rng.uniform(1, 5, size=n), 2)
    layers = 0.6 * human + rng.normal(size=(rows, n))
    return layers, human


def scipy_rows(statistic, layers, human):
    return np.array([statistic(row, human).statistic for row in layers])


def _spearman_statistic(a, b, axis=-1):
    rank_a, rank_b = scipy.stats.rankdata(a, axis=axis), scipy.stats.rankdata(b, axis=axis)
    return scipy.stats.pearsonr(rank_a, rank_b, axis=axis).statistic


def scipy_bootstrap(x, y, resamples=RESAMPLES):
    return scipy.stats.bootstrap(
        (x, y), _spearman_statistic, paired=True, vectorized=True, n_resamples=resamples, batch=500, method="BCa", rng=0
    )


@pytest.mark.benchmark(group="24x10125")
@pytest.mark.parametrize("provider", ["fastclip", "scipy_loop"])
@pytest.mark.parametrize("method", ["spearman", "kendall"])
def test_rows(benchmark, bench_info, method, provider):
    layers, human = layer_data()
    bench_info.update(provider=provider, method=method, shape=f"{ROWS}x{PAIRS}")
    if provider == "fastclip":
        fn = spearman if method == "spearman" else kendall_tau_b
        x, y = torch.from_numpy(layers), torch.from_numpy(human)
        result = benchmark.pedantic(fn, args=(x, y), rounds=5, iterations=1, warmup_rounds=1).numpy()
    else:
        fn = scipy.stats.spearmanr if method == "spearman" else scipy.stats.kendalltau
        result = benchmark.pedantic(scipy_rows, args=(fn, layers, human), rounds=3, iterations=1)
    expected = scipy_rows(scipy.stats.spearmanr if method == "spearman" else scipy.stats.kendalltau, layers, human)
    np.testing.assert_allclose(result, expected, rtol=0, atol=1e-12)


@pytest.mark.benchmark(group="kendall_100k")
@pytest.mark.parametrize("provider", ["extension", "scipy"])
def test_kendall_100k(benchmark, bench_info, provider):
    layers, human = layer_data(1, KENDALL_N, seed=1)
    bench_info.update(provider=provider, n=KENDALL_N)
    if provider == "extension":
        x, y = torch.from_numpy(layers[0]), torch.from_numpy(human)
        kwargs = dict(backend="extension")
        value = benchmark.pedantic(kendall_tau_b, args=(x, y), kwargs=kwargs, rounds=7, warmup_rounds=1).item()
    else:
        statistic = lambda: scipy.stats.kendalltau(layers[0], human).statistic  # noqa: E731
        value = benchmark.pedantic(statistic, rounds=7, warmup_rounds=1)
    assert value == pytest.approx(scipy.stats.kendalltau(layers[0], human).statistic, abs=1e-12)


@pytest.mark.benchmark(group="bootstrap_spearman_3000x10000")
@pytest.mark.parametrize("provider", ["fastclip", "scipy"])
def test_bootstrap(benchmark, bench_info, provider):
    layers, human = layer_data(1, BOOT_N, seed=2)
    bench_info.update(provider=provider, n=BOOT_N, resamples=RESAMPLES, interval="BCa")
    if provider == "fastclip":
        x, y = torch.from_numpy(layers[0]), torch.from_numpy(human)
        kwargs = dict(method="spearman")
        result = benchmark.pedantic(bootstrap_ci, args=(x, y), kwargs=kwargs, rounds=3, warmup_rounds=1)
        bench_info.update(low=result.low.item(), high=result.high.item())
    else:
        result = benchmark.pedantic(scipy_bootstrap, args=(layers[0], human), rounds=1, iterations=1)
        bench_info.update(low=float(result.confidence_interval.low), high=float(result.confidence_interval.high))


def quantile_monte_carlo_error(distribution: np.ndarray, q: float) -> float:
    """Standard error of the q-quantile of R resamples, from the order statistics a binomial SE away on each side."""
    spread = np.sqrt(q * (1 - q) / len(distribution))
    low, high = np.quantile(distribution, [max(0.0, q - spread), min(1.0, q + spread)])
    return (high - low) / 2


def _best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _threaded_best_of(threads: int, fn, repeats: int) -> float:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _best_of(fn, repeats)
    finally:
        torch.set_num_threads(before)


def test_done_when_cpu(benchmark, bench_info):
    """The issue's CPU goals, every ratio from this one run (best of a few calls each; scipy's bootstrap once).
    fastclip is timed with torch's default thread count and with one thread and the faster counts: on a busy shared
    machine a second thread's wake-up latency can outweigh its work (the load average is recorded)."""
    layers, human = layer_data(1, BOOT_N, seed=2)
    x, y = torch.from_numpy(layers[0]), torch.from_numpy(human)
    ours = bootstrap_ci(x, y, method="spearman")
    threads = (torch.get_num_threads(), 1)
    bootstrap_by_threads = {t: _threaded_best_of(t, lambda: bootstrap_ci(x, y, method="spearman"), 3) for t in threads}
    ours_seconds = min(bootstrap_by_threads.values())
    start = time.perf_counter()
    theirs = scipy_bootstrap(layers[0], human)
    scipy_seconds = time.perf_counter() - start
    # Both bounds are quantiles of 10,000 resamples; the difference of two independent estimates has standard error
    # sqrt(2) times each one's, which the order statistics of our distribution give.
    distribution = ours.distribution.numpy()
    se_low = quantile_monte_carlo_error(distribution, float(np.mean(distribution <= ours.low.item())))
    se_high = quantile_monte_carlo_error(distribution, float(np.mean(distribution <= ours.high.item())))
    low_z = abs(ours.low.item() - theirs.confidence_interval.low) / (np.sqrt(2) * se_low)
    high_z = abs(ours.high.item() - theirs.confidence_interval.high) / (np.sqrt(2) * se_high)

    big, scores = layer_data(1, KENDALL_N, seed=1)
    kx, ky = torch.from_numpy(big[0]), torch.from_numpy(scores)
    kendall_seconds = min(_threaded_best_of(t, lambda: kendall_tau_b(kx, ky, backend="extension"), 7) for t in threads)
    scipy_kendall_seconds = _best_of(lambda: scipy.stats.kendalltau(big[0], scores), 7)

    rows, human_rows = layer_data()
    lx, ly = torch.from_numpy(rows), torch.from_numpy(human_rows)
    row_ratios = {}
    pairs = [("spearman", spearman, scipy.stats.spearmanr), ("kendall", kendall_tau_b, scipy.stats.kendalltau)]
    for name, ours_fn, scipy_fn in pairs:
        fast = min(_threaded_best_of(t, lambda: ours_fn(lx, ly), 5) for t in threads)
        slow = _best_of(lambda: scipy_rows(scipy_fn, rows, human_rows), 2)
        row_ratios[f"{name}_24x10125_speedup"] = round(slow / fast, 1)

    bench_info.update(
        load_average=os.getloadavg()[0],
        bootstrap_seconds_by_threads={t: round(v, 3) for t, v in bootstrap_by_threads.items()},
        scipy_bootstrap_seconds=round(scipy_seconds, 2),
        bootstrap_speedup=round(scipy_seconds / ours_seconds, 1),
        bootstrap_bounds=(round(ours.low.item(), 5), round(ours.high.item(), 5)),
        scipy_bounds=tuple(round(float(bound), 5) for bound in theirs.confidence_interval),
        bound_differences_in_mc_standard_errors=(round(low_z, 2), round(high_z, 2)),
        kendall_100k_seconds=round(kendall_seconds, 4), scipy_kendall_100k_seconds=round(scipy_kendall_seconds, 4),
        kendall_100k_speedup=round(scipy_kendall_seconds / kendall_seconds, 2), **row_ratios,
    )  # fmt: skip
    benchmark.pedantic(lambda: None, rounds=1)
    print("\n" + "\n".join(f"{key}: {value}" for key, value in bench_info.items()))
    assert scipy_seconds / ours_seconds >= 20
    assert low_z <= 4 and high_z <= 4
    assert kendall_seconds <= scipy_kendall_seconds
