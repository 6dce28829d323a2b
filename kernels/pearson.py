"""Triton kernel for fastclip.ops.correlation.pearson on CUDA: Pearson's r of every row in one launch.

One program per row makes two sweeps in float64: counts, sums and ranges of the complete pairs (those without a
NaN), then the centred moments about those means (two passes keep full precision when the mean is large against
the spread). A shared operand (one vector against many rows) is read with row stride 0, never copied. The op scales
every row to unit magnitude first (fastclip.ops.correlation.scaled_to_unit_magnitude), so no moment here can
overflow or underflow; the kernel also flags rows whose spread is below NEAR_CONSTANT times their mean (scipy's
test).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 1024


@triton.jit
def _load_pairs(x_row, y_row, start, n, BLOCK: tl.constexpr):
    """Pairs start .. start + BLOCK - 1 of a row, and which of them are complete (inside the row, no NaN)."""
    offsets = start + tl.arange(0, BLOCK)
    inside = offsets < n
    x = tl.load(x_row + offsets, mask=inside, other=0.0)
    y = tl.load(y_row + offsets, mask=inside, other=0.0)
    return x, y, inside & (x == x) & (y == y)


@triton.jit
def _pearson_fwd_kernel(
    x_ptr, y_ptr, r_ptr, count_ptr, constant_ptr, near_constant_ptr, n, x_row_stride, y_row_stride,
    NEAR_CONSTANT: tl.constexpr, BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * x_row_stride
    y_row = y_ptr + row * y_row_stride
    count = tl.zeros([BLOCK], dtype=tl.int64)
    sum_x = tl.zeros([BLOCK], dtype=tl.float64)
    sum_y = tl.zeros([BLOCK], dtype=tl.float64)
    min_x = tl.full([BLOCK], float("inf"), tl.float64)
    max_x = tl.full([BLOCK], float("-inf"), tl.float64)
    min_y = tl.full([BLOCK], float("inf"), tl.float64)
    max_y = tl.full([BLOCK], float("-inf"), tl.float64)
    for start in range(0, n, BLOCK):
        x, y, complete = _load_pairs(x_row, y_row, start, n, BLOCK)
        count += complete.to(tl.int64)
        sum_x += tl.where(complete, x, 0.0)
        sum_y += tl.where(complete, y, 0.0)
        min_x = tl.minimum(min_x, tl.where(complete, x, float("inf")))
        max_x = tl.maximum(max_x, tl.where(complete, x, float("-inf")))
        min_y = tl.minimum(min_y, tl.where(complete, y, float("inf")))
        max_y = tl.maximum(max_y, tl.where(complete, y, float("-inf")))
    total = tl.sum(count, axis=0)
    mean_x = tl.sum(sum_x, axis=0) / total.to(tl.float64)
    mean_y = tl.sum(sum_y, axis=0) / total.to(tl.float64)
    constant = (tl.max(max_x, axis=0) <= tl.min(min_x, axis=0)) | (tl.max(max_y, axis=0) <= tl.min(min_y, axis=0))

    sxx = tl.zeros([BLOCK], dtype=tl.float64)
    syy = tl.zeros([BLOCK], dtype=tl.float64)
    sxy = tl.zeros([BLOCK], dtype=tl.float64)
    for start in range(0, n, BLOCK):
        x, y, complete = _load_pairs(x_row, y_row, start, n, BLOCK)
        dx = tl.where(complete, x - mean_x, 0.0)
        dy = tl.where(complete, y - mean_y, 0.0)
        sxx += dx * dx
        syy += dy * dy
        sxy += dx * dy
    norm_x = tl.sqrt(tl.sum(sxx, axis=0))
    norm_y = tl.sqrt(tl.sum(syy, axis=0))
    r = tl.sum(sxy, axis=0) / (norm_x * norm_y)
    r = tl.minimum(tl.maximum(r, -1.0), 1.0)
    near_constant = (norm_x < NEAR_CONSTANT * tl.abs(mean_x)) | (norm_y < NEAR_CONSTANT * tl.abs(mean_y))
    tl.store(r_ptr + row, r)
    tl.store(count_ptr + row, total)
    tl.store(constant_ptr + row, constant.to(tl.int8))
    tl.store(near_constant_ptr + row, near_constant.to(tl.int8))


def pearson_fwd(
    x: torch.Tensor, y: torch.Tensor, near_constant_threshold: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pearson's r over the complete pairs of each row of x (rows, n) and y (rows, n); either may have one row,
    shared by all. float64, last dim contiguous. Returns (r float64, complete-pair count int64, constant bool, and
    whether the spread of x or y is below near_constant_threshold times its mean)."""
    rows = max(x.shape[0], y.shape[0])
    n = x.shape[1]
    r = torch.empty(rows, dtype=torch.float64, device=x.device)
    count = torch.empty(rows, dtype=torch.int64, device=x.device)
    constant = torch.empty(rows, dtype=torch.int8, device=x.device)
    near_constant = torch.empty(rows, dtype=torch.int8, device=x.device)
    if rows:
        x_stride = 0 if x.shape[0] == 1 else x.stride(0)
        y_stride = 0 if y.shape[0] == 1 else y.stride(0)
        _pearson_fwd_kernel[(rows,)](
            x, y, r, count, constant, near_constant, n, x_stride, y_stride,
            NEAR_CONSTANT=near_constant_threshold, BLOCK=BLOCK,
        )  # fmt: skip
    return r, count, constant.bool(), near_constant.bool()
