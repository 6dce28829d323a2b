"""cue_conflict: texture-filled silhouettes, the fused Triton kernel vs the torch gather-and-blend chain.

16 soft masks and 16 textures (224 x 224, float32), P random (mask, texture) pairs -> uint8 (P,3,224,224), the
format make-stimuli writes. P in {256, 4096} on CUDA; on a CPU the 4096 row runs at P = 512.
Providers: fused (backend "triton", CUDA only) and reference (cue_conflict_ref: gather masks and textures per
pair, blend, round: each a full pass). extra_info: GB/s counting one read of each pair's mask and texture and one
write of its output, and stimuli/s (the issue's goal: >= 20,000 stimuli/s at 224 px on an H200).

    pytest benchmarks/bench_cue_conflict.py --benchmark-only --benchmark-group-by=param:size
"""

from __future__ import annotations

import pytest
import torch

from conftest import Timing, timed  # benchmarks/conftest.py (pytest puts benchmarks/ on sys.path)

from fastclip.ops import cue_conflict, cue_conflict_ref

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
SIZES = {"256": 256, "4096": 4096 if DEVICE.type == "cuda" else 512}
PROVIDERS = ["fused", "reference"]
SIDE, SOURCES = 224, 16


def inputs(count: int):
    generator = torch.Generator().manual_seed(0)
    masks = torch.rand(SOURCES, SIDE, SIDE, generator=generator).to(DEVICE)
    textures = torch.rand(SOURCES, 3, SIDE, SIDE, generator=generator).to(DEVICE)
    pairs = torch.randint(0, SOURCES, (count, 2), generator=generator).to(DEVICE)
    return masks, textures, pairs


def run(provider: str, masks, textures, pairs) -> torch.Tensor:
    if provider == "reference":
        out = cue_conflict_ref(masks, textures, pairs, out_dtype=torch.uint8)
    else:
        out = cue_conflict(masks, textures, pairs, out_dtype=torch.uint8, backend="triton")
    if out.is_cuda:
        torch.cuda.synchronize()
    return out


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("size", list(SIZES))
def test_cue_conflict(benchmark, bench_info, provider, size):
    if provider == "fused" and DEVICE.type != "cuda":
        pytest.skip("the fused kernel is timed on CUDA only (the interpreter says nothing about speed)")
    count = SIZES[size]
    masks, textures, pairs = inputs(count)
    timing = Timing(rounds=10 if DEVICE.type == "cuda" else 3, warmup=1)  # the same for every provider
    out = timed(benchmark, run, timing, provider, masks, textures, pairs)
    assert out.shape == (count, 3, SIDE, SIDE)
    seconds = benchmark.stats.stats.mean
    moved = count * SIDE * SIDE * (4 * 4 + 3 * out.element_size())  # float32 mask + 3 texture channels, uint8 RGB out
    bench_info.update(
        provider=provider, stimuli=count, device=str(DEVICE), gb_per_s=round(moved / seconds / 1e9, 3),
        stimuli_per_s=round(count / seconds, 1),
    )  # fmt: skip
