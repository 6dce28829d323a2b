"""Triton kernel for fastclip.ops._philox on CUDA: Philox4x32-10 words in fastclip's counter layout.

out[i, k, j] is lane j % 4 of Philox for counter (j // 4, b[k], stream, a[i]) and key (seed mod 2**32,
seed div 2**32), the function csrc/philox.h and the torch reference compute. One program fills BLOCK counters
(4 * BLOCK words) of one (i, k) row with triton.language.random.philox.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._launch import Capability, LaunchConfig, device_capability
from triton.language.random import philox



def launch_config(capability: Capability | None = None) -> LaunchConfig:
    """The launch configuration on a GPU of this compute capability (None: the CPU interpreter)."""
    # 28 regs, no spills, no smem, 64 warps/SM (full occupancy) on sm_90 (audit, triton 3.8).
    return LaunchConfig(block=256, num_warps=4, num_stages=3)


@triton.jit
def _philox_fwd_kernel(a_ptr, b_ptr, out_ptr, seed, stream, rows_b, length, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    counter = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    a = tl.load(a_ptr + row // rows_b)
    b = tl.load(b_ptr + row % rows_b)
    zeros = tl.zeros([BLOCK], dtype=tl.uint32)
    w0, w1, w2, w3 = philox(
        seed,
        counter.to(tl.uint32),
        zeros + b.to(tl.uint32),
        (zeros + stream).to(tl.uint32),
        zeros + a.to(tl.uint32),
    )
    base = out_ptr + row.to(tl.int64) * length
    word = counter.to(tl.int64) * 4
    tl.store(base + word, w0.to(tl.int64), mask=word < length)
    tl.store(base + word + 1, w1.to(tl.int64), mask=word + 1 < length)
    tl.store(base + word + 2, w2.to(tl.int64), mask=word + 2 < length)
    tl.store(base + word + 3, w3.to(tl.int64), mask=word + 3 < length)


def philox_fwd(
    seed: int, stream: int, a: torch.Tensor, b: torch.Tensor, length: int, config: LaunchConfig | None = None
) -> torch.Tensor:
    """int64 (len(a), len(b), length) Philox words in [0, 2**32) for int64 index vectors a and b."""
    cfg = config or launch_config(device_capability(a.device))
    a, b = a.contiguous(), b.contiguous()
    out = torch.empty((a.numel(), b.numel(), length), dtype=torch.int64, device=a.device)
    blocks = triton.cdiv(triton.cdiv(length, 4), cfg.block)
    if out.numel():
        _philox_fwd_kernel[(a.numel() * b.numel(), blocks)](
            a, b, out, seed, stream, b.numel(), length,
            BLOCK=cfg.block, num_warps=cfg.num_warps, num_stages=cfg.num_stages,
        )
    return out
