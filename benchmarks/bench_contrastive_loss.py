"""Forward+backward of the CLIP and SigLIP losses: {open_clip, reference, chunked, fused} x batch sizes.

CPU: B in {1024, 4096, 8192}, D = 512, float32 (fused needs CUDA). GPU: B in {8192, 32768, 65536} x D in
{512, 768, 1024}, bf16. Every benchmark records the peak memory of one forward+backward in extra_info:
  CUDA  torch.cuda.max_memory_allocated() minus what was allocated before the call (the inputs).
  CPU   the peak RSS growth of a fresh subprocess over one call: inputs built and a small warm-up run first, then
        /proc/self/clear_refs resets the high-water mark, the call runs, and VmHWM - VmRSS(before) is the peak.
        MALLOC_MMAP_THRESHOLD_=65536 makes glibc map every tensor buffer separately and unmap it when freed, so
        RSS follows the live tensors instead of a heap that never shrinks. Includes the gradient buffers of the
        features (the same 2·B·D·4 bytes for every provider).

Done-when (issue 3, CPU): the chunked path's peak at B = 8192, D = 512 <= 1/8 of open_clip ClipLoss's, and its time
<= 1.3x, both measured in one run by test_done_when_chunked_vs_open_clip (interleaved rounds, medians).
Separate parametrized benchmarks run minutes apart, so on a shared machine compare providers in the done-when test.
    pytest benchmarks/bench_contrastive_loss.py --benchmark-only
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import torch.nn.functional as F

from conftest import Timing, timed, timed_pair  # benchmarks/conftest.py (pytest puts benchmarks/ on sys.path)

from fastclip.ops import clip_loss, clip_loss_ref, siglip_loss, siglip_loss_ref

CPU_SIZES = [(1024, 512), (4096, 512), (8192, 512)]
GPU_SIZES = [(b, d) for b in (8192, 32768, 65536) for d in (512, 768, 1024)]
PROVIDERS = ["open_clip", "reference", "chunked", "fused"]
SCALE, BIAS = 14.29, -10.0


def loss_fn(loss_name: str, provider: str):
    """fn(x, y, s, b) -> loss for one provider."""
    if provider == "open_clip":
        from open_clip.loss import ClipLoss, SigLipLoss

        return (ClipLoss if loss_name == "clip" else SigLipLoss)()
    if provider == "reference":
        return clip_loss_ref if loss_name == "clip" else siglip_loss_ref
    op = clip_loss if loss_name == "clip" else siglip_loss
    backend = "triton" if provider == "fused" else "chunked"
    return lambda x, y, s, b: op(x, y, s, b, backend=backend)


def make_inputs(batch: int, dim: int, device: str, dtype: torch.dtype):
    generator = torch.Generator(device=device).manual_seed(0)
    x = F.normalize(torch.randn(batch, dim, generator=generator, device=device), dim=-1).to(dtype).requires_grad_()
    y = F.normalize(torch.randn(batch, dim, generator=generator, device=device), dim=-1).to(dtype).requires_grad_()
    s = torch.tensor(SCALE, device=device, requires_grad=True)
    b = torch.tensor(BIAS, device=device, requires_grad=True)
    return x, y, s, b


def step(fn, inputs) -> None:
    """One forward+backward; gradients are dropped so every call allocates them afresh."""
    for t in inputs:
        t.grad = None
    fn(*inputs).backward()


def _proc_status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def cpu_peak_bytes(loss_name: str, provider: str, batch: int, dim: int) -> int:
    """Peak RSS growth of one forward+backward, measured in a fresh subprocess (see the module docstring)."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    args = [sys.executable, __file__, "--cpu-peak", loss_name, provider, str(batch), str(dim)]
    out = subprocess.run(args, capture_output=True, text=True, env=env, check=True, timeout=1800).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_bytes"]


