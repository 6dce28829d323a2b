"""rank_average against scipy.stats.rankdata(method="average"), row by row, on data with many ties."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch

from fastclip import _ext
from fastclip.ops import rank_average, rank_average_ref
from tests.helpers import run_python

SIZES = [1, 2, 3, 127, 3000]
DTYPES = [torch.float32, torch.float64]


def _backends(device: str) -> list:
    params = [pytest.param("reference", id="reference")]
    params.append(
        pytest.param(
            "extension",
            id="extension",
            marks=pytest.mark.skipif(
                _ext.kernel_unavailable("rank_average", device) is not None,
                reason=f"extension has no {device} kernel: {_ext.kernel_unavailable('rank_average', device)}",
            ),
        )
    )
    return params


def tied_rows(rows: int, n: int, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    """Rows drawn from few distinct values (heavy ties), with negative values, zeros of both signs and a constant row."""
    generator = torch.Generator().manual_seed(seed)
    levels = max(2, n // 10)
    x = torch.randint(-levels, levels, (rows, n), generator=generator).to(dtype) / 4
    x[0, : n // 2] = -0.0
    if rows > 1:
        x[1] = 7.0
    return x


def scipy_ranks(x: torch.Tensor, nan_policy: str = "propagate") -> np.ndarray:
    return np.stack([scipy.stats.rankdata(row, method="average", nan_policy=nan_policy) for row in x.double().numpy()])


@pytest.mark.parametrize("backend", _backends("cpu"))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n", SIZES)
def test_equals_scipy_on_every_row(backend, dtype, n):
    x = tied_rows(8, n, dtype)
    ranks = rank_average(x, backend=backend)
    assert ranks.dtype == dtype
    np.testing.assert_array_equal(ranks.double().numpy(), scipy_ranks(x))


@pytest.mark.parametrize("backend", _backends("cpu"))
def test_distinct_continuous_values(backend):
    x = torch.randn(4, 1000, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    np.testing.assert_array_equal(rank_average(x, backend=backend).numpy(), scipy_ranks(x))


@pytest.mark.parametrize("backend", _backends("cpu"))
@pytest.mark.parametrize("nan_policy", ["propagate", "omit"])
def test_nan_policies_match_scipy(backend, nan_policy):
    x = tied_rows(5, 127, torch.float64, seed=3)
    x[0, [3, 50, 51]] = float("nan")
    x[2, :] = float("nan")
    x[4, 126] = float("nan")
    ranks = rank_average(x, nan_policy=nan_policy, backend=backend)
    np.testing.assert_array_equal(ranks.numpy(), scipy_ranks(x, nan_policy))


@pytest.mark.parametrize("backend", _backends("cpu"))
def test_infinities_and_signed_zeros(backend):
    x = torch.tensor([[float("inf"), -0.0, 0.0, -float("inf"), 1.0, float("inf"), -0.0]])
    np.testing.assert_array_equal(rank_average(x, backend=backend).double().numpy(), scipy_ranks(x))


def test_backends_agree_on_many_rows():
    x = tied_rows(300, 257, torch.float32, seed=7)
    torch.testing.assert_close(rank_average(x, backend="extension"), rank_average_ref(x), rtol=0, atol=0)


def test_leading_dimensions_are_rows():
    x = tied_rows(6, 33, torch.float64).reshape(2, 3, 33)
    ranks = rank_average(x)
    assert ranks.shape == x.shape
    np.testing.assert_array_equal(ranks.reshape(6, 33).numpy(), scipy_ranks(x.reshape(6, 33)))


def test_non_contiguous_input():
    x = tied_rows(40, 64, torch.float32).t()  # a transposed view
    np.testing.assert_array_equal(rank_average(x).double().numpy(), scipy_ranks(x.contiguous()))


def test_half_precision_is_ranked_in_float32():
    x = tied_rows(3, 500, torch.float32).to(torch.bfloat16)
    ranks = rank_average(x)
    assert ranks.dtype == torch.float32
    np.testing.assert_array_equal(ranks.double().numpy(), scipy_ranks(x.float()))


def test_empty_rows():
    assert rank_average(torch.empty(0, 5)).shape == (0, 5)
    assert rank_average(torch.empty(3, 0)).shape == (3, 0)


@pytest.mark.parametrize(
    "bad, kwargs, error, message",
    [
        ([1.0, 2.0], {}, TypeError, "x must be a torch.Tensor"),
        (torch.tensor([1 + 2j, 2]), {}, TypeError, "real numbers"),
        (torch.tensor(1.0), {}, ValueError, "at least one dimension"),
        (torch.ones(3), {"nan_policy": "raise"}, ValueError, "nan_policy"),
        (torch.ones(3), {"backend": "cuda-magic"}, ValueError, "backend='cuda-magic'"),
    ],
)
def test_bad_arguments_are_named(bad, kwargs, error, message):
    with pytest.raises(error, match=message):
        rank_average(bad, **kwargs)


def test_environment_variable_selects_backend(monkeypatch):
    from fastclip.ops.rank_average import _DISPATCH

    monkeypatch.setenv("FASTCLIP_BACKEND", "reference")
    assert _DISPATCH.choose("cpu").name == "reference"
    monkeypatch.setenv("FASTCLIP_BACKEND", "triton")  # a backend this op does not have: auto decides
    assert _DISPATCH.choose("cpu").name == "extension"
    assert _DISPATCH.choose("cpu", backend="reference").name == "reference"  # the argument wins over the variable


def test_without_the_extension_import_works_and_auto_falls_back():
    # A fresh interpreter in which fastclip._C cannot be imported, as on a machine where the build failed.
    code = """
import sys
sys.modules["fastclip._C"] = None
import torch
import fastclip, fastclip.info
from fastclip.ops import rank_average
from fastclip.ops._dispatch import BackendUnavailableError
print(rank_average(torch.tensor([[3.0, 1.0, 3.0]])).tolist())
try:
    rank_average(torch.ones(2), backend="extension")
except BackendUnavailableError as exc:
    print("ERROR:", exc)
print(fastclip.info.report())
"""
    result = run_python(["-c", code])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "[[2.5, 1.0, 2.5]]"
    assert "pip install --no-build-isolation" in lines[1] and "did not load" in lines[1]
    assert "extension     NOT loaded" in result.stdout
    assert "rank_average" in result.stdout and "cpu: reference" in result.stdout


@pytest.mark.needs_cuda
@pytest.mark.parametrize("nan_policy", ["propagate", "omit"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n", SIZES)
def test_cuda_kernel_equals_scipy(n, dtype, nan_policy):
    x = tied_rows(16, n, dtype)
    if n > 3:
        x[3, 1] = float("nan")
    ranks = rank_average(x.cuda(), nan_policy=nan_policy, backend="extension")
    np.testing.assert_array_equal(ranks.cpu().double().numpy(), scipy_ranks(x, nan_policy))

