"""fastclip.ops.bootstrap: the counter-based resamples, backend agreement with the explicit-resampling reference,
scipy.stats.bootstrap's interval formulas, coverage on bivariate normals, the paired difference test and the
permutation test."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import scipy.special
import scipy.stats
import torch

from fastclip.ops import _philox
from fastclip.ops.bootstrap import (
    DegenerateBootstrapWarning,
    bootstrap_ci,
    bootstrap_distribution,
    paired_difference_test,
    permutation_test,
    resample_counts,
    resample_indices,
)
from fastclip.ops.correlation import ConstantInputWarning

BACKENDS = ("extension", "torch", "reference")


# ------------------------------------------------------------------------------------------------ Philox


def test_philox_known_answers():
    """Random123's known-answer vectors for Philox4x32-10."""
    t = lambda value: torch.tensor([value], dtype=torch.int64)  # noqa: E731
    m = 0xFFFFFFFF
    vectors = [
        ((0, 0, 0, 0), 0, (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
        ((m, m, m, m), (m << 32) | m, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
        ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0x299F31D0 << 32) | 0xA4093822,
         (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
    ]
    for counter, key, expected in vectors:
        assert tuple(int(w) for w in _philox.philox4x32(*map(t, counter), key)) == expected
    for backend in ("extension", "reference"):
        words = _philox.random_uint32(0, 0, t(0), t(0), 4, backend=backend)
        assert tuple(words.flatten().tolist()) == vectors[0][2], backend


def test_philox_extension_matches_the_reference():
    a = torch.tensor([0, 5, 2**32 - 1])
    b = torch.tensor([1, 2**31, 7, 0])
    for seed, stream, length in [(0, 0, 1), (2**63 - 1, 5, 13), (123456789, 2, 4), (7, 1, 1031)]:
        expected = _philox.random_uint32_ref(seed, stream, a, b, length)
        assert torch.equal(_philox.random_uint32(seed, stream, a, b, length, backend="extension"), expected)


@pytest.mark.triton_interpret
def test_philox_triton_matches_the_reference():
    a, b = torch.tensor([0, 3, 2**32 - 1]), torch.tensor([1, 2**31])
    for seed, stream, length in [(0, 0, 1), (1, 1, 5), (2**62 + 5, 3, 1100)]:
        expected = _philox.random_uint32_ref(seed, stream, a, b, length)
        assert torch.equal(_philox.random_uint32(seed, stream, a, b, length, backend="triton"), expected)


def test_resamples_are_keyed_by_resample_not_by_chunk():
    whole = resample_indices(3, 0, 10, 57)
    assert torch.equal(whole[4:9], resample_indices(3, 4, 5, 57))
    assert int(whole.min()) >= 0 and int(whole.max()) < 57
    counts = resample_counts(3, 0, 10, 57)
    assert torch.equal(counts.sum(-1), torch.full((10,), 57.0, dtype=torch.float64))
    assert torch.equal(counts, torch.stack([torch.bincount(row, minlength=57) for row in whole]).double())


def test_resample_indices_are_uniform():
    draws = resample_indices(1, 0, 200, 50).flatten()
    counts = torch.bincount(draws, minlength=50).double()
    chi2 = float(((counts - 200) ** 2 / 200).sum())
    assert scipy.stats.chi2.sf(chi2, 49) > 1e-4


# ------------------------------------------------------------------------------------------------ backends


def tied_rows(rows, n, seed):
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.integers(0, 5, size=(rows, n)).astype(np.float64))
    y = torch.from_numpy(rng.integers(0, 4, size=(1, n)).astype(np.float64))
    return x, y


@pytest.mark.parametrize("method", ["pearson", "spearman", "kendall"])
@pytest.mark.parametrize("n", [2, 3, 40])
@pytest.mark.parametrize("jackknife", [False, True])
def test_backends_agree_with_the_explicit_resampling_reference(method, n, jackknife):
    x, y = tied_rows(3, n, seed=n)
    y_rows = torch.cat([y, y + x[:1]])  # shared and per-row y
    for y_case in (y, y_rows[:1].expand(3, -1).contiguous()):
        results = {
            b: bootstrap_distribution(x, y_case, method=method, resamples=257, seed=9, jackknife=jackknife, backend=b)
            for b in BACKENDS
        }
        expected = results["reference"]
        assert expected.shape == (3, n if jackknife else 257)
        for backend, value in results.items():
            assert torch.equal(torch.isnan(value), torch.isnan(expected)), backend
            torch.testing.assert_close(value, expected, rtol=0, atol=1e-12, equal_nan=True, msg=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_pearson_distribution_does_not_depend_on_scale(backend):
    """Scaled by 2**700 or 2**-800 (where a naive sum of squares overflows or underflows), every resample's Pearson
    is the unit-scale one bit for bit: the rows are brought to unit magnitude by a power of two first."""
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(3, 40, generator=generator, dtype=torch.float64)
    y = torch.randn(40, generator=generator, dtype=torch.float64)
    expected = bootstrap_distribution(x, y[None], method="pearson", resamples=64, seed=5, backend=backend)
    assert bool(torch.isfinite(expected).all())
    for scale_x, scale_y in ((2.0**700, 2.0**-800), (2.0**-1000, 2.0**900)):
        scaled = bootstrap_distribution(
            x * scale_x, y[None] * scale_y, method="pearson", resamples=64, seed=5, backend=backend
        )
        assert torch.equal(scaled, expected), (backend, scale_x, scale_y)


def test_pearson_interval_at_scipys_extreme_scales():
    """scipy's very small / extremely large pearsonr vectors: the interval is that of the same data at unit scale."""
    vectors = [
        ([0.004434375, 0.004756007, 0.003911996, 0.0038005, 0.003409971],
         [2.48e-188, 7.41e-181, 4.09e-208, 2.08e-223, 2.66e-245]),
        ([2.3e200, 4.5e200, 6.7e200, 8e200, 3.1e200, 5.0e200], [1.2e199, 5.5e200, 3.3e201, 1.0e200, 2.0e200, 9e200]),
    ]  # fmt: skip
    for x, y in vectors:
        x, y = torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)
        unit_x, unit_y = x / x.abs().max(), y / y.abs().max()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DegenerateBootstrapWarning)  # n = 5 draws some all-tied resamples
            result = bootstrap_ci(x, y, method="pearson", resamples=500, interval="percentile")
            unit = bootstrap_ci(unit_x, unit_y, method="pearson", resamples=500, interval="percentile")
        assert result.statistic.item() == pytest.approx(scipy.stats.pearsonr(x.numpy(), y.numpy())[0], rel=1e-14)
        torch.testing.assert_close(result.distribution, unit.distribution, rtol=1e-12, atol=1e-14, equal_nan=True)


def test_distribution_is_the_statistic_of_the_drawn_resamples():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=30), rng.normal(size=30)
    boot = bootstrap_distribution(
        torch.from_numpy(x)[None], torch.from_numpy(y)[None], method="kendall", resamples=5, seed=4
    )
    for r, drawn in enumerate(resample_indices(4, 0, 5, 30).numpy()):
        assert boot[0, r].item() == pytest.approx(scipy.stats.kendalltau(x[drawn], y[drawn]).statistic, abs=1e-14)


