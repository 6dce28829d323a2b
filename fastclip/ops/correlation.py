"""Pearson, Spearman and Kendall tau-b correlations of many rows at once, as scipy.stats computes them.

`pearson(x, y)`, `spearman(x, y)` and `kendall_tau_b(x, y)` correlate x and y along their last dimension and
broadcast over the leading ones, e.g. 24 layers x 10,125 model distances against one vector of 10,125 human
scores: x (24, 10125), y (10125,) -> (24,). Results are float64 and signed (take abs() to report |rho|), equal to
scipy.stats.pearsonr / spearmanr / kendalltau(variant="b") to ~1e-15.

NaN policy (`nan_policy`):
  "propagate" (default, as scipy): a row with a NaN in x or y gives NaN.
  "omit": pairs with a NaN in x or y are dropped, row by row (scipy's nan_policy="omit"; for Pearson, what scipy
          computes on the complete pairs).
Degenerate input: a row whose x or y is constant (over the pairs used), or that keeps fewer than 2 pairs, gives NaN
with a ConstantInputWarning (Pearson, Spearman) / DegenerateInputWarning, as scipy; Kendall's constant rows give NaN
silently, as scipy.stats.kendalltau does. Rows shorter than 2 are an error. A row of exactly 2
pairs gives exactly +1 or -1, as scipy promises.

Extreme scales: Pearson divides each row by the power of two at or above its largest magnitude before it forms any
moment, so values near 1e-300 or 1e300 neither underflow nor overflow (scipy scales by the largest deviation for the
same reason). A power of two divides exactly, so results at ordinary scales are bit for bit those of the unscaled
formula. A row whose spread is below eps**0.75 of its mean gets scipy's NearConstantInputWarning test and warning:
inputs are promoted to float64 first, so the threshold is float64's (a float32 row scipy calls nearly constant is
computed accurately here and does not warn).

Implementations (backend=...):
  pearson:       "triton" (CUDA: one fused two-pass launch for all rows) and "reference" (torch; the CPU path).
  spearman:      "extension" (fastclip.ops.rank_average's C++/CUDA kernel + pearson) and "reference".
  kendall_tau_b: "extension" (C++ CPU, Knight's O(n log n) merge sort, parallel over rows), "triton" (CUDA: a tiled
                 O(n^2) pair count up to n = 20,000, the sort-based count above), "merge" (torch on any device: a
                 lexicographic sort, then inversions counted level by level of a merge sort with searchsorted) and
                 "reference" (O(n^2) pair signs, in chunks).
Every backend computes exact integer pair counts for Kendall, so they agree to the last bit.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass

import torch

from fastclip import _ext
from fastclip.ops._dispatch import Backend, OpDispatcher, extension_backend, triton_unavailable
from fastclip.ops.rank_average import rank_average, rank_average_ref

NAN_POLICIES = ("propagate", "omit")
# Above this n the tiled O(n^2) Kendall kernel does more work than sorting; the sort-based count takes over.
TILED_KENDALL_MAX_N = 20_000
# Elements per chunk of the O(n^2) reference (bounds its temporaries to a few hundred MB).
_REFERENCE_CHUNK_ELEMENTS = 1 << 24


class ConstantInputWarning(RuntimeWarning):
    """An input row is constant, so its correlation is undefined (NaN), as scipy.stats.ConstantInputWarning."""


class NearConstantInputWarning(RuntimeWarning):
    """An input row is nearly constant (spread below eps**0.75 of its mean), so the correlation may be inaccurate, as
    scipy.stats.NearConstantInputWarning."""


class DegenerateInputWarning(RuntimeWarning):
    """A row keeps fewer than 2 complete pairs after NaNs are omitted, so its correlation is NaN."""


@dataclass(frozen=True)
class PairedRows:
    """Validated inputs as float64 rows: x and y are (rows, n) or (1, n), the latter shared by every row."""

    x: torch.Tensor
    y: torch.Tensor
    batch_shape: tuple[int, ...]
    nan_policy: str

    @property
    def rows(self) -> int:
        return math.prod(self.batch_shape)

    @functools.cached_property
    def nan_rows(self) -> torch.Tensor:
        """(rows,) bool: rows with at least one pair holding a NaN (computed on first use: two passes)."""
        return (torch.isnan(self.x).any(dim=-1) | torch.isnan(self.y).any(dim=-1)).expand(self.rows)

    def expanded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """x and y as (rows, n) contiguous tensors."""
        n = self.x.shape[1]
        return self.x.expand(self.rows, n).contiguous(), self.y.expand(self.rows, n).contiguous()


def prepare_pairs(x, y, nan_policy: str, name: str) -> PairedRows:
    """Check and broadcast (x, y) of a correlation; messages name the function and the argument."""
    for arg, value in (("x", x), ("y", y)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name}: {arg} must be a torch.Tensor, got {type(value).__name__}")
        if value.dim() < 1:
            raise ValueError(f"{name}: {arg} must have at least one dimension (the one correlated along)")
        if value.is_complex():
            raise TypeError(f"{name}: {arg} must hold real numbers, got {value.dtype}")
    if x.device != y.device:
        raise ValueError(f"{name}: x and y must be on the same device, got {x.device} and {y.device}")
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(
            f"{name}: x and y must have the same length along the last dimension, got {x.shape[-1]} and {y.shape[-1]}"
        )
    if x.shape[-1] < 2:
        raise ValueError(f"{name}: x and y must have length at least 2 along the last dimension, got {x.shape[-1]}")
    if nan_policy not in NAN_POLICIES:
        raise ValueError(f"{name}: nan_policy must be one of {NAN_POLICIES}, got {nan_policy!r}")
    try:
        batch_shape = tuple(torch.broadcast_shapes(x.shape[:-1], y.shape[:-1]))
    except RuntimeError as exc:
        raise ValueError(
            f"{name}: the leading dimensions of x {tuple(x.shape)} and y {tuple(y.shape)} do not broadcast"
        ) from exc
    n = x.shape[-1]

    def as_rows(t: torch.Tensor) -> torch.Tensor:
        t = t.to(torch.float64)
        if math.prod(t.shape[:-1]) == 1:
            return t.reshape(1, n).contiguous()
        return t.expand(*batch_shape, n).reshape(-1, n).contiguous()

    return PairedRows(as_rows(x), as_rows(y), batch_shape, nan_policy)


def finish(
    pairs: PairedRows,
    value: torch.Tensor,
    complete: torch.Tensor,
    constant: torch.Tensor,
    name: str,
    near_constant: torch.Tensor | None = None,
    *,
    warn_constant: bool = True,
) -> torch.Tensor:
    """Apply the NaN policy and the degenerate-input rules to per-row results and shape them like the batch.
    `complete` counts each row's pairs without a NaN, so fewer than n means the row holds a NaN. `near_constant`
    (Pearson only) flags rows whose spread is lost in rounding."""
    value = value.to(torch.float64)
    # Two points always lie on a line: the correlation is exactly +-1, whatever rounding did to the moments.
    value = torch.where(complete == 2, value.round(), value)
    undefined = torch.zeros_like(complete, dtype=torch.bool)
    if pairs.nan_policy == "propagate":
        undefined = complete < pairs.x.shape[-1]
    too_few = (complete < 2) & ~undefined
    constant = constant & ~too_few & ~undefined
    if bool(too_few.any()):
        warnings.warn(
            f"{name}: {int(too_few.sum())} row(s) keep fewer than 2 complete pairs; their correlation is NaN",
            DegenerateInputWarning,
            stacklevel=3,
        )
    if warn_constant and bool(constant.any()):
        warnings.warn(
            f"{name}: an input is constant in {int(constant.sum())} row(s); the correlation is not defined there (NaN)",
            ConstantInputWarning,
            stacklevel=3,
        )
    if near_constant is not None:
        near_constant = near_constant & ~constant & ~too_few & ~undefined
        if bool(near_constant.any()):
            warnings.warn(
                f"{name}: an input is nearly constant in {int(near_constant.sum())} row(s); the computed correlation "
                "coefficient may be inaccurate",
                NearConstantInputWarning,
                stacklevel=3,
            )
    value = value.masked_fill(undefined | too_few | constant, float("nan"))
    return value.reshape(pairs.batch_shape)


# --------------------------------------------------------------------------------------------------- Pearson


# scipy's test for a row whose spread is lost in rounding: ||x - mean|| < eps**0.75 |mean| (float64).
NEAR_CONSTANT_THRESHOLD = torch.finfo(torch.float64).eps ** 0.75


def scaled_to_unit_magnitude(rows: torch.Tensor) -> torch.Tensor:
    """Each row divided by the power of two at or above its largest finite-or-infinite magnitude (NaN ignored), so its
    values lie in [-1, 1] and their squares neither overflow nor underflow. Dividing by a power of two is exact, so
    a correlation of the scaled rows equals that of the rows themselves bit for bit wherever the latter is finite.
    Rows of zeros, or holding an infinity, are left as they are."""
    magnitude = torch.where(torch.isnan(rows), 0.0, rows.abs()).amax(-1, keepdim=True)
    _, exponent = torch.frexp(torch.where(torch.isinf(magnitude), 0.0, magnitude))
    # Two half steps: 2**1073 (for a subnormal largest magnitude) is itself beyond float64's range.
    half = torch.div(exponent, 2, rounding_mode="floor")
    return torch.ldexp(torch.ldexp(rows, -half), half - exponent)


def _pearson_rows_reference(x: torch.Tensor, y: torch.Tensor):
    """Pearson's r over the complete pairs of each row of rows already scaled to unit magnitude: two passes (means,
    then centred moments) in float64. Returns (r, complete pairs, constant, nearly constant)."""
    incomplete = torch.isnan(x) | torch.isnan(y)
    if bool(incomplete.any()):
        complete = ~incomplete
        count = complete.sum(dim=-1)
        mean_x = torch.where(complete, x, 0.0).sum(-1, keepdim=True) / count.unsqueeze(-1)
        mean_y = torch.where(complete, y, 0.0).sum(-1, keepdim=True) / count.unsqueeze(-1)
        dx = torch.where(complete, x - mean_x, 0.0)
        dy = torch.where(complete, y - mean_y, 0.0)
        inf = torch.tensor(float("inf"), dtype=x.dtype, device=x.device)
        x_constant = torch.where(complete, x, -inf).amax(-1) <= torch.where(complete, x, inf).amin(-1)
        y_constant = torch.where(complete, y, -inf).amax(-1) <= torch.where(complete, y, inf).amin(-1)
    else:  # the common case, without the masking
        count = torch.full(incomplete.shape[:-1], x.shape[-1], dtype=torch.int64, device=x.device)
        mean_x = x.mean(-1, keepdim=True)
        mean_y = y.mean(-1, keepdim=True)
        dx = x - mean_x
        dy = y - mean_y
        x_constant = x.amax(-1) <= x.amin(-1)
        y_constant = y.amax(-1) <= y.amin(-1)
    norm_x = (dx * dx).sum(-1).sqrt()
    norm_y = (dy * dy).sum(-1).sqrt()
    r = (dx * dy).sum(-1) / (norm_x * norm_y)
    near_constant = (norm_x < NEAR_CONSTANT_THRESHOLD * mean_x.squeeze(-1).abs()) | (
        norm_y < NEAR_CONSTANT_THRESHOLD * mean_y.squeeze(-1).abs()
    )
    return r.clamp(-1.0, 1.0), count, x_constant | y_constant, near_constant


def _pearson_rows_triton(x: torch.Tensor, y: torch.Tensor):
    from fastclip.kernels.pearson import pearson_fwd

    return pearson_fwd(x, y, NEAR_CONSTANT_THRESHOLD)


_PEARSON = OpDispatcher(
    "pearson",
    backends=[
        Backend("triton", _pearson_rows_triton, triton_unavailable),
        Backend("reference", _pearson_rows_reference),
    ],
    auto_order={"cpu": ("reference",), "cuda": ("triton", "reference")},
)


def pearson_ref(x: torch.Tensor, y: torch.Tensor, *, nan_policy: str = "propagate") -> torch.Tensor:
    """Plain-PyTorch Pearson's r along the last dimension (the oracle and the CPU path)."""
    pairs = prepare_pairs(x, y, nan_policy, "pearson_ref")
    r, count, constant, near_constant = _pearson_rows_reference(
        scaled_to_unit_magnitude(pairs.x), scaled_to_unit_magnitude(pairs.y)
    )
    return finish(pairs, r, count, constant, "pearson_ref", near_constant)


