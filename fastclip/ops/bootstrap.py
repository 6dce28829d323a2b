"""Confidence intervals and tests for correlations: paired bootstrap (percentile and BCa), a paired bootstrap test
of two dependent correlations, and a permutation test.

- `bootstrap_ci(x, y, method=...)`: resample the n (x, y) pairs with replacement R times (10,000 by default) and
  report the percentile or BCa interval of Pearson, Spearman or Kendall tau-b (scipy.stats.bootstrap's
  definitions, paired=True: the same z0 with half-counted ties, the jackknife acceleration, linear percentiles).
- `paired_difference_test(x1, x2, y, ...)`: r(x1, y) - r(x2, y) for two dependent correlations on the same human
  scores (e.g. epoch 3 vs epoch 30 against the same MOS): both are recomputed on the same resamples; the interval is
  that of the difference and the two-sided p-value that of the bootstrap test centred at the observed difference,
  p = (1 + #{|d* - d| >= |d|}) / (R + 1) (Hall & Wilson 1991).
- `permutation_test(x, y, ...)`: the p-value of one correlation against random pairings of x with y,
  p = (1 + #{r* at least as extreme as r}) / (P + 1), with scipy.stats.permutation_test's tolerance for ties.

Randomness is counter-based (fastclip/ops/_philox.py): resample r is a pure function of (seed, r), so results do not
depend on the device, the backend or the chunking. Resample r draws index j as Philox word j of counter block
(seed, r) mapped to [0, n). Every row of a batch is resampled with the same draws, so differences between rows
(layers, epochs) are paired.

A resample never needs to be built: it is its count vector w (how often each pair was drawn). Pearson is then a
weighted correlation, Spearman the weighted correlation of average ranks read off cumulative counts along the
order sorted once (no re-sort), Kendall a weighted pair count (metrics.md).

Backends of the resampled statistics (backend=...):
  "extension": C++ on the CPU, resamples in parallel, O(n) per resample (O(n log n) for Kendall), no R x n matrix.
  "torch":     the count matrix in torch ops on any device (the CUDA path): weighted moments by matrix products,
               ranks by cumulative sums and gathers, Kendall by w^T sign(dx) sign(dy) w as a matrix product.
  "reference": builds every resample by indexing and calls the *_ref correlations (the oracle; slow).

NaN policy: "propagate" gives NaN for rows with a NaN; "omit" drops the incomplete pairs of such a row and
resamples its m complete pairs (the draws are then those of an m-pair bootstrap).
"""

from __future__ import annotations

import statistics
import warnings
from dataclasses import dataclass
from typing import Callable

import torch

from fastclip import _ext
from fastclip.ops import _philox
from fastclip.ops._dispatch import Backend, OpDispatcher, extension_backend
from fastclip.ops.correlation import (
    NAN_POLICIES,
    ConstantInputWarning,
    DegenerateInputWarning,
    PairedRows,
    kendall_tau_b,
    kendall_tau_b_ref,
    pearson,
    pearson_ref,
    prepare_pairs,
    scaled_to_unit_magnitude,
    sign_of_difference,
    spearman,
    spearman_ref,
)
from fastclip.ops.rank_average import rank_average

METHODS = ("pearson", "spearman", "kendall")
INTERVALS = ("percentile", "bca")
ALTERNATIVES = ("two-sided", "greater", "less")
_KIND = {"pearson": 0, "spearman": 1, "kendall": 2}
_STATISTIC = {"pearson": pearson, "spearman": spearman, "kendall": kendall_tau_b}
_STATISTIC_REF = {"pearson": pearson_ref, "spearman": spearman_ref, "kendall": kendall_tau_b_ref}
# Elements per chunk of the torch and reference paths (bounds their float64 temporaries to ~130 MB each).
_CHUNK_ELEMENTS = 1 << 24


class DegenerateBootstrapWarning(RuntimeWarning):
    """Some resampled statistics were undefined (e.g. a resample of tied pairs), so an interval is NaN."""


