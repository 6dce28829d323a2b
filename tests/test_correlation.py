"""fastclip.ops.correlation against scipy.stats (pearsonr, spearmanr, kendalltau variant b) and the *_ref oracles."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import scipy.stats
import torch

from fastclip.ops import correlation
from fastclip.ops.correlation import (
    ConstantInputWarning,
    DegenerateInputWarning,
    kendall_tau_b,
    kendall_tau_b_ref,
    kendall_tau_counts,
    pearson,
    pearson_ref,
    spearman,
    spearman_ref,
)


def _scipy_pearson(x, y):
    return scipy.stats.pearsonr(x, y).statistic


def _scipy_spearman(x, y):
    return scipy.stats.spearmanr(x, y).statistic


def _scipy_kendall(x, y):
    return scipy.stats.kendalltau(x, y, variant="b").statistic


# (function, reference, scipy, backends to check besides auto)
CASES = {
    "pearson": (pearson, pearson_ref, _scipy_pearson, ["reference"]),
    "spearman": (spearman, spearman_ref, _scipy_spearman, ["extension", "reference"]),
    "kendall": (kendall_tau_b, kendall_tau_b_ref, _scipy_kendall, ["extension", "merge", "reference"]),
}


def tied_data(rows, n, seed, levels=7):
    """Integer-valued data with many ties (levels distinct values), plus a continuous part."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, levels, size=(rows, n)).astype(np.float64)
    y = (x[0] + rng.integers(0, levels, size=n)).astype(np.float64)
    continuous = rng.normal(size=(rows, n)) + 0.3 * y
    return np.concatenate([x, continuous]), y


def scipy_rows(fn, x, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.array([fn(row, y) for row in x], dtype=np.float64)


@pytest.mark.parametrize("n", [2, 3, 127, 10_000])
@pytest.mark.parametrize("method", list(CASES))
def test_matches_scipy_with_many_ties(method, n):
    function, reference, scipy_fn, backends = CASES[method]
    x, y = tied_data(3, n, seed=n)
    expected = scipy_rows(scipy_fn, x, y)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConstantInputWarning)  # n = 2 and 3 hit constant rows
        results = {"auto": function(tx, ty)}
        for backend in backends:
            # The O(n^2) Kendall reference is left out at n = 10,000; its counts equal the others' below.
            if not (backend == "reference" and method == "kendall" and n > 1000):
                results[backend] = function(tx, ty, backend=backend)
        if n <= 1000:
            results["_ref"] = reference(tx, ty)
    for backend, value in results.items():
        assert value.dtype == torch.float64 and value.shape == (6,), backend
        np.testing.assert_allclose(value.numpy(), expected, rtol=0, atol=1e-12, equal_nan=True, err_msg=backend)


def test_kendall_counts_are_identical_across_backends():
    rng = np.random.default_rng(5)
    x = torch.from_numpy(rng.integers(0, 9, size=(4, 800)).astype(np.float64))
    y = torch.from_numpy(rng.integers(0, 6, size=(4, 800)).astype(np.float64))
    x[1, ::7] = float("nan")
    y[2, 3::11] = float("nan")
    x[3, :5] = float("inf")
    y[3, 10:20] = -float("inf")
    x[0, :50], x[0, 50:100] = -0.0, 0.0
    counts = {b: kendall_tau_counts(x, y, backend=b) for b in ("extension", "merge", "reference")}
    assert counts["extension"].dtype == torch.int64
    assert torch.equal(counts["extension"], counts["reference"])
    assert torch.equal(counts["merge"], counts["reference"])


def test_kendall_large_n_is_exact():
    rng = np.random.default_rng(2)
    x, y = rng.integers(0, 1000, size=100_000).astype(float), rng.normal(size=100_000)
    expected = _scipy_kendall(x, y)
    value = kendall_tau_b(torch.from_numpy(x), torch.from_numpy(y))
    assert value.item() == pytest.approx(expected, abs=1e-12)
    merged = kendall_tau_counts(torch.from_numpy(x[None, :30_000]), torch.from_numpy(y[None, :30_000]), backend="merge")
    expected = kendall_tau_counts(torch.from_numpy(x[None, :30_000]), torch.from_numpy(y[None, :30_000]))
    assert torch.equal(merged, expected)


