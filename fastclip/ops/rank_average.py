"""Tie-aware average ranks along the last dimension: the building block of Spearman correlation.

Equal values share the mean of the ranks they span (scipy.stats.rankdata(method="average")); ranks are 1-based.
-0.0 and +0.0 tie.

NaN policy (`nan_policy`):
  "propagate" (default, as scipy): a row that holds any NaN comes back as all NaN.
  "omit": NaN entries get rank NaN and the others are ranked among themselves (1..m for m non-NaN values), which is
          what a correlation that drops incomplete pairs needs.

Backends: "extension" (C++ radix sort parallel over rows on CPU; segmented sort + binary-searched tie segments on
CUDA) and "reference" (plain PyTorch). Auto picks the extension when it has a kernel for the tensor's device.
"""

from __future__ import annotations

import torch

from fastclip import _ext
from fastclip.ops._dispatch import Backend, OpDispatcher, extension_backend

NAN_POLICIES = ("propagate", "omit")


def rank_average_ref(x: torch.Tensor, nan_policy: str = "propagate") -> torch.Tensor:
    """Plain-PyTorch average ranks of a (..., n) tensor along the last dimension (the oracle and fallback). Integer
    input is sorted as integers, so values beyond 2**53 keep their order; its ranks are float64."""
    rank_dtype = x.dtype if x.is_floating_point() else torch.float64
    sorted_values, order = torch.sort(x, dim=-1, stable=True)  # NaNs sort last
    n = x.shape[-1]
    position = torch.arange(n, device=x.device).expand_as(sorted_values)
    # A tie segment starts where the sorted value changes (NaN != NaN, so every NaN is a segment of its own).
    starts_segment = torch.ones_like(sorted_values, dtype=torch.bool)
    starts_segment[..., 1:] = sorted_values[..., 1:] != sorted_values[..., :-1]
    ends_segment = torch.ones_like(starts_segment)
    ends_segment[..., :-1] = starts_segment[..., 1:]
    segment_start = torch.where(starts_segment, position, 0).cummax(dim=-1).values
    segment_end = torch.where(ends_segment, position, n).flip(-1).cummin(dim=-1).values.flip(-1)
    average_rank = (segment_start + segment_end).to(rank_dtype) / 2 + 1
    ranks = torch.empty(x.shape, dtype=rank_dtype, device=x.device).scatter_(-1, order, average_rank)
    is_nan = torch.isnan(x)
    ranks = ranks.masked_fill(is_nan, float("nan"))
    if nan_policy == "propagate":
        ranks = ranks.masked_fill(is_nan.any(dim=-1, keepdim=True), float("nan"))
    return ranks


def _rank_average_extension(x: torch.Tensor, nan_policy: str) -> torch.Tensor:
    rows = x.reshape(-1, x.shape[-1])
    return _ext.op("rank_average")(rows, nan_policy == "omit").reshape(x.shape)


_DISPATCH = OpDispatcher(
    "rank_average",
    backends=[
        extension_backend("rank_average", _rank_average_extension),
        Backend("reference", rank_average_ref),
    ],
    auto_order={"cpu": ("extension", "reference"), "cuda": ("extension", "reference")},
)


def rank_average(x: torch.Tensor, *, nan_policy: str = "propagate", backend: str = "auto") -> torch.Tensor:
    """Average ranks of `x` along its last dimension.

    Args:
        x: real tensor of shape (..., n); every leading index is an independent row. Integers (and bools) are ranked
            exactly, as scipy.stats.rankdata ranks them, also beyond 2**53.
        nan_policy: "propagate" or "omit" (see the module docstring).
        backend: "auto", "extension" or "reference".

    Returns:
        Ranks with x's shape, float32 for float16/bfloat16/float32 input and float64 otherwise. float32 ranks are
        exact up to n = 2**23 (they are multiples of 0.5); longer rows are ranked in float64.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"rank_average: x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 1:
        raise ValueError("rank_average: x must have at least one dimension (the one ranked along)")
    if x.is_complex():
        raise TypeError(f"rank_average: x must hold real numbers, got {x.dtype}")
    if nan_policy not in NAN_POLICIES:
        raise ValueError(f"rank_average: nan_policy must be one of {NAN_POLICIES}, got {nan_policy!r}")
    if not x.is_floating_point():
        if x.numel() and max(int(x.max()), -int(x.min())) > 2**53:  # float64 would merge neighbours: sort as integers
            return rank_average_ref(x.contiguous(), nan_policy)
        x = x.to(torch.float64)
    exact_dtype = torch.float64 if x.dtype == torch.float64 or x.shape[-1] > 2**23 else torch.float32
    x = x.to(exact_dtype).contiguous()
    if x.numel() == 0:
        return torch.empty_like(x)
    return _DISPATCH.choose(x.device, backend).run(x, nan_policy)