def _measure_cpu_peak_here(loss_name: str, provider: str, batch: int, dim: int) -> int:
    fn = loss_fn(loss_name, provider)
    step(fn, make_inputs(64, dim, "cpu", torch.float32))  # warm-up: library initialisation, thread pools
    inputs = make_inputs(batch, dim, "cpu", torch.float32)
    before = _proc_status_bytes("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    step(fn, inputs)
    return _proc_status_bytes("VmHWM") - before


def cuda_peak_bytes(fn, inputs) -> int:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    step(fn, inputs)
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


def _cases():
    device = "cuda" if torch.cuda.is_available() else "cpu"
    sizes = GPU_SIZES if device == "cuda" else CPU_SIZES
    for loss_name in ("clip", "siglip"):
        for batch, dim in sizes:
            for provider in PROVIDERS:
                yield pytest.param(loss_name, f"{batch}x{dim}", provider, device, id=f"{loss_name}-{batch}x{dim}-{provider}")


@pytest.mark.parametrize("loss_name, size, provider, device", list(_cases()))
def test_contrastive_loss(benchmark, bench_info, loss_name, size, provider, device):
    if provider == "fused" and device != "cuda":
        pytest.skip("the fused (Triton) loss runs on CUDA; the CPU's fast path is 'chunked'")
    batch, dim = map(int, size.split("x"))
    benchmark.group = f"{loss_name} {size}"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    fn = loss_fn(loss_name, provider)
    bench_info.update(loss=loss_name, provider=provider, batch=batch, dim=dim, dtype=str(dtype), tflop_count="8*B*B*D")
    if device == "cuda":
        try:
            inputs = make_inputs(batch, dim, device, dtype)
            bench_info["peak_mb"] = cuda_peak_bytes(fn, inputs) / 2**20
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            pytest.skip(f"{provider} runs out of GPU memory at {size}")
    else:
        bench_info["peak_mb"] = cpu_peak_bytes(loss_name, provider, batch, dim) / 2**20
        inputs = make_inputs(batch, dim, device, dtype)

    def run():
        step(fn, inputs)
        if device == "cuda":
            torch.cuda.synchronize()

    timed(benchmark, run, Timing(rounds=3 if batch >= 4096 else 10, warmup=1))


def test_done_when_chunked_vs_open_clip(benchmark, bench_info):
    """CPU, B = 8192, D = 512: chunked peak <= 1/8 of open_clip's and time <= 1.3x, measured together."""
    batch, dim = 8192, 512
    benchmark.group = "done-when"
    chunked, open_clip = loss_fn("clip", "chunked"), loss_fn("clip", "open_clip")
    inputs = make_inputs(batch, dim, "cpu", torch.float32)
    peaks = {name: cpu_peak_bytes("clip", name, batch, dim) for name in ("chunked", "open_clip")}
    memory_ratio = peaks["chunked"] / peaks["open_clip"]
    bench_info.update(provider="chunked vs open_clip ClipLoss", batch=batch, dim=dim, dtype="float32",
                      peak_mb={name: p / 2**20 for name, p in peaks.items()}, memory_ratio=memory_ratio)  # fmt: skip
    # Interleaved rounds (benchmarks/conftest.py timed_pair): load from other processes hits both alike.
    result = timed_pair(benchmark, lambda: step(chunked, inputs), lambda: step(open_clip, inputs), Timing(3, 1))
    time_ratio = 1 / result["ratio"] if result else float("nan")
    print(f"\nchunked / open_clip at B={batch}, D={dim}: time {time_ratio:.2f}x, peak memory {memory_ratio:.3f}x "
          f"({peaks['chunked'] / 2**20:.0f} MB vs {peaks['open_clip'] / 2**20:.0f} MB)")
    assert memory_ratio <= 1 / 8
    assert not result or time_ratio <= 1.3


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--cpu-peak":
        torch.set_grad_enabled(True)
        peak = _measure_cpu_peak_here(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
        print(json.dumps({"peak_bytes": peak}))
    else:
        sys.exit(f"usage: {sys.argv[0]} --cpu-peak LOSS PROVIDER BATCH DIM")