# ---------------------------------------------------------------------------------------------- intervals


def scipy_interval(boot, statistic, jackknife, interval, confidence):
    """scipy.stats.bootstrap's percentile and BCa formulas (_resampling.py), in numpy, on a given distribution."""
    alpha = (1 - confidence) / 2
    if interval == "percentile":
        return np.percentile(boot, 100 * alpha), np.percentile(boot, 100 * (1 - alpha))
    share = ((boot < statistic).sum() + (boot <= statistic).sum()) / (2 * len(boot))
    z0 = scipy.special.ndtri(share)
    n = len(jackknife)
    u = (n - 1) * (jackknife.mean() - jackknife)
    a = (u**3).sum() / n**3 / ((u**2).sum() / n**2) ** 1.5 / 6
    z = scipy.special.ndtri(alpha)
    alpha_1 = scipy.special.ndtr(z0 + (z0 + z) / (1 - a * (z0 + z)))
    alpha_2 = scipy.special.ndtr(z0 + (z0 - z) / (1 - a * (z0 - z)))
    return np.percentile(boot, 100 * alpha_1), np.percentile(boot, 100 * alpha_2)


@pytest.mark.parametrize("interval", ["percentile", "bca"])
@pytest.mark.parametrize("method", ["pearson", "spearman", "kendall"])
def test_interval_formulas_match_scipy(method, interval):
    rng = np.random.default_rng(2)
    x = torch.from_numpy(rng.normal(size=(2, 80)))
    y = x[0] * 0.4 + torch.from_numpy(rng.normal(size=80))
    result = bootstrap_ci(x, y, method=method, resamples=999, interval=interval, confidence=0.9, seed=5)
    jackknife = bootstrap_distribution(x, y.view(1, -1), method=method, jackknife=True)
    for row in range(2):
        low, high = scipy_interval(result.distribution[row].numpy(), result.statistic[row].item(),
                                   jackknife[row].numpy(), interval, 0.9)
        assert result.low[row].item() == pytest.approx(low, abs=1e-12)
        assert result.high[row].item() == pytest.approx(high, abs=1e-12)
    assert result.standard_error[0].item() == pytest.approx(result.distribution[0].std().item())


