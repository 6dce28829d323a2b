"""scipy's own test vectors for pearsonr, spearmanr, kendalltau and rankdata, on every backend that runs here.

Transcribed from scipy 1.17.1: scipy/stats/tests/test_stats.py (TestPearsonrWilkinson, TestPearsonr,
TestCorrSpearmanr, TestCorrSpearmanr2, test_kendalltau, test_kendalltau_gh18139_overflow) and
scipy/stats/tests/test_rank.py (TestRankData). The expected values are scipy's literals (most cross-checked there
with mpmath or R), with the precision each literal carries. The extreme-scale Pearson vectors (1e-245 .. 1e201) are
the ones a naive two-pass formula gets wrong. Warnings are compared with the ones scipy itself raises on the same
input (scipy is a dependency, so it runs here).

The Triton backends run the same vectors under TRITON_INTERPRET=1 (marker triton_interpret).
"""

from __future__ import annotations

import math
import random
import warnings
from dataclasses import dataclass
from itertools import combinations_with_replacement

import numpy as np
import pytest
import scipy.stats
import torch

from fastclip.ops.correlation import kendall_tau_b, pearson, spearman
from fastclip.ops.rank_average import rank_average

# The backends each op has on the CPU (the Triton ones only under the interpreter, below).
CPU_BACKENDS = {"pearson": ["reference"], "spearman": ["extension", "reference"],
                "kendall": ["extension", "merge", "reference"]}  # fmt: skip
OURS = {"pearson": pearson, "spearman": spearman, "kendall": kendall_tau_b}
SCIPYS = {
    "pearson": lambda x, y, nan_policy: scipy.stats.pearsonr(x, y).statistic,
    "spearman": lambda x, y, nan_policy: scipy.stats.spearmanr(x, y, nan_policy=nan_policy).statistic,
    "kendall": lambda x, y, nan_policy: scipy.stats.kendalltau(x, y, nan_policy=nan_policy).statistic,
}
SCIPY_WARNINGS = {"ConstantInputWarning", "NearConstantInputWarning"}
# The O(n^2) reference is the oracle for small n; the 200,000-pair vector is for the fast backends.
REFERENCE_MAX_N = 5_000

# Wilkinson's "nasty" data sets (scipy/stats/tests/test_stats.py): every correlation among them is exactly 1.
WILKINSON = {
    "X": [1, 2, 3, 4, 5, 6, 7, 8, 9],
    "BIG": [99999991, 99999992, 99999993, 99999994, 99999995, 99999996, 99999997, 99999998, 99999999],
    "LITTLE": [0.99999991, 0.99999992, 0.99999993, 0.99999994, 0.99999995, 0.99999996, 0.99999997, 0.99999998,
               0.99999999],
    "HUGE": [1e12, 2e12, 3e12, 4e12, 5e12, 6e12, 7e12, 8e12, 9e12],
    "TINY": [1e-12, 2e-12, 3e-12, 4e-12, 5e-12, 6e-12, 7e-12, 8e-12, 9e-12],
    "ROUND": [0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5, 8.5],
}  # fmt: skip


@dataclass(frozen=True)
class Vector:
    """One scipy test input: expected None means scipy checks only the warning (its value is "garbage")."""

    name: str
    x: object
    y: object
    expected: float | None
    rtol: float = 1e-13
    atol: float = 0.0
    nan_policy: str = "propagate"


def _wilkinson(method: str) -> list[Vector]:
    return [
        Vector(f"wilkinson_{a}_{b}", WILKINSON[a], WILKINSON[b], 1.0, rtol=1e-12)
        for a, b in combinations_with_replacement(WILKINSON, 2)
    ]


def _normal_draws() -> np.ndarray:
    """TestCorrSpearmanr2.test_normal_draws' and test_kendalltau's correlated normal sample."""
    rng = np.random.RandomState(7546)
    x = np.array([rng.normal(loc=1, scale=1, size=500), rng.normal(loc=1, scale=1, size=500)])
    return np.dot(np.linalg.cholesky([[1.0, 0.3], [0.3, 1.0]]), x)