@pytest.mark.parametrize("method", list(CASES))
def test_batched_and_broadcast_equal_a_loop(method):
    function = CASES[method][0]
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.integers(0, 5, size=(2, 3, 1, 40)).astype(np.float64))
    y = torch.from_numpy(rng.normal(size=(4, 40)))
    batched = function(x, y)
    assert batched.shape == (2, 3, 4)
    for i in range(2):
        for j in range(3):
            for k in range(4):
                assert batched[i, j, k].item() == pytest.approx(function(x[i, j, 0], y[k]).item(), abs=1e-14)
    assert function(y[0], x[0, 0]).shape == (1,)  # the shared operand may be either
    assert function(x[0, 0, 0], y[0]).shape == ()


@pytest.mark.parametrize("method", list(CASES))
def test_constant_rows_give_nan_with_scipys_warning(method):
    """Pearson and Spearman warn as scipy does; Kendall's NaN is silent, as scipy.stats.kendalltau's."""
    function, reference, scipy_fn, _ = CASES[method]
    x = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 5.0]])
    y = torch.tensor([2.0, 1.0, 4.0, 3.0])
    for fn in (function, reference):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            value = fn(x, y)
            assert math.isnan(fn(y, torch.full((4,), 7.0)))
        warned = [w for w in caught if issubclass(w.category, ConstantInputWarning)]
        assert len(warned) == (0 if method == "kendall" else 2)
        assert math.isnan(value[0]) and value[1].item() == pytest.approx(scipy_fn(x[1].numpy(), y.numpy()), abs=1e-12)


@pytest.mark.parametrize("method", list(CASES))
def test_nan_policies(method):
    function, reference, scipy_fn, backends = CASES[method]
    x, y = tied_data(2, 60, seed=3)
    x[1, [3, 17]] = np.nan
    y[[5, 40]] = np.nan
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    for backend in ["auto", *backends]:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # propagating NaN is silent, as scipy
            propagated = function(tx, ty, backend=backend)
        assert torch.isnan(propagated).all()
        omitted = function(tx, ty, nan_policy="omit", backend=backend)
        for row in range(4):
            keep = ~(np.isnan(x[row]) | np.isnan(y))
            assert omitted[row].item() == pytest.approx(scipy_fn(x[row][keep], y[keep]), abs=1e-12), backend
    if method != "pearson":  # scipy's pearsonr has no nan_policy; the others must agree with it
        expected = getattr(scipy.stats, {"spearman": "spearmanr", "kendall": "kendalltau"}[method])(
            x[1], y, nan_policy="omit"
        ).statistic
        assert function(tx[1], ty, nan_policy="omit").item() == pytest.approx(expected, abs=1e-12)
    np.testing.assert_allclose(
        reference(tx, ty, nan_policy="omit").numpy(), function(tx, ty, nan_policy="omit").numpy(), atol=1e-13
    )


def test_too_few_complete_pairs_give_nan_with_a_warning():
    x = torch.tensor([[1.0, float("nan"), 3.0, float("nan")], [1.0, 2.0, 3.0, 4.0]])
    y = torch.tensor([float("nan"), 2.0, 5.0, 1.0])
    for fn in (pearson, spearman, kendall_tau_b):
        with pytest.warns(DegenerateInputWarning):
            value = fn(x, y, nan_policy="omit")
        assert math.isnan(value[0]) and not math.isnan(value[1])


def test_float32_and_integer_inputs_give_float64():
    rng = np.random.default_rng(4)
    x = rng.normal(size=50).astype(np.float32)
    y = rng.integers(0, 4, size=50)
    for method, (function, _, scipy_fn, _) in CASES.items():
        value = function(torch.from_numpy(x), torch.from_numpy(y))
        assert value.dtype == torch.float64
        assert value.item() == pytest.approx(scipy_fn(x.astype(np.float64), y.astype(np.float64)), abs=1e-12), method


def test_signed_zeros_tie():
    x = torch.tensor([-0.0, 0.0, 1.0, 2.0])
    y = torch.tensor([1.0, 2.0, 3.0, 4.0])
    expected = _scipy_kendall(x.numpy(), y.numpy())
    for backend in ("extension", "merge", "reference"):
        assert kendall_tau_b(x, y, backend=backend).item() == pytest.approx(expected, abs=1e-15)