def pearson(x: torch.Tensor, y: torch.Tensor, *, nan_policy: str = "propagate", backend: str = "auto") -> torch.Tensor:
    """Pearson's r of x and y along the last dimension, broadcast over the leading ones (float64; see module doc).

    Args:
        x, y: real tensors (..., n), n >= 2, on one device; leading dimensions broadcast.
        nan_policy: "propagate" or "omit".
        backend: "auto", "triton" or "reference".
    """
    pairs = prepare_pairs(x, y, nan_policy, "pearson")
    if pairs.rows == 0:
        return torch.empty(pairs.batch_shape, dtype=torch.float64, device=pairs.x.device)
    run = _PEARSON.choose(pairs.x.device, backend).run
    r, count, constant, near_constant = run(scaled_to_unit_magnitude(pairs.x), scaled_to_unit_magnitude(pairs.y))
    return finish(pairs, r, count, constant, "pearson", near_constant)


# -------------------------------------------------------------------------------------------------- Spearman


def _ranked_pairs(pairs: PairedRows, rank) -> tuple[torch.Tensor, torch.Tensor]:
    """Average ranks of x and y over the complete pairs of each row (NaN where a pair is incomplete)."""
    if not bool(pairs.nan_rows.any()):
        return rank(pairs.x, nan_policy="omit"), rank(pairs.y, nan_policy="omit")
    # Incomplete pairs differ between rows, so the shared operand must be ranked once per row.
    x, y = pairs.expanded()
    incomplete = torch.isnan(x) | torch.isnan(y)
    nan = torch.tensor(float("nan"), dtype=x.dtype, device=x.device)
    rank_x = rank(torch.where(incomplete, nan, x), nan_policy="omit")
    return rank_x, rank(torch.where(incomplete, nan, y), nan_policy="omit")