def _vectorised(method):
    def statistic(a, b, axis=-1):
        if method == "spearman":
            a, b = scipy.stats.rankdata(a, axis=axis), scipy.stats.rankdata(b, axis=axis)
        return scipy.stats.pearsonr(a, b, axis=axis).statistic

    return statistic


@pytest.mark.parametrize("interval", ["percentile", "bca"])
@pytest.mark.parametrize("method", ["pearson", "spearman"])
def test_bounds_agree_with_scipy_bootstrap_within_monte_carlo_error(method, interval):
    rng = np.random.default_rng(7)
    x = rng.normal(size=300)
    y = 0.5 * x + rng.normal(size=300)
    ours = bootstrap_ci(torch.from_numpy(x), torch.from_numpy(y), method=method, resamples=4000, interval=interval)
    theirs = scipy.stats.bootstrap((x, y), _vectorised(method), paired=True, vectorized=True, n_resamples=4000,
                                   method=interval, rng=1)
    # A 2.5% quantile of 4,000 resamples has a Monte-Carlo standard error of ~0.002 here; allow 5 of each.
    assert ours.low.item() == pytest.approx(theirs.confidence_interval.low, abs=0.015)
    assert ours.high.item() == pytest.approx(theirs.confidence_interval.high, abs=0.015)
    assert ours.standard_error.item() == pytest.approx(theirs.standard_error, rel=0.1)


POPULATION = {
    "pearson": lambda rho: rho,
    "spearman": lambda rho: 6 / math.pi * math.asin(rho / 2),
    "kendall": lambda rho: 2 / math.pi * math.asin(rho),
}


