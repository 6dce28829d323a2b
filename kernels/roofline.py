"""Roofline estimate of fastclip's GPU goals: the work each goal's code path does as written, and the floor time
that work allows on an H100 / H200.

An estimate, labelled as one: FLOPs and HBM bytes are counted from the code's shapes and constants (tile sizes,
chunk budgets, passes over the data), assuming L2 serves re-reads of a tile's operands within one kernel; the
floor is max(FLOPs / peak, bytes / bandwidth, launches x launch latency). `python -m fastclip.kernels.audit
--roofline` prints it; `--update-results benchmarks/RESULTS.md --roofline` writes it between ROOFLINE_MARKERS.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

ROOFLINE_MARKERS = ("<!-- roofline:begin -->", "<!-- roofline:end -->")


@dataclass(frozen=True)
class Device:
    name: str
    tensor_flops: float  # dense bf16 tensor-core FLOP/s
    vector_flops: float  # fp32 FLOP/s of the CUDA cores (elementwise maths, integer hashing)
    hbm_bytes_per_s: float


H100 = Device("H100 SXM", 989e12, 67e12, 3.35e12)
H200 = Device("H200", 989e12, 67e12, 4.8e12)
LAUNCH_SECONDS = 4e-6  # one kernel launch on a busy stream, back to back


@dataclass(frozen=True)
class Goal:
    workload: str
    tensor_flops: float
    vector_flops: float
    hbm_bytes: float
    launches: int
    goal: str
    goal_seconds: float  # the time the goal allows for this workload on an H200
    notes: str

    def floor(self, device: Device) -> tuple[float, str]:
        """(seconds, limiter) for this device."""
        times = {
            "compute (tensor cores)": self.tensor_flops / device.tensor_flops,
            "compute (CUDA cores)": self.vector_flops / device.vector_flops,
            "bandwidth": self.hbm_bytes / device.hbm_bytes_per_s,
            "launch count": self.launches * LAUNCH_SECONDS,
        }
        limiter = max(times, key=times.get)
        return times[limiter], limiter


def _contrastive_goals(batch: int, dim: int) -> list[Goal]:
    from fastclip.kernels.contrastive_loss import default_config

    loss = importlib.import_module("fastclip.ops.contrastive_loss")
    import torch

    g_bytes = 2  # bf16 G
    rows_per_chunk = max(1, loss.TRITON_GRAD_BYTES // (batch * g_bytes))
    chunks = -(-batch // rows_per_chunk)
    fwd = default_config((9, 0), torch.bfloat16, "clip_fwd", dim)
    row_blocks = -(-batch // fwd.block_m)
    features = 2 * batch * dim * 2  # X and Y in bf16
    gradients = 2 * batch * dim * 4  # dX, dY accumulated in fp32
    partials = 2 * 3 * row_blocks * batch * 4  # the forward's (max, sum, dot) column partials, written and read
    g_traffic = 3 * batch * batch * g_bytes  # G written by the tile kernel, read by the dX and the dY GEMMs
    dy_passes = 2 * chunks * batch * dim * 4  # dY += Gᵀ·X read and written once per chunk
    gemm = 2 * batch * batch * dim
    exp_flops = 12 * batch * batch  # per logit: scale, max, exp2, sums (forward) and two exp2 + fma (G)
    clip = Goal(
        f"fused CLIP loss fwd+bwd, B = {batch:,}, D = {dim}, bf16", 4 * gemm, 2 * exp_flops,
        2 * features + partials + g_traffic + dy_passes + gradients, 1 + 3 * chunks + 4, "<= 14 ms", 14e-3,
        f"S = X·Yᵀ twice (forward, G kernel) + dX = G·Y + dY = Gᵀ·X: 8·B²·D; G in {chunks} chunks of "
        f"{rows_per_chunk:,} rows",
    )
    siglip = Goal(
        f"fused SigLIP loss fwd+bwd, B = {batch:,}, D = {dim}, bf16", 3 * gemm, exp_flops,
        features + g_traffic + dy_passes + gradients, 3 * chunks + 4, "none stated", 0,
        "S once (the forward writes G = σ(Z)·coef) + the two GEMMs: 6·B²·D",
    )
    return [clip, siglip]


def _stimulus_goals() -> list[Goal]:
    images, sigmas, pixels = 4096, 6, 3 * 224 * 224
    # Philox4x32-10 (~100 integer ops per 4 normals), Box-Muller (~40), then clip/quantise/normalise per sigma (~8).
    noise = Goal(
        f"gaussian_noise, {images} x 3 x 224 x 224 uint8 -> fp32, {sigmas}-sigma sweep", 0,
        images * pixels * (25 + 10 + 8 * sigmas), images * pixels * (1 + 4 * sigmas), 1,
        ">= 80% of copy bandwidth", 0, "one read of the image, one fp32 write per sigma",
    )
    noise_floor, _ = noise.floor(H200)
    noise = Goal(**{**noise.__dict__, "goal_seconds": noise_floor / 0.8})
    toyworld = importlib.import_module("fastclip.ops.toyworld_render")
    pieces, terms = toyworld.PIECES, toyworld.TERMS
    # per pixel: coordinates and rotation ~20, atan2 + fold ~40, each silhouette term ~12, two texture waves ~60
    # each (sin/cos included), grating ~30, three channel lerps ~30.
    per_pixel = 20 + 40 + 12 * pieces * terms + 120 + 30 + 30
    goals = [noise]
    for count, size, rate in ((65536, 64, 100_000), (4096, 224, 10_000)):
        goals.append(Goal(
            f"toyworld_render, {count:,} images at {size} px", 0, count * size * size * per_pixel,
            count * 3 * size * size * 4, 1, f">= {rate:,} img/s", count / rate,
            f"~{per_pixel} FLOPs per pixel ({pieces} pieces x {terms} terms), fp32 out",
        ))
    return goals


def _metric_goals() -> list[Goal]:
    resamples, n = 10_000, 3_000
    matrix = resamples * n * 8  # one float64 (R, n) pass
    maps, side = 1003, 768 * 1024
    return [
        Goal(
            f"bootstrap CI of Spearman, n = {n:,}, {resamples:,} resamples (torch counts path)", 0,
            resamples * n * 40, 30 * matrix, 60, "<= 50 ms", 50e-3,
            "~30 float64 passes over the (R, n) count matrix: draws, scatter, gathers, cumsums, ranks, moments",
        ),
        Goal(
            f"all 8 saliency metrics, {maps:,} maps of 768 x 1024 (batched torch path)", 0, maps * side * 60,
            30 * maps * side * 4, 200, "<= 1 s", 1.0,
            "~30 fp32 passes over the maps: normalisations, CC/SIM/KLD/NSS/IG terms, the AUC threshold sort",
        ),
        Goal(
            "DALI decode, 224 px from 256 px JPEG shards, per 10,000 images", 0, 0,
            10_000 * (20e3 + 2 * 256 * 256 * 3 + 224 * 224 * 3), 3 * 10_000 // 256, ">= 10,000 img/s", 1.0,
            "HBM is not the limit: the JPEG decoders (NVJPG engines, host Huffman) are, which this model leaves out",
        ),
    ]


def roofline_goals(batch: int = 32768, dim: int = 768) -> list[Goal]:
    return _contrastive_goals(batch, dim) + _stimulus_goals() + _metric_goals()


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3g}"


def format_roofline(markdown: bool = False) -> str:
    header = ["workload", "tensor FLOPs", "other FLOPs", "HBM bytes", "H100 floor ms", "H200 floor ms", "limiter",
              "goal (H200)", "floor / goal", "counted"]
    rows = []
    for goal in roofline_goals():
        h100, _ = goal.floor(H100)
        h200, limiter = goal.floor(H200)
        fraction = f"{h200 / goal.goal_seconds:.1%}" if goal.goal_seconds else "-"
        rows.append([goal.workload, f"{goal.tensor_flops:.3g}", f"{goal.vector_flops:.3g}", f"{goal.hbm_bytes:.3g}",
                     _ms(h100), _ms(h200), limiter, goal.goal, fraction, goal.notes])
    title = (
        f"Roofline (an estimate, not a measurement): peaks {H100.tensor_flops / 1e12:.0f} TFLOP/s dense bf16, "
        f"{H100.vector_flops / 1e12:.0f} TFLOP/s fp32 CUDA cores, HBM {H100.hbm_bytes_per_s / 1e12:.2f} TB/s "
        f"(H100) and {H200.hbm_bytes_per_s / 1e12:.1f} TB/s (H200), {LAUNCH_SECONDS * 1e6:.0f} us per launch. "
        "floor = max(FLOPs / peak, bytes / bandwidth, launches x latency); floor / goal = the fraction of the "
        "roofline the goal asks for."
    )
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return title + "\n\n" + "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header) - 1)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    return title + "\n" + "\n".join(lines)