@dataclass(frozen=True)
class BootstrapResult:
    statistic: torch.Tensor  # (...,) the correlation of all pairs
    low: torch.Tensor  # (...,) the interval
    high: torch.Tensor
    standard_error: torch.Tensor  # (...,) standard deviation of the bootstrap distribution (ddof 1)
    distribution: torch.Tensor  # (..., resamples)
    method: str
    interval: str
    confidence: float


@dataclass(frozen=True)
class PairedDifferenceResult:
    difference: torch.Tensor  # (...,) r(x1, y) - r(x2, y)
    low: torch.Tensor
    high: torch.Tensor
    pvalue: torch.Tensor  # (...,) two-sided, H0: the two correlations are equal
    standard_error: torch.Tensor
    distribution: torch.Tensor  # (..., resamples) bootstrap differences
    method: str
    interval: str
    confidence: float


@dataclass(frozen=True)
class PermutationResult:
    statistic: torch.Tensor
    pvalue: torch.Tensor
    null_distribution: torch.Tensor  # (..., permutations)
    method: str
    alternative: str


# ------------------------------------------------------------------------------------------------- resamples


def resample_indices(seed: int, first: int, count: int, n: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Indices drawn by resamples first .. first + count - 1: int64 (count, n) in [0, n)."""
    device = torch.device(device)
    resamples = torch.arange(first, first + count, dtype=torch.int64, device=device)
    zero = torch.zeros(1, dtype=torch.int64, device=device)
    words = _philox.random_uint32(seed, _philox.STREAM_BOOTSTRAP, zero, resamples, n)[0]
    return _philox.uniform_index(words, n)


def resample_counts(seed: int, first: int, count: int, n: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """How often each pair is drawn by those resamples: float64 (count, n), rows summing to n."""
    indices = resample_indices(seed, first, count, n, device)
    counts = torch.zeros((count, n), dtype=torch.float64, device=indices.device)
    return counts.scatter_add_(1, indices, torch.ones_like(counts))


def _jackknife_counts(first: int, count: int, n: int, device) -> torch.Tensor:
    counts = torch.ones((count, n), dtype=torch.float64, device=device)
    rows = torch.arange(count, device=device)
    counts[rows, rows + first] = 0.0
    return counts


def _jackknife_indices(first: int, count: int, n: int, device) -> torch.Tensor:
    """Sample r of the jackknife keeps every pair but r: int64 (count, n - 1)."""
    kept = torch.arange(n - 1, device=device).view(1, -1)
    left_out = torch.arange(first, first + count, device=device).view(-1, 1)
    return kept + (kept >= left_out).long()


# --------------------------------------------------------------------------------------- backend: reference


def _distribution_reference(x, y, method: str, resamples: int, seed: int, jackknife: bool) -> torch.Tensor:
    """Build each resample by indexing and compute the *_ref correlation on it (the oracle)."""
    rows, n = max(x.shape[0], y.shape[0]), x.shape[1]
    draws = n if jackknife else resamples
    out = torch.full((rows, draws), float("nan"), dtype=torch.float64, device=x.device)
    if jackknife and n < 3:
        return out  # one pair left: no correlation
    chunk = max(1, _CHUNK_ELEMENTS // (rows * n * (n if method == "kendall" else 1)))
    statistic = _STATISTIC_REF[method]
    for first in range(0, draws, chunk):
        count = min(chunk, draws - first)
        if jackknife:
            indices = _jackknife_indices(first, count, n, x.device)
        else:
            indices = resample_indices(seed, first, count, n, x.device)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConstantInputWarning)
            out[:, first : first + count] = statistic(x[:, indices], y[:, indices])
    return out


# ------------------------------------------------------------------------------------------- backend: torch


def _weighted_pearson(x, y, counts) -> torch.Tensor:
    """Pearson's r of every row of x (B, n) with y (B | 1, n), weighted by every count row (c, n): (B, c)."""
    total = counts.sum(-1)
    # Centring at the full-sample mean first keeps the one-pass moments below free of cancellation.
    x = x - x.mean(-1, keepdim=True)
    y = y - y.mean(-1, keepdim=True)
    weights = counts.T
    sum_x, sum_y = x @ weights, y @ weights
    sxx = (x * x) @ weights - sum_x * sum_x / total
    syy = (y * y) @ weights - sum_y * sum_y / total
    sxy = (x * y) @ weights - sum_x * sum_y / total
    r = (sxy / (sxx.sqrt() * syy.sqrt())).clamp(-1.0, 1.0)
    constant = _drawn_values_equal(x, counts) | _drawn_values_equal(y, counts)
    return r.masked_fill(constant, float("nan"))


def _drawn_values_equal(values, counts) -> torch.Tensor:
    """(B, c): whether every pair drawn by a count row has the same value (smallest drawn == largest drawn)."""
    sorted_values, order = torch.sort(values, dim=-1)
    drawn = counts.unsqueeze(0).expand(values.shape[0], -1, -1).gather(
        2, order.unsqueeze(1).expand(-1, counts.shape[0], -1)
    ) > 0
    n = values.shape[-1]
    first = drawn.to(torch.int8).argmax(-1)
    last = n - 1 - drawn.flip(-1).to(torch.int8).argmax(-1)
    return sorted_values.gather(-1, first) == sorted_values.gather(-1, last)


def _weighted_ranks(values, counts) -> torch.Tensor:
    """Average ranks (B, c, n) of every row of values (B, n) in every resample (c, n): a tie group's rank is the count
    of all smaller drawn values plus (its own count + 1) / 2, read off cumulative counts along the sorted order."""
    rows, n = values.shape
    sorted_values, order = torch.sort(values, dim=-1, stable=True)
    position = torch.arange(n, device=values.device).expand(rows, n)
    starts = torch.ones_like(sorted_values, dtype=torch.bool)
    starts[:, 1:] = sorted_values[:, 1:] != sorted_values[:, :-1]
    ends = torch.ones_like(starts)
    ends[:, :-1] = starts[:, 1:]
    group_start = torch.where(starts, position, 0).cummax(-1).values
    group_end = torch.where(ends, position, n).flip(-1).cummin(-1).values.flip(-1)
    shape = (rows, counts.shape[0], n)
    sorted_counts = counts.unsqueeze(0).expand(shape).gather(2, order.unsqueeze(1).expand(shape))
    cumulative = torch.nn.functional.pad(sorted_counts.cumsum(-1), (1, 0))
    before = cumulative.gather(2, group_start.unsqueeze(1).expand(shape))
    through = cumulative.gather(2, (group_end + 1).unsqueeze(1).expand(shape))
    ranks_sorted = before + (through - before + 1) / 2
    return torch.empty_like(ranks_sorted).scatter_(2, order.unsqueeze(1).expand(shape), ranks_sorted)


def _weighted_spearman(x, y, counts) -> torch.Tensor:
    rank_x, rank_y = _weighted_ranks(x, counts), _weighted_ranks(y, counts)
    # Ranks are half-integers with weighted mean (N + 1) / 2, so these sums are exact and a zero means constant.
    centre = ((counts.sum(-1) + 1) / 2).view(1, -1, 1)
    dx, dy = rank_x - centre, rank_y - centre
    sxx, syy, sxy = (counts * dx * dx).sum(-1), (counts * dy * dy).sum(-1), (counts * dx * dy).sum(-1)
    r = (sxy / (sxx.sqrt() * syy.sqrt())).clamp(-1.0, 1.0)
    return r.masked_fill((sxx == 0) | (syy == 0), float("nan"))


def _dense_group_ids(values: torch.Tensor) -> torch.Tensor:
    return torch.unique(values, return_inverse=True)[1]


def _grouped_pairs(counts, group_ids) -> torch.Tensor:
    """Sum over groups of C(W_g, 2), W_g the drawn count of the group: (c,)."""
    groups = int(group_ids.max()) + 1
    totals = counts.new_zeros((counts.shape[0], groups)).index_add_(1, group_ids, counts)
    return (totals * (totals - 1) / 2).sum(-1)


def _weighted_kendall(x, y, counts) -> torch.Tensor:
    """Kendall tau-b of each row under each resample: s = concordant - discordant = w^T A w / 2 with
    A_ij = sign(dx) sign(dy) (zero on the diagonal and on ties, so joint ties need no count of their own); ties in x
    and in y are C(W_g, 2) over the drawn counts of each tie group. All integers below 2**53, so exact."""
    rows = max(x.shape[0], y.shape[0])
    total = counts.sum(-1)
    pairs = total * (total - 1) / 2
    out = torch.empty((rows, counts.shape[0]), dtype=torch.float64, device=counts.device)
    for b in range(rows):
        xb, yb = x[min(b, x.shape[0] - 1)], y[min(b, y.shape[0] - 1)]
        x_signs = sign_of_difference(xb.view(-1, 1), xb.view(1, -1))
        signs = (x_signs * sign_of_difference(yb.view(-1, 1), yb.view(1, -1))).double()
        s = ((counts @ signs) * counts).sum(-1) / 2
        ties_x = _grouped_pairs(counts, _dense_group_ids(xb))
        ties_y = _grouped_pairs(counts, _dense_group_ids(yb))
        tau = (s / (pairs - ties_x).sqrt() / (pairs - ties_y).sqrt()).clamp(-1.0, 1.0)
        out[b] = tau.masked_fill((ties_x == pairs) | (ties_y == pairs), float("nan"))
    return out


_WEIGHTED = {"pearson": _weighted_pearson, "spearman": _weighted_spearman, "kendall": _weighted_kendall}


def _distribution_torch(x, y, method: str, resamples: int, seed: int, jackknife: bool) -> torch.Tensor:
    rows, n = max(x.shape[0], y.shape[0]), x.shape[1]
    draws = n if jackknife else resamples
    out = torch.empty((rows, draws), dtype=torch.float64, device=x.device)
    chunk = max(1, _CHUNK_ELEMENTS // (rows * n))
    for first in range(0, draws, chunk):
        count = min(chunk, draws - first)
        if jackknife:
            counts = _jackknife_counts(first, count, n, x.device)
        else:
            counts = resample_counts(seed, first, count, n, x.device)
        out[:, first : first + count] = _WEIGHTED[method](x, y, counts)
    return out


def _distribution_extension(x, y, method: str, resamples: int, seed: int, jackknife: bool) -> torch.Tensor:
    return _ext.op("bootstrap_correlation")(x, y, _KIND[method], resamples, seed, jackknife)


_DISPATCH = OpDispatcher(
    "bootstrap",
    backends=[
        extension_backend("bootstrap_correlation", _distribution_extension),
        Backend("torch", _distribution_torch),
        Backend("reference", _distribution_reference),
    ],
    auto_order={"cpu": ("extension", "torch"), "cuda": ("torch",)},
)


def bootstrap_distribution(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    method: str = "spearman",
    resamples: int = 10_000,
    seed: int = 0,
    jackknife: bool = False,
    backend: str = "auto",
) -> torch.Tensor:
    """The correlation of each row of x (B, n) with y (B | 1, n), both float64 without NaN, on each bootstrap
    resample (B, resamples), or on each leave-one-out sample (B, n) with jackknife=True."""
    _check_draws(method, resamples, "resamples", seed)
    if method == "pearson":  # the resamples' moments stay in range at any scale (see fastclip.ops.correlation)
        x, y = scaled_to_unit_magnitude(x), scaled_to_unit_magnitude(y)
    return _DISPATCH.choose(x.device, backend).run(x, y, method, resamples, seed, jackknife)


# ---------------------------------------------------------------------------------------------- intervals


def _percentile_rows(sorted_values: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Linear-interpolated quantile q (B,) of each sorted row (numpy's default method)."""
    last = sorted_values.shape[-1] - 1
    position = (q * last).clamp(0, last)
    lower = position.floor().long().clamp(0, last)
    upper = (lower + 1).clamp(max=last)
    low_value = sorted_values.gather(-1, lower.view(-1, 1)).squeeze(-1)
    high_value = sorted_values.gather(-1, upper.view(-1, 1)).squeeze(-1)
    result = low_value + (position - lower) * (high_value - low_value)
    return result.masked_fill(torch.isnan(q), float("nan"))


def _interval(statistic, boot, jack, interval: str, confidence: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounds (B,) of the percentile or BCa interval (scipy.stats.bootstrap's formulas) of boot (B, R); BCa needs
    the statistic (B,) and the jackknife statistics (B, n)."""
    alpha = (1 - confidence) / 2
    rows = boot.shape[0]
    if interval == "percentile":
        q_low = torch.full((rows,), alpha, dtype=torch.float64, device=boot.device)
        q_high = torch.full((rows,), 1 - alpha, dtype=torch.float64, device=boot.device)
    else:
        theta = statistic.view(-1, 1)
        share_below = ((boot < theta).sum(-1) + (boot <= theta).sum(-1)).double() / (2 * boot.shape[-1])
        z0 = torch.special.ndtri(share_below)
        spread = jack.mean(-1, keepdim=True) - jack
        acceleration = (spread**3).sum(-1) / (6 * (spread**2).sum(-1) ** 1.5)
        z_alpha = statistics.NormalDist().inv_cdf(alpha)
        q_low = torch.special.ndtr(z0 + (z0 + z_alpha) / (1 - acceleration * (z0 + z_alpha)))
        q_high = torch.special.ndtr(z0 + (z0 - z_alpha) / (1 - acceleration * (z0 - z_alpha)))
    sorted_boot = torch.sort(boot, dim=-1).values
    undefined = torch.isnan(boot).any(-1) | torch.isnan(statistic)
    if jack is not None:
        undefined |= torch.isnan(jack).any(-1)
    low = _percentile_rows(sorted_boot, q_low).masked_fill(undefined, float("nan"))
    high = _percentile_rows(sorted_boot, q_high).masked_fill(undefined, float("nan"))
    return low, high


# ---------------------------------------------------------------------------------------- shared plumbing


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def _check_count(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 2**32:
        raise ValueError(f"{name} must be an integer in [1, 2**32], got {value!r}")


def _check_draws(method: str, count, count_name: str, seed) -> None:
    """The arguments of a resampling run: the statistic, how many resamples or permutations, the seed."""
    _check_method(method)
    _check_count(count, count_name)
    _philox.check_seed(seed)


def _check_options(method, confidence, interval, seed, resamples) -> None:
    _check_method(method)
    if not isinstance(confidence, (int, float)) or not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if interval not in INTERVALS:
        raise ValueError(f"interval must be one of {INTERVALS}, got {interval!r}")
    _philox.check_seed(seed)
    _check_count(resamples, "resamples")


def _by_complete_rows(
    pairs: PairedRows, compute: Callable[[torch.Tensor, torch.Tensor], dict], widths: dict[str, int], min_complete: int
) -> dict:
    """Run compute(x (B, n), y (B | 1, n)) -> {name: (B, widths[name])} on the rows without NaN in one batch, and
    under nan_policy "omit" on each row with NaN alone, restricted to its complete pairs (when at least
    `min_complete` remain). Every other row is NaN."""
    rows = pairs.rows
    device = pairs.x.device
    results = {
        name: torch.full((rows, width), float("nan"), dtype=torch.float64, device=device)
        for name, width in widths.items()
    }

    def place(part: dict, where: torch.Tensor) -> None:
        for name, value in part.items():
            results[name][where] = value

    x, y = pairs.x, pairs.y
    clean = (~pairs.nan_rows).nonzero().squeeze(-1)
    if clean.numel():
        x_clean = x if x.shape[0] == 1 else x[clean]
        y_clean = y if y.shape[0] == 1 else y[clean]
        if x_clean.shape[0] == 1 and y_clean.shape[0] == 1:
            x_clean = x_clean.expand(clean.numel(), -1)
        place(compute(x_clean, y_clean), clean)
    if pairs.nan_policy == "omit":
        for row in pairs.nan_rows.nonzero().squeeze(-1).tolist():
            x_row, y_row = x[min(row, x.shape[0] - 1)], y[min(row, y.shape[0] - 1)]
            complete = ~(torch.isnan(x_row) | torch.isnan(y_row))
            if int(complete.sum()) >= min_complete:
                part = compute(x_row[complete].view(1, -1), y_row[complete].view(1, -1))
                place(part, torch.tensor([row], device=device))
    return results


def _resampled(method: str, x, y, resamples: int, seed: int, interval: str, backend: str):
    """What an interval needs for each row of complete pairs: the statistic (B,), its bootstrap distribution
    (B, resamples) and, for BCa, its jackknife distribution (B, n) (else None)."""
    boot = bootstrap_distribution(x, y, method=method, resamples=resamples, seed=seed, backend=backend)
    theta = _statistic_rows(method, x, y).expand(boot.shape[0])
    jack = None
    if interval == "bca":
        jack = bootstrap_distribution(x, y, method=method, seed=seed, jackknife=True, backend=backend)
    return theta, boot, jack


def _statistic_rows(method: str, x, y) -> torch.Tensor:
    """The statistic of each row of complete pairs, NaN (without a second warning) where undefined."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConstantInputWarning)
        warnings.simplefilter("ignore", DegenerateInputWarning)
        return _STATISTIC[method](x, y).reshape(-1)


def _warn_if_undefined(low: torch.Tensor, statistic: torch.Tensor, name: str) -> None:
    undefined = torch.isnan(low) & ~torch.isnan(statistic)
    if bool(undefined.any()):
        warnings.warn(
            f"{name}: {int(undefined.sum())} row(s) have resamples where the correlation is undefined (e.g. all drawn "
            "pairs tied); their interval is NaN",
            DegenerateBootstrapWarning,
            stacklevel=3,
        )


def _shaped(tensor: torch.Tensor, batch_shape) -> torch.Tensor:
    return tensor.reshape(*batch_shape, *tensor.shape[1:])


def _interval_fields(low, high, boot, batch_shape, method: str, interval: str, confidence: float) -> dict:
    """The fields BootstrapResult and PairedDifferenceResult share, shaped like the batch."""
    return dict(
        low=low.reshape(batch_shape),
        high=high.reshape(batch_shape),
        standard_error=boot.std(-1).reshape(batch_shape),
        distribution=_shaped(boot, batch_shape),
        method=method,
        interval=interval,
        confidence=float(confidence),
    )


# ----------------------------------------------------------------------------------------------- public API


def bootstrap_ci(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    method: str = "spearman",
    resamples: int = 10_000,
    confidence: float = 0.95,
    interval: str = "bca",
    seed: int = 0,
    nan_policy: str = "propagate",
    backend: str = "auto",
) -> BootstrapResult:
    """Paired bootstrap confidence interval of a correlation along the last dimension (see the module docstring).

    Args:
        x, y: real tensors (..., n) on one device, leading dimensions broadcast (rows share the resamples).
        method: "pearson", "spearman" or "kendall" (tau-b).
        resamples: R; confidence: e.g. 0.95; interval: "bca" (default, as scipy) or "percentile".
        seed: integer in [0, 2**63); nan_policy: "propagate" or "omit".
        backend: "auto", "extension", "torch" or "reference" (for the resampled statistics).
    """
    _check_options(method, confidence, interval, seed, resamples)
    pairs = prepare_pairs(x, y, nan_policy, "bootstrap_ci")
    statistic = _STATISTIC[method](x, y, nan_policy=nan_policy).reshape(-1)

    def compute(xr, yr):
        theta, boot, jack = _resampled(method, xr, yr, resamples, seed, interval, backend)
        low, high = _interval(theta, boot, jack, interval, confidence)
        return {"bounds": torch.stack([low, high], dim=-1), "boot": boot}

    parts = _by_complete_rows(pairs, compute, {"bounds": 2, "boot": resamples}, min_complete=2)
    low, high = parts["bounds"].unbind(-1)
    boot = parts["boot"]
    _warn_if_undefined(low, statistic, "bootstrap_ci")
    shape = pairs.batch_shape
    return BootstrapResult(
        statistic=statistic.reshape(shape), **_interval_fields(low, high, boot, shape, method, interval, confidence)
    )


def paired_difference_test(
    x1: torch.Tensor,
    x2: torch.Tensor,
    y: torch.Tensor,
    *,
    method: str = "spearman",
    resamples: int = 10_000,
    confidence: float = 0.95,
    interval: str = "bca",
    seed: int = 0,
    nan_policy: str = "propagate",
    backend: str = "auto",
) -> PairedDifferenceResult:
    """Bootstrap test of r(x1, y) - r(x2, y) for two dependent correlations sharing y (see the module docstring).

    Args:
        x1, x2: the two predictors (..., n), e.g. model distances at two epochs; y: the shared scores (..., n).
        Under nan_policy "omit" a pair is dropped when x1, x2 or y is NaN there, so both use the same pairs.
        Other arguments as bootstrap_ci.
    """
    _check_options(method, confidence, interval, seed, resamples)
    name = "paired_difference_test"
    prepare_pairs(x1, y, nan_policy, name)
    prepare_pairs(x2, y, nan_policy, name)
    x1, x2 = torch.broadcast_tensors(x1.to(torch.float64), x2.to(torch.float64))
    incomplete = torch.isnan(x1) | torch.isnan(x2)
    x1, x2 = x1.masked_fill(incomplete, float("nan")), x2.masked_fill(incomplete, float("nan"))
    # Both predictors side by side on the last axis share one row, one NaN mask and one omission.
    y = y.to(torch.float64)
    pairs = prepare_pairs(torch.cat([x1, x2], dim=-1), torch.cat([y, y], dim=-1), nan_policy, name)

    def compute(xr, yr):
        m = xr.shape[-1] // 2
        rows = xr.shape[0]
        both = torch.cat([xr[:, :m], xr[:, m:]], dim=0)
        y_rows = yr[:, :m] if yr.shape[0] == 1 else torch.cat([yr[:, :m], yr[:, :m]], dim=0)
        theta, boot, jack = _resampled(method, both, y_rows, resamples, seed, interval, backend)
        difference_boot = boot[:rows] - boot[rows:]
        difference = theta[:rows] - theta[rows:]
        if jack is not None:
            jack = jack[:rows] - jack[rows:]
        low, high = _interval(difference, difference_boot, jack, interval, confidence)
        extreme = ((difference_boot - difference.view(-1, 1)).abs() >= difference.abs().view(-1, 1)).sum(-1)
        pvalue = ((1 + extreme).double() / (resamples + 1)).masked_fill(torch.isnan(difference), float("nan"))
        return {"summary": torch.stack([difference, low, high, pvalue], dim=-1), "boot": difference_boot}

    parts = _by_complete_rows(pairs, compute, {"summary": 4, "boot": resamples}, min_complete=4)
    difference, low, high, pvalue = parts["summary"].unbind(-1)
    _warn_if_undefined(low, difference, name)
    shape = pairs.batch_shape
    return PairedDifferenceResult(
        difference=difference.reshape(shape),
        pvalue=pvalue.reshape(shape),
        **_interval_fields(low, high, parts["boot"], shape, method, interval, confidence),
    )


def permutation_test(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    method: str = "spearman",
    permutations: int = 10_000,
    alternative: str = "two-sided",
    seed: int = 0,
    nan_policy: str = "propagate",
) -> PermutationResult:
    """p-value of a correlation against random pairings: y is permuted P times (the same permutations for every row),
    the statistic recomputed, and p = (1 + #{as extreme}) / (P + 1). "greater" tests for a positive correlation.
    Permutation k orders y by Philox keys (seed, k); the correlations use their auto backends."""
    _check_draws(method, permutations, "permutations", seed)
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {ALTERNATIVES}, got {alternative!r}")
    pairs = prepare_pairs(x, y, nan_policy, "permutation_test")
    statistic = _STATISTIC[method](x, y, nan_policy=nan_policy).reshape(-1)

    def compute(xr, yr):
        n = xr.shape[-1]
        rows = max(xr.shape[0], yr.shape[0])
        observed = _statistic_rows(method, xr, yr).expand(rows)
        if method == "spearman":  # permuting y permutes its ranks: rank once, then Pearson
            xr, yr = rank_average(xr), rank_average(yr)
        statistic_of = kendall_tau_b if method == "kendall" else pearson
        null = torch.empty((rows, permutations), dtype=torch.float64, device=xr.device)
        chunk = max(1, _CHUNK_ELEMENTS // (rows * n))
        for first in range(0, permutations, chunk):
            count = min(chunk, permutations - first)
            order = _permutation_orders(seed, first, count, n, xr.device)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConstantInputWarning)
                null[:, first : first + count] = statistic_of(xr.unsqueeze(1), yr[:, order])
        # scipy.stats.permutation_test's tolerance: null values within 100 ulp of the observed one count as ties.
        gamma = (observed * torch.finfo(torch.float64).eps * 100).abs().view(-1, 1)
        observed_column = observed.view(-1, 1)
        if alternative == "greater":
            extreme = (null >= observed_column - gamma).sum(-1)
        elif alternative == "less":
            extreme = (null <= observed_column + gamma).sum(-1)
        else:
            extreme = (null.abs() >= observed_column.abs() - gamma).sum(-1)
        pvalue = ((1 + extreme).double() / (permutations + 1)).masked_fill(torch.isnan(observed), float("nan"))
        return {"pvalue": pvalue.view(-1, 1), "null": null}

    parts = _by_complete_rows(pairs, compute, {"pvalue": 1, "null": permutations}, min_complete=2)
    shape = pairs.batch_shape
    return PermutationResult(
        statistic=statistic.reshape(shape),
        pvalue=parts["pvalue"][:, 0].reshape(shape),
        null_distribution=_shaped(parts["null"], shape),
        method=method,
        alternative=alternative,
    )


def _permutation_orders(seed: int, first: int, count: int, n: int, device) -> torch.Tensor:
    """Permutations first .. first + count - 1 of range(n): argsort of 63-bit Philox keys (collisions negligible)."""
    ids = torch.arange(first, first + count, dtype=torch.int64, device=device)
    zero = torch.zeros(1, dtype=torch.int64, device=device)
    words = _philox.random_uint32(seed, _philox.STREAM_PERMUTATION, zero, ids, 2 * n)[0]
    keys = (words[:, :n] << 31) | (words[:, n:] >> 1)
    return torch.argsort(keys, dim=-1, stable=True)


__all__ = [
    "ALTERNATIVES",
    "INTERVALS",
    "METHODS",
    "NAN_POLICIES",
    "BootstrapResult",
    "DegenerateBootstrapWarning",
    "PairedDifferenceResult",
    "PermutationResult",
    "bootstrap_ci",
    "bootstrap_distribution",
    "paired_difference_test",
    "permutation_test",
    "resample_counts",
    "resample_indices",
]