def _with_last_nan() -> list[float]:
    x = list(np.arange(10.0))
    x[9] = math.nan
    return x


def _gh_8111() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.RandomState(234568)
    x = rng.rand(100)
    missing = rng.rand(100) > 0.7
    with_nans = x.copy()
    with_nans[missing] = np.nan
    return x > 0.5, x, with_nans


def _gh_6061() -> tuple[list[float], list[float]]:
    x = list(range(2000))
    y = list(range(2000))
    y[0], y[9] = y[9], y[0]
    y[10], y[434] = y[434], y[10]
    y[435], y[1509] = y[1509], y[435]
    return x + [math.nan], y + [3.0]


def _gh_18139() -> tuple[list[int], list[int]]:
    random.seed(6272161)
    classes = [1, 2, 3, 4, 5, 6, 7]
    return random.choices(classes, k=200_000), random.choices(classes, k=200_000)


def _swapped(values: np.ndarray, *pairs: tuple[int, int]) -> np.ndarray:
    values = values.copy()
    for i, j in pairs:
        values[i], values[j] = values[j], values[i]
    return values


def _pearson_vectors() -> list[Vector]:
    tiny = np.spacing(2.0)
    return _wilkinson("pearson") + [
        Vector("r_almost_exactly_pos1", np.arange(3.0), np.arange(3.0), 1.0, rtol=0, atol=1e-15),
        Vector("r_almost_exactly_neg1", np.arange(3.0), -np.arange(3.0), -1.0, rtol=0, atol=1e-15),
        Vector("basic", [-1, 0, 1], [0, 0, 3], 3**0.5 / 2),
        Vector("constant_input", [0.667, 0.667, 0.667], [0.123, 0.456, 0.789], math.nan),
        Vector("near_constant_input", [2, 2, 2 + tiny], [3, 3, 3 + 6 * np.spacing(3.0)], None),
        Vector(
            "very_small_input_values", [0.004434375, 0.004756007, 0.003911996, 0.0038005, 0.003409971],
            [2.48e-188, 7.41e-181, 4.09e-208, 2.08e-223, 2.66e-245], 0.7272930540750450, rtol=1e-14,
        ),  # fmt: skip
        Vector("very_large_input_values", 1e90 * np.array([0, 0, 0, 1, 1, 1, 1.0]), 1e90 * np.arange(7.0),
               0.8660254037844386, rtol=1e-14),  # fmt: skip
        Vector("extremely_large_input_values", [2.3e200, 4.5e200, 6.7e200, 8e200],
               [1.2e199, 5.5e200, 3.3e201, 1.0e200], 0.351312332103289, rtol=1e-14),  # fmt: skip
        Vector("length_two_pos1", [1.0, 2.0], [3.0, 5.0], 1.0, rtol=0),
        Vector("length_two_neg1", [2.0, 1.0], [3.0, 5.0], -1.0, rtol=0),
        Vector("length_two_constant_input", [0.667, 0.667], [0.123, 0.456], math.nan),
    ]