@pytest.mark.parametrize("method", ["pearson", "spearman", "kendall"])
def test_coverage_on_bivariate_normals(method):
    """400 simulated data sets (100 each at rho 0, 0.3, 0.6, 0.8), n = 100, one batched call: the 95% intervals
    cover the population correlation in 95% +- 3% of them."""
    trials, n = 400, 100
    rho = torch.tensor([0.0, 0.3, 0.6, 0.8], dtype=torch.float64).repeat_interleave(trials // 4)
    generator = torch.Generator().manual_seed(2024)
    a = torch.randn(trials, n, generator=generator, dtype=torch.float64)
    b = torch.randn(trials, n, generator=generator, dtype=torch.float64)
    x = a
    y = rho.view(-1, 1) * a + (1 - rho.view(-1, 1) ** 2).sqrt() * b
    truth = torch.tensor([POPULATION[method](float(r)) for r in rho], dtype=torch.float64)
    for interval in ("percentile", "bca"):
        result = bootstrap_ci(x, y, method=method, resamples=1000, interval=interval, seed=17)
        coverage = ((result.low <= truth) & (truth <= result.high)).double().mean().item()
        assert 0.92 <= coverage <= 0.98, (interval, coverage)


# ------------------------------------------------------------------------------------------ difference test


def test_paired_difference_of_identical_predictors_is_zero():
    rng = np.random.default_rng(3)
    x, y = torch.from_numpy(rng.normal(size=50)), torch.from_numpy(rng.normal(size=50))
    result = paired_difference_test(x, x.clone(), y, resamples=500, interval="percentile")
    assert result.difference.item() == 0 and result.low.item() == 0 and result.high.item() == 0
    assert result.pvalue.item() == 1.0


def test_paired_difference_shares_the_resamples():
    rng = np.random.default_rng(4)
    y = torch.from_numpy(rng.normal(size=120))
    x1 = y + torch.from_numpy(rng.normal(size=120)) * 0.5
    x2 = y + torch.from_numpy(rng.normal(size=120)) * 3.0
    result = paired_difference_test(x1, x2, y, method="kendall", resamples=2000, seed=8)
    both = bootstrap_ci(torch.stack([x1, x2]), y, method="kendall", resamples=2000, seed=8, interval="percentile")
    torch.testing.assert_close(result.distribution, both.distribution[0] - both.distribution[1], rtol=0, atol=1e-15)
    assert result.difference.item() == pytest.approx((both.statistic[0] - both.statistic[1]).item())
    assert result.low.item() > 0 and result.pvalue.item() < 0.01


def test_paired_difference_p_values_are_calibrated_under_the_null():
    """x1 and x2 correlate equally with y (independent noise of the same size): about 5% of tests reject at 0.05."""
    trials, n = 300, 80
    generator = torch.Generator().manual_seed(11)
    y = torch.randn(trials, n, generator=generator, dtype=torch.float64)
    x1 = y + torch.randn(trials, n, generator=generator, dtype=torch.float64)
    x2 = y + torch.randn(trials, n, generator=generator, dtype=torch.float64)
    result = paired_difference_test(x1, x2, y, method="spearman", resamples=1000, seed=2)
    rejected = (result.pvalue < 0.05).double().mean().item()
    assert 0.02 <= rejected <= 0.09, rejected
    covered = ((result.low <= 0) & (0 <= result.high)).double().mean().item()
    assert 0.91 <= covered <= 0.98, covered


# ------------------------------------------------------------------------------------------ permutation test


def test_permutation_p_values_agree_with_scipy():
    rng = np.random.default_rng(6)
    x = rng.normal(size=60)
    y = 0.25 * x + rng.normal(size=60)
    ours = permutation_test(torch.from_numpy(x), torch.from_numpy(y), method="pearson", permutations=5000, seed=3)
    theirs = scipy.stats.permutation_test((y,), lambda b, axis: scipy.stats.pearsonr(x, b, axis=axis).statistic,
                                          permutation_type="pairings", n_resamples=5000, vectorized=True, rng=0)
    assert ours.pvalue.item() == pytest.approx(theirs.pvalue, abs=0.03)  # both Monte-Carlo estimates of one p
    asymptotic = scipy.stats.spearmanr(x, y).pvalue
    spearman = permutation_test(torch.from_numpy(x), torch.from_numpy(y), method="spearman", permutations=5000)
    assert spearman.pvalue.item() == pytest.approx(asymptotic, abs=0.03)


def test_permutation_alternatives_and_extremes():
    x = torch.arange(40, dtype=torch.float64)
    result = permutation_test(x, x * 2 + 1, method="kendall", permutations=999)
    assert result.pvalue.item() == pytest.approx(1 / 1000)
    greater = permutation_test(x, x, method="spearman", permutations=999, alternative="greater")
    less = permutation_test(x, x, method="spearman", permutations=999, alternative="less")
    assert greater.pvalue.item() == pytest.approx(1 / 1000) and less.pvalue.item() == 1.0
    null = permutation_test(x, torch.flip(x, [0]) % 7, method="pearson", permutations=2000).null_distribution
    assert null.shape == (2000,) and abs(null.mean().item()) < 0.02
    assert null.var().item() == pytest.approx(1 / 39, rel=0.15)  # the variance of r under independence


# ------------------------------------------------------------------------------------------------ NaN, errors


def test_nan_policies():
    rng = np.random.default_rng(8)
    x = torch.from_numpy(rng.normal(size=(3, 30)))
    y = torch.from_numpy(rng.normal(size=30))
    x[1, [4, 9]] = float("nan")
    propagated = bootstrap_ci(x, y, resamples=300)
    assert math.isnan(propagated.low[1]) and not math.isnan(propagated.low[0])
    omitted = bootstrap_ci(x, y, resamples=300, nan_policy="omit")
    keep = ~torch.isnan(x[1])
    alone = bootstrap_ci(x[1][keep], y[keep], resamples=300)
    assert omitted.low[1].item() == pytest.approx(alone.low.item(), abs=1e-14)
    assert omitted.high[1].item() == pytest.approx(alone.high.item(), abs=1e-14)
    assert omitted.low[0].item() == pytest.approx(propagated.low[0].item(), abs=1e-14)
    difference = paired_difference_test(x[0], x[1], y, resamples=300, nan_policy="omit")
    expected = paired_difference_test(x[0][keep], x[1][keep], y[keep], resamples=300)
    assert difference.pvalue.item() == expected.pvalue.item()
    p = permutation_test(x, y, permutations=200, nan_policy="omit").pvalue
    assert p.isfinite().all()


def test_degenerate_resamples_warn():
    x = torch.tensor([1.0, 1.0, 1.0, 2.0])
    y = torch.tensor([1.0, 2.0, 3.0, 4.0])
    with pytest.warns(DegenerateBootstrapWarning):
        result = bootstrap_ci(x, y, resamples=200)
    assert math.isnan(result.low) and not math.isnan(result.statistic)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(method="tau"), "method"),
        (dict(confidence=1.0), "confidence"),
        (dict(interval="basic"), "interval"),
        (dict(seed=-3), "seed"),
        (dict(resamples=0), "resamples"),
        (dict(nan_policy="raise"), "nan_policy"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        bootstrap_ci(torch.arange(5.0), torch.arange(5.0), **kwargs)


def test_constant_input_warns_once_and_gives_nan():
    with pytest.warns(ConstantInputWarning):
        result = bootstrap_ci(torch.ones(10), torch.arange(10.0), resamples=50)
    assert math.isnan(result.statistic) and math.isnan(result.low)


# ------------------------------------------------------------------------------------------------------ CUDA


@pytest.mark.needs_cuda
@pytest.mark.parametrize("method", ["pearson", "spearman", "kendall"])
def test_cuda_matches_the_cpu_extension(method):
    x, y = tied_rows(4, 300, seed=1)
    expected = bootstrap_distribution(x, y, method=method, resamples=2000, seed=3)
    value = bootstrap_distribution(x.cuda(), y.cuda(), method=method, resamples=2000, seed=3)
    torch.testing.assert_close(value.cpu(), expected, rtol=0, atol=1e-12, equal_nan=True)
    ci = bootstrap_ci(x.cuda(), y[0].cuda(), method=method, resamples=2000, seed=3)
    ci_cpu = bootstrap_ci(x, y[0], method=method, resamples=2000, seed=3)
    torch.testing.assert_close(ci.low.cpu(), ci_cpu.low, rtol=0, atol=1e-12)