# Ranks (half-integers from 1 to n) need no scaling, and their spread is never lost in rounding: the Pearson step's
# near-constant flag is dropped.
def _spearman_extension(pairs: PairedRows):
    rank_x, rank_y = _ranked_pairs(pairs, functools.partial(rank_average, backend="extension"))
    return _PEARSON.choose(rank_x.device, "auto").run(rank_x, rank_y)[:3]


def _spearman_reference(pairs: PairedRows):
    rank_x, rank_y = _ranked_pairs(pairs, rank_average_ref)
    return _pearson_rows_reference(rank_x, rank_y)[:3]


_SPEARMAN = OpDispatcher(
    "spearman",
    backends=[
        extension_backend("rank_average", _spearman_extension),
        Backend("reference", _spearman_reference),
    ],
    auto_order={"cpu": ("extension", "reference"), "cuda": ("extension", "reference")},
)


def spearman_ref(x: torch.Tensor, y: torch.Tensor, *, nan_policy: str = "propagate") -> torch.Tensor:
    """Plain-PyTorch Spearman's rho: Pearson's r of rank_average_ref ranks."""
    pairs = prepare_pairs(x, y, nan_policy, "spearman_ref")
    return finish(pairs, *_spearman_reference(pairs), "spearman_ref")


def spearman(x: torch.Tensor, y: torch.Tensor, *, nan_policy: str = "propagate", backend: str = "auto") -> torch.Tensor:
    """Spearman's rho of x and y along the last dimension (average ranks of ties, as scipy.stats.spearmanr).

    Args:
        x, y: real tensors (..., n), n >= 2, on one device; leading dimensions broadcast.
        nan_policy: "propagate" or "omit".
        backend: "auto", "extension" or "reference". The Pearson step then uses its own auto choice.
    """
    pairs = prepare_pairs(x, y, nan_policy, "spearman")
    if pairs.rows == 0:
        return torch.empty(pairs.batch_shape, dtype=torch.float64, device=pairs.x.device)
    rows = _SPEARMAN.choose(pairs.x.device, backend).run(pairs)
    return finish(pairs, *rows, "spearman")