def _spearman_vectors() -> list[Vector]:
    draws = _normal_draws()
    boolean, floats, with_nans = _gh_8111()
    x_6061, y_6061 = _gh_6061()
    zero_to_five = np.arange(6.0)
    shuffled = np.array([0, 1, 2, 3, 5, 4.0])
    constant_y = [0, 0.009783728115345005, 0, 0, 0.0019759230121848587, 0.0007535430349118562,
                  0.0002661781514710257, 0, 0, 0.0007835762419683435]  # fmt: skip
    gh_9103 = np.array([[np.nan, 3.0, 4.0, 5.0, 5.1, 6.0, 9.2], [5.0, np.nan, 4.1, 4.8, 4.9, 5.0, 4.1],
                        [0.5, 4.0, 7.1, 3.8, 8.0, 5.1, 7.6]])  # fmt: skip
    return _wilkinson("spearman") + [
        Vector("nan_policy_propagate", _with_last_nan(), _with_last_nan(), math.nan),
        Vector("nan_policy_omit", _with_last_nan(), _with_last_nan(), 1.0, nan_policy="omit"),
        Vector("3cols_x1_x2", zero_to_five, -zero_to_five, -1.0),
        Vector("3cols_x1_x3", zero_to_five, shuffled, 0.94285714, rtol=1e-7),
        Vector("3cols_x2_x3", -zero_to_five, shuffled, -0.94285714, rtol=1e-7),
        Vector("gh_9103_01", gh_9103[0], gh_9103[1], 0.2051957, rtol=1e-6, nan_policy="omit"),
        Vector("gh_9103_02", gh_9103[0], gh_9103[2], 0.4857143, rtol=1e-6, nan_policy="omit"),
        Vector("gh_9103_12", gh_9103[1], gh_9103[2], -0.4707919, rtol=1e-6, nan_policy="omit"),
        Vector("gh_9103_propagate", gh_9103[0], gh_9103[2], math.nan),
        Vector("gh_8111_bool_float", boolean, floats, 0.865895477, rtol=1e-7, nan_policy="omit"),
        Vector("gh_8111_bool_nan", boolean, with_nans, 0.866100381, rtol=1e-7, nan_policy="omit"),
        Vector("gh_8111_int_nan", boolean.astype(np.int32), with_nans, 0.866100381, rtol=1e-7, nan_policy="omit"),
        Vector("vs_r", [1, 2, 3, 4, 5], [5, 6, 7, 8, 7], 0.82078268166812329),
        Vector("normal_draws", draws[0], draws[1], 0.28659685838743354),
        Vector("corr_1", [1, 1, 2], [1, 1, 2], 1.0),
        Vector("gh_issue_6061_windows_overflow", x_6061, y_6061, 0.998, rtol=0, atol=1.5e-7, nan_policy="omit"),
        Vector("tie0_both", [2, 2, 2], [2, 2, 2], math.nan),
        Vector("tie0_y", [2, 0, 2], [2, 2, 2], math.nan),
        Vector("tie0_x", [2, 2, 2], [2, 0, 2], math.nan),
        # test_tie1: spearmanr equals pearsonr of the average ranks [1, 2, 3, 4] and [1, 2.5, 2.5, 4].
        Vector("tie1", [1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 2.0, 3.0], 0.9486832980505138),
        Vector("gh_11111", [1.0] * 10, constant_y, math.nan),
    ]


def _kendall_vectors() -> list[Vector]:
    draws = _normal_draws()
    x_18139, y_18139 = _gh_18139()
    ten = np.arange(10)
    up = [ten, _swapped(ten, (1, 2)), _swapped(ten, (1, 2), (5, 6))]
    down = [ten[::-1], _swapped(ten[::-1], (1, 2)), _swapped(ten[::-1], (1, 2), (5, 6))]
    return [
        Vector("no_ties_zero_8", [5, 2, 1, 3, 6, 4, 7, 8], [5, 2, 6, 3, 1, 8, 7, 4], 0.0, atol=1e-15),
        Vector("no_ties_zero_9", [0, 5, 2, 1, 3, 6, 4, 7, 8], [5, 2, 0, 6, 3, 1, 8, 7, 4], 0.0, atol=1e-15),
        Vector("no_ties_near_zero_a", [5, 2, 1, 3, 6, 4, 7], [5, 2, 6, 3, 1, 7, 4], -0.14285714286, rtol=1e-10),
        Vector("no_ties_near_zero_b", [2, 1, 3, 6, 4, 7, 8], [2, 6, 3, 1, 8, 7, 4], 0.047619047619, rtol=1e-10),
        Vector("identity", ten, up[0], 1.0),
        Vector("one_swap", ten, up[1], 0.9555555555555556),
        Vector("two_swaps", ten, up[2], 0.9111111111111111),
        Vector("reversed", ten, down[0], -1.0),
        Vector("reversed_one_swap", ten, down[1], -0.9555555555555556),
        Vector("reversed_two_swaps", ten, down[2], -0.9111111111111111),
        Vector("kendall_1970_ties", [1, 2, 2, 4, 4, 6, 6, 8, 9, 9], [1, 2, 4, 4, 4, 4, 8, 8, 8, 10], 0.85895569,
               rtol=1e-7),  # fmt: skip
        Vector("some_ties_vs_r", [12, 2, 1, 12, 2], [1, 4, 7, 1, 0], -0.47140452079103173),
        Vector("only_ties_both", [2, 2, 2], [2, 2, 2], math.nan),
        Vector("only_ties_y", [2, 0, 2], [2, 2, 2], math.nan),
        Vector("only_ties_x", [2, 2, 2], [2, 0, 2], math.nan),
        Vector("larger_arrays", draws[0], draws[1], 0.19291382765531062),
        Vector("tau_b_is_1", [1, 1, 2], [1, 1, 2], 1.0),
        Vector("nan_policy_propagate", _with_last_nan(), _with_last_nan(), math.nan),
        Vector("nan_policy_omit", _with_last_nan(), _with_last_nan(), 1.0, nan_policy="omit"),
        Vector("gh18139_overflow", x_18139, y_18139, 0.0011816493905730343, rtol=1e-7),
    ]