@pytest.mark.parametrize(
    "x, y, message",
    [
        (torch.ones(3), torch.ones(4), "same length"),
        (torch.ones(1), torch.ones(1), "at least 2"),
        (torch.ones(2, 5), torch.ones(3, 5), "do not broadcast"),
        (torch.ones(()), torch.ones(3), "at least one dimension"),
        ([1.0, 2.0], torch.ones(2), "must be a torch.Tensor"),
        (torch.ones(3, dtype=torch.complex64), torch.ones(3), "real numbers"),
    ],
)
def test_bad_arguments_are_named(x, y, message):
    for fn in (pearson, spearman, kendall_tau_b):
        with pytest.raises((ValueError, TypeError), match=message):
            fn(x, y)
    with pytest.raises(ValueError, match="nan_policy"):
        pearson(torch.ones(3), torch.ones(3), nan_policy="raise")


def test_empty_batch():
    assert pearson(torch.ones(0, 5), torch.ones(5)).shape == (0,)
    assert kendall_tau_b(torch.ones(2, 0, 5), torch.ones(5)).shape == (2, 0)


def test_unavailable_backend_says_why():
    from fastclip._triton import interpreter_enabled
    from fastclip.ops._dispatch import BackendUnavailableError

    if interpreter_enabled():
        pytest.skip("Triton runs on the CPU under TRITON_INTERPRET=1")
    with pytest.raises(BackendUnavailableError, match="TRITON_INTERPRET"):
        pearson(torch.ones(3), torch.arange(3.0), backend="triton")


# ------------------------------------------------------------------------------------------ Triton kernels


@pytest.mark.triton_interpret
@pytest.mark.parametrize("n", [2, 3, 45, 300])
def test_triton_kendall_counts_match_the_reference(n):
    rng = np.random.default_rng(n)
    x = torch.from_numpy(rng.integers(0, 5, size=(3, n)).astype(np.float64))
    y = torch.from_numpy(rng.integers(0, 4, size=(3, n)).astype(np.float64))
    x[1, ::4] = float("nan")
    x[2, : n // 2] = -0.0
    assert torch.equal(kendall_tau_counts(x, y, backend="triton"), kendall_tau_counts(x, y, backend="reference"))


@pytest.mark.triton_interpret
@pytest.mark.parametrize("n", [2, 7, 1500])
def test_triton_pearson_matches_the_reference(n):
    rng = np.random.default_rng(n)
    x = torch.from_numpy(rng.normal(size=(3, n)) + 1e6)
    y = torch.from_numpy(rng.normal(size=n))
    x[1, 0] = float("nan")
    for policy in ("propagate", "omit"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DegenerateInputWarning)
            expected = pearson_ref(x, y, nan_policy=policy)
            value = pearson(x, y, nan_policy=policy, backend="triton")
        np.testing.assert_allclose(value.numpy(), expected.numpy(), rtol=0, atol=1e-12, equal_nan=True)
    with pytest.warns(ConstantInputWarning):
        assert math.isnan(pearson(torch.ones(n), y, backend="triton"))


# --------------------------------------------------------------------------------------------------- CUDA


@pytest.mark.needs_cuda
@pytest.mark.parametrize("method", list(CASES))
def test_cuda_matches_cpu(method):
    function = CASES[method][0]
    x, y = tied_data(12, 10_125, seed=9)
    x[2, 7] = np.nan
    expected = function(torch.from_numpy(x), torch.from_numpy(y), nan_policy="omit")
    value = function(torch.from_numpy(x).cuda(), torch.from_numpy(y).cuda(), nan_policy="omit")
    torch.testing.assert_close(value.cpu(), expected, rtol=0, atol=1e-12)


@pytest.mark.needs_cuda
def test_cuda_kendall_above_the_tiled_limit_uses_the_sort_based_count():
    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.integers(0, 50, size=(2, correlation.TILED_KENDALL_MAX_N + 77)).astype(np.float64))
    y = torch.from_numpy(rng.normal(size=x.shape[1]))
    expected = kendall_tau_counts(x, y.expand_as(x).contiguous())
    value = kendall_tau_counts(x.cuda(), y.expand_as(x).contiguous().cuda(), backend="triton")
    assert torch.equal(value.cpu(), expected)
