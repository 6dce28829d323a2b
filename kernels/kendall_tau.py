"""Triton kernel for fastclip.ops.correlation.kendall_tau_b on CUDA: a tiled O(n^2) pair count.

One program owns BLOCK_I consecutive elements i of one row and sweeps every later element j in tiles of BLOCK_J,
summing sign(x_i - x_j) * sign(y_i - y_j) and counting the pairs tied in x, in y and in both; pairs holding a NaN
are left out. Each program adds its four integer sums to the row's counters with atomics, so the counts are exact
whatever the launch order. Simple and fast for the n of the alignment benchmarks (up to ~20k); the dispatcher
switches to a sort-based count above that.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from ._launch import Capability, device_capability


@dataclass(frozen=True)
class PairTileConfig:
    """BLOCK_I elements i per program, swept against BLOCK_J elements j at a time."""

    block_i: int
    block_j: int
    num_warps: int
    num_stages: int

    def label(self) -> str:
        return f"{self.block_i}x{self.block_j} w{self.num_warps} s{self.num_stages}"


def launch_config(capability: Capability | None = None) -> PairTileConfig:
    """The launch configuration on a GPU of this compute capability (None: the CPU interpreter)."""
    # 144-168 regs, no spills, 12 warps/SM on sm_80/90/100 (audit, triton 3.8). 32 x 128 at 4 warps needed 255 regs
    # and spilled 24 B on sm_100; 32 x 64 keeps the pairs per program and three blocks per SM.
    return PairTileConfig(block_i=32, block_j=64, num_warps=4, num_stages=3)


@triton.jit
def _kendall_tau_fwd_kernel(x_ptr, y_ptr, sums_ptr, n, BLOCK_I: tl.constexpr, BLOCK_J: tl.constexpr):
    row = tl.program_id(0)
    first_i = tl.program_id(1) * BLOCK_I
    base = row.to(tl.int64) * n
    i = first_i + tl.arange(0, BLOCK_I)
    in_i = i < n
    xi = tl.load(x_ptr + base + i, mask=in_i, other=0.0)
    yi = tl.load(y_ptr + base + i, mask=in_i, other=0.0)
    valid_i = in_i & (xi == xi) & (yi == yi)

    # Per-element partial sums stay below n, so int32 accumulators are exact; the atomics add in int64.
    s = tl.zeros([BLOCK_I], dtype=tl.int32)
    ties_x = tl.zeros([BLOCK_I], dtype=tl.int32)
    ties_y = tl.zeros([BLOCK_I], dtype=tl.int32)
    ties_xy = tl.zeros([BLOCK_I], dtype=tl.int32)
    for first_j in range(first_i, n, BLOCK_J):
        j = first_j + tl.arange(0, BLOCK_J)
        in_j = j < n
        xj = tl.load(x_ptr + base + j, mask=in_j, other=0.0)
        yj = tl.load(y_ptr + base + j, mask=in_j, other=0.0)
        valid_j = in_j & (xj == xj) & (yj == yj)
        pair = valid_i[:, None] & valid_j[None, :] & (j[None, :] > i[:, None])
        sign_x = (xi[:, None] > xj[None, :]).to(tl.int32) - (xi[:, None] < xj[None, :]).to(tl.int32)
        sign_y = (yi[:, None] > yj[None, :]).to(tl.int32) - (yi[:, None] < yj[None, :]).to(tl.int32)
        s += tl.sum(tl.where(pair, sign_x * sign_y, 0), axis=1)
        tied_x = pair & (sign_x == 0)
        tied_y = pair & (sign_y == 0)
        ties_x += tl.sum(tied_x.to(tl.int32), axis=1)
        ties_y += tl.sum(tied_y.to(tl.int32), axis=1)
        ties_xy += tl.sum((tied_x & tied_y).to(tl.int32), axis=1)

    out = sums_ptr + row.to(tl.int64) * 4
    tl.atomic_add(out + 0, tl.sum(s.to(tl.int64), axis=0))
    tl.atomic_add(out + 1, tl.sum(ties_x.to(tl.int64), axis=0))
    tl.atomic_add(out + 2, tl.sum(ties_y.to(tl.int64), axis=0))
    tl.atomic_add(out + 3, tl.sum(ties_xy.to(tl.int64), axis=0))


def kendall_tau_fwd(x: torch.Tensor, y: torch.Tensor, config: PairTileConfig | None = None) -> torch.Tensor:
    """Pair sums of each row of two (rows, n) float64 tensors: int64 (rows, 4) = [s, ties_x, ties_y, ties_xy]."""
    cfg = config or launch_config(device_capability(x.device))
    x, y = x.contiguous(), y.contiguous()
    rows, n = x.shape
    sums = torch.zeros((rows, 4), dtype=torch.int64, device=x.device)
    if rows and n:
        grid = (rows, triton.cdiv(n, cfg.block_i))
        _kendall_tau_fwd_kernel[grid](
            x, y, sums, n, BLOCK_I=cfg.block_i, BLOCK_J=cfg.block_j, num_warps=cfg.num_warps, num_stages=cfg.num_stages
        )
    return sums