# ---------------------------------------------------------------------------------------------- Kendall tau-b
# Backends return int64 (rows, 5) counts [m, ties_x, ties_y, ties_xy, s]: m complete pairs, pairs tied in x, in y
# and in both, and s = concordant - discordant.


def tau_b_from_counts(counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(tau_b, complete pairs, constant) from the exact counts, with scipy's formula."""
    m, ties_x, ties_y, _, s = counts.unbind(-1)
    total = m * (m - 1) // 2
    constant = (ties_x == total) | (ties_y == total)
    tau = s.double() / (total - ties_x).double().sqrt() / (total - ties_y).double().sqrt()
    return tau.clamp(-1.0, 1.0), m, constant


def sign_of_difference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sign(a - b) as int64 by comparison, which stays right for infinities (inf - inf is NaN)."""
    return (a > b).to(torch.int64) - (a < b).to(torch.int64)


def _kendall_counts_reference(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The definition: over all pairs i < j of complete pairs, sum sign(dx) sign(dy) and count the ties."""
    rows, n = x.shape
    complete = ~(torch.isnan(x) | torch.isnan(y))
    sums = torch.zeros((rows, 4), dtype=torch.int64, device=x.device)
    chunk = max(1, _REFERENCE_CHUNK_ELEMENTS // max(1, rows * n))
    j = torch.arange(n, device=x.device)
    for start in range(0, n, chunk):
        i = j[start : start + chunk]
        later = j.view(1, -1) > i.view(-1, 1)
        pair = complete[:, i, None] & complete[:, None, :] & later
        sign_x = sign_of_difference(x[:, i, None], x[:, None, :])
        sign_y = sign_of_difference(y[:, i, None], y[:, None, :])
        sums[:, 0] += torch.where(pair, sign_x * sign_y, 0).sum((1, 2))
        sums[:, 1] += (pair & (sign_x == 0)).sum((1, 2))
        sums[:, 2] += (pair & (sign_y == 0)).sum((1, 2))
        sums[:, 3] += (pair & (sign_x == 0) & (sign_y == 0)).sum((1, 2))
    m = complete.sum(-1, keepdim=True)
    return torch.cat([m, sums[:, 1:], sums[:, :1]], dim=-1)


def _kendall_counts_extension(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return _ext.op("kendall_tau")(x, y)


def _tied_pairs_along(values: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """Pairs of equal neighbours within the first `count` entries of each sorted row: each element adds its offset in
    its run of equal values (0 + 1 + ... + (L-1) = L (L-1) / 2 per run)."""
    rows, n = values.shape
    position = torch.arange(n, device=values.device).expand(rows, n)
    starts = torch.ones_like(values, dtype=torch.bool)
    starts[:, 1:] = values[:, 1:] != values[:, :-1]
    run_start = torch.where(starts, position, 0).cummax(dim=-1).values
    inside = position < count.view(-1, 1)
    return torch.where(inside, position - run_start, 0).sum(-1)


def _kendall_counts_merge(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Knight's counts with device-friendly steps: a lexicographic (x, y) order from stable sorts, then the inversions
    of the y sequence counted level by level of a bottom-up merge sort (searchsorted between sibling blocks, then a
    sort of each merged block). O(n log^2 n) work in log n batched launches."""
    rows, n = x.shape
    complete = ~(torch.isnan(x) | torch.isnan(y))
    m = complete.sum(-1)
    inf = torch.tensor(float("inf"), dtype=torch.float64, device=x.device)
    # Incomplete pairs go last with y = +inf: nothing after them, and nothing is greater than them, so they add no
    # inversions; -0.0 + 0.0 is +0.0, so the two zeros tie.
    xs = torch.where(complete, x + 0.0, inf)
    ys = torch.where(complete, y + 0.0, inf)
    dense_y = _dense_ranks(ys)
    order = torch.argsort(ys, dim=-1, stable=True)
    order = order.gather(-1, torch.argsort(xs.gather(-1, order), dim=-1, stable=True))
    order = order.gather(-1, torch.argsort((~complete).gather(-1, order).to(torch.int8), dim=-1, stable=True))
    x_sorted = xs.gather(-1, order)
    y_sequence = dense_y.gather(-1, order)
    ties_x = _tied_pairs_along(x_sorted, m)
    # Joint ties: runs of equal (x, y), i.e. equal x and equal dense y rank, along the (x, y) order.
    joint_key = x_sorted.new_zeros(x_sorted.shape, dtype=torch.int64)
    joint_key[:, 1:] = ((x_sorted[:, 1:] != x_sorted[:, :-1]) | (y_sequence[:, 1:] != y_sequence[:, :-1])).long()
    ties_xy = _tied_pairs_along(joint_key.cumsum(-1), m)
    ties_y = _tied_pairs_along(torch.sort(torch.where(complete, dense_y, n), dim=-1).values, m)

    width = 1
    padded = 1 << max(0, (n - 1).bit_length())
    # Padding with a rank above every real one: padding sits at the end, so it never precedes a smaller value.
    sequence = torch.nn.functional.pad(y_sequence, (0, padded - n), value=n + 1)
    discordant = torch.zeros(rows, dtype=torch.int64, device=x.device)
    while width < padded:
        blocks = sequence.view(rows, padded // (2 * width), 2, width)
        left, right = blocks[:, :, 0, :].contiguous(), blocks[:, :, 1, :].contiguous()
        not_greater = torch.searchsorted(left, right, right=True)
        discordant += (width - not_greater).sum((1, 2))
        merged = torch.sort(blocks.reshape(rows, padded // (2 * width), 2 * width), dim=-1).values
        sequence = merged.reshape(rows, padded)
        width *= 2
    total = m * (m - 1) // 2
    s = total - ties_x - ties_y + ties_xy - 2 * discordant
    return torch.stack([m, ties_x, ties_y, ties_xy, s], dim=-1)


def _dense_ranks(values: torch.Tensor) -> torch.Tensor:
    """0-based dense ranks along the last dimension (equal values share a rank)."""
    sorted_values, order = torch.sort(values, dim=-1, stable=True)
    new_value = torch.ones_like(sorted_values, dtype=torch.int64)
    new_value[:, 0] = 0
    new_value[:, 1:] = (sorted_values[:, 1:] != sorted_values[:, :-1]).long()
    return torch.empty_like(order).scatter_(-1, order, new_value.cumsum(-1))


def _kendall_counts_triton(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if x.shape[1] > TILED_KENDALL_MAX_N:
        return _kendall_counts_merge(x, y)
    from fastclip.kernels.kendall_tau import kendall_tau_fwd

    s, ties_x, ties_y, ties_xy = kendall_tau_fwd(x, y).unbind(-1)
    m = (~(torch.isnan(x) | torch.isnan(y))).sum(-1)
    return torch.stack([m, ties_x, ties_y, ties_xy, s], dim=-1)


_KENDALL = OpDispatcher(
    "kendall_tau_b",
    backends=[
        extension_backend("kendall_tau", _kendall_counts_extension),
        Backend("triton", _kendall_counts_triton, triton_unavailable),
        Backend("merge", _kendall_counts_merge),
        Backend("reference", _kendall_counts_reference),
    ],
    auto_order={"cpu": ("extension", "merge"), "cuda": ("triton", "merge")},
)


def kendall_tau_counts(x: torch.Tensor, y: torch.Tensor, *, backend: str = "auto") -> torch.Tensor:
    """Exact int64 counts (rows, 5) = [m, ties_x, ties_y, ties_xy, concordant - discordant] of float64 rows (NaN pairs
    left out). A building block for callers that need the counts, e.g. for a p-value."""
    return _KENDALL.choose(x.device, backend).run(x, y)


def kendall_tau_b_ref(x: torch.Tensor, y: torch.Tensor, *, nan_policy: str = "propagate") -> torch.Tensor:
    """Plain-PyTorch Kendall tau-b from the O(n^2) pair signs (the oracle)."""
    pairs = prepare_pairs(x, y, nan_policy, "kendall_tau_b_ref")
    counts = _kendall_counts_reference(*pairs.expanded())
    return finish(pairs, *tau_b_from_counts(counts), "kendall_tau_b_ref", warn_constant=False)


def kendall_tau_b(
    x: torch.Tensor, y: torch.Tensor, *, nan_policy: str = "propagate", backend: str = "auto"
) -> torch.Tensor:
    """Kendall's tau-b of x and y along the last dimension (scipy.stats.kendalltau(variant="b")).

    Args:
        x, y: real tensors (..., n), n >= 2, on one device; leading dimensions broadcast.
        nan_policy: "propagate" or "omit".
        backend: "auto", "extension", "triton", "merge" or "reference".
    """
    pairs = prepare_pairs(x, y, nan_policy, "kendall_tau_b")
    if pairs.rows == 0:
        return torch.empty(pairs.batch_shape, dtype=torch.float64, device=pairs.x.device)
    counts = kendall_tau_counts(*pairs.expanded(), backend=backend)
    return finish(pairs, *tau_b_from_counts(counts), "kendall_tau_b", warn_constant=False)