VECTORS = {"pearson": _pearson_vectors(), "spearman": _spearman_vectors(), "kendall": _kendall_vectors()}


def _as_tensor(values) -> torch.Tensor:
    array = np.array(values)  # a copy: torch takes no negative strides (ten[::-1])
    return torch.from_numpy(array.astype(np.float64) if array.dtype.kind not in "bi" else array)


def _scipy_warnings(method: str, vector: Vector) -> set[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        SCIPYS[method](vector.x, vector.y, vector.nan_policy)
    return {w.category.__name__ for w in caught} & SCIPY_WARNINGS


def _check(method: str, vector: Vector, backend: str) -> None:
    x, y = _as_tensor(vector.x), _as_tensor(vector.y)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = OURS[method](x, y, nan_policy=vector.nan_policy, backend=backend).item()
    ours = {w.category.__name__ for w in caught} & SCIPY_WARNINGS
    assert ours == _scipy_warnings(method, vector), f"{vector.name}: warnings {ours}"
    if vector.expected is None:
        return
    if math.isnan(vector.expected):
        assert math.isnan(value), f"{vector.name}: {value} instead of NaN"
    else:
        assert value == pytest.approx(vector.expected, rel=vector.rtol, abs=vector.atol), vector.name


def _cases(backends: dict[str, list[str]]):
    for method, vectors in VECTORS.items():
        for backend in backends.get(method, []):
            for vector in vectors:
                if backend == "reference" and method == "kendall" and len(vector.x) > REFERENCE_MAX_N:
                    continue
                yield pytest.param(method, vector, backend, id=f"{method}-{backend}-{vector.name}")


@pytest.mark.parametrize("method, vector, backend", list(_cases(CPU_BACKENDS)))
def test_scipy_vector(method, vector, backend):
    _check(method, vector, backend)


@pytest.mark.triton_interpret
@pytest.mark.parametrize("method, vector, backend", list(_cases({"pearson": ["triton"], "kendall": ["triton"]})))
def test_scipy_vector_triton_interpreter(method, vector, backend):
    if len(vector.x) > REFERENCE_MAX_N:
        pytest.skip("the interpreter runs the tiled O(n^2) count in numpy: too slow at n = 200,000")
    _check(method, vector, backend)


def test_near_constant_warning_is_scipys_test_not_a_guess():
    """scipy warns when ||x - mean|| < eps**0.75 |mean|: a spread just above that line does not warn, just below does."""
    threshold = np.finfo(np.float64).eps ** 0.75
    y = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    for spread, warns in ((4 * threshold, False), (threshold / 4, True)):
        x = torch.tensor([1.0, 1.0, 1.0 + spread * 1.5], dtype=torch.float64)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pearson(x, y)
            scipy.stats.pearsonr(x.numpy(), y.numpy())
        names = [w.category.__name__ for w in caught]
        assert names.count("NearConstantInputWarning") == (2 if warns else 0), (spread, names)


# ------------------------------------------------------------------------------------------------ rankdata

RANKDATA_VECTORS = [
    ("list", [40, 10, 30, 10, 50], [4.0, 1.5, 3.0, 1.5, 5.0]),
    ("basic", [100, 10, 50], [3.0, 1.0, 2.0]),
    ("basic_ties", [20, 20, 20, 10, 10, 10], [5.0, 5.0, 5.0, 2.0, 2.0, 2.0]),
    ("one", [100], [1.0]),
    ("all_tied", [100, 100, 100], [2.0, 2.0, 2.0]),
    ("no_ties", [100, 300, 200], [1.0, 3.0, 2.0]),
    ("one_tie", [100, 200, 300, 200], [1.0, 2.5, 4.0, 2.5]),
    ("two_ties", [100, 200, 300, 200, 100], [1.5, 3.5, 5.0, 3.5, 1.5]),
    ("large_int", [2**60, 2**60 + 1], [1.0, 2.0]),
    ("large_int_negative", [2**60, -(2**60) + 1], [2.0, 1.0]),
    ("nan_policy_propagate", [0, 2, 3, -2, math.nan, math.nan], [math.nan] * 6),
]


@pytest.mark.parametrize("backend", ["extension", "reference"])
@pytest.mark.parametrize("name, values, expected", RANKDATA_VECTORS, ids=[v[0] for v in RANKDATA_VECTORS])
def test_rankdata_vector(name, values, expected, backend):
    ranks = rank_average(_as_tensor(values), backend=backend).double()
    torch.testing.assert_close(ranks, torch.tensor(expected, dtype=torch.float64), equal_nan=True, rtol=0, atol=0)
    assert np.array_equal(ranks.numpy(), scipy.stats.rankdata(values), equal_nan=True)


@pytest.mark.parametrize("backend", ["extension", "reference"])
def test_rankdata_axis_and_nan_rows(backend):
    """TestRankData.test_axis (axis=1) and test_nan_policy_propagate (2-d, axis=1)."""
    ranks = rank_average(torch.tensor([[0, 2, 1], [4, 2, 2]]), backend=backend)
    torch.testing.assert_close(ranks, torch.tensor([[1.0, 3.0, 2.0], [3.0, 1.5, 1.5]], dtype=ranks.dtype))
    data = torch.tensor([[0, math.nan, 3], [4, 2, math.nan], [1, 2, 2]], dtype=torch.float64)
    expected = torch.tensor([[math.nan] * 3, [math.nan] * 3, [1, 2.5, 2.5]], dtype=torch.float64)
    torch.testing.assert_close(rank_average(data, backend=backend), expected, equal_nan=True)


@pytest.mark.parametrize("backend", ["extension", "reference"])
@pytest.mark.parametrize("n", [10_000, 100_000, 1_000_000])
def test_rankdata_big_tie(n, backend):
    ranks = rank_average(torch.ones(n, dtype=torch.float64), backend=backend)
    assert bool((ranks == 0.5 * (n + 1)).all())


@pytest.mark.parametrize("backend", ["extension", "reference"])
def test_rankdata_nan_policy_omit_3d(backend):
    """TestRankData.test_nan_policy_omit_3d along the last axis, with scipy's rankdata as the oracle."""
    rng = np.random.RandomState(23983242)
    a = rng.random(size=(20, 21, 22))
    a[rng.random(size=a.shape) < 0.4] = np.nan
    a[rng.random(size=a.shape) < 0.1] = -np.inf
    expected = scipy.stats.rankdata(a, axis=-1, nan_policy="omit")
    ranks = rank_average(torch.from_numpy(a), nan_policy="omit", backend=backend)
    assert np.array_equal(ranks.numpy(), expected, equal_nan=True)
