"""GPU check and timing of issue 6's ops (a step of run.py): each GPU result against the CPU path, then the three
goals, timed with CUDA events (median of several calls after a warm-up). Prints one table last; every row is also
recorded as a figure for device.json.

  bootstrap   10,000-resample paired BCa CI of Spearman at n = 3,000 (torch counts path)     goal <= 50 ms
  kendall     Kendall tau-b of 24 x 10,125 against one vector (tiled Triton pair count)        goal <= 20 ms
  saliency    all 8 metrics on 1,003 maps of 768 x 1024 (batched torch path)                   goal <= 1 s
plus Spearman and Pearson on 24 x 10,125 and Kendall at n = 100,000 (sort-based count) for context.
"""

from __future__ import annotations

import sys

import numpy as np
import torch
import torch.nn.functional as F

from fastclip.ops import bootstrap_ci, kendall_tau_b, pearson, saliency_metrics, spearman
from fastclip.ops.bootstrap import bootstrap_distribution

from _common import Figures, require_cuda, time_ms

DEVICE = torch.device("cuda")


def layer_data(rows: int, n: int, seed: int):
    rng = np.random.default_rng(seed)
    human = np.round(rng.uniform(1, 5, size=n), 2)
    return torch.from_numpy(0.6 * human + rng.normal(size=(rows, n))), torch.from_numpy(human)


def synthetic_maps(count: int, height: int = 768, width: int = 1024, seed: int = 0):
    """Smooth blob fixation maps, their local maxima as fixations, and 24 x 32 patch-map predictions (on the GPU)."""
    generator = torch.Generator(device=DEVICE).manual_seed(seed)
    coarse = torch.rand(count, 1, 6, 8, generator=generator, device=DEVICE) ** 4
    maps = F.interpolate(coarse, size=(height, width), mode="bicubic").clamp(min=0)[:, 0]
    peaks = F.max_pool2d(maps.unsqueeze(1), 61, stride=1, padding=30).squeeze(1)
    fixations = (maps == peaks) & (maps >= 0.25 * maps.amax((1, 2), keepdim=True))
    pred = F.interpolate(maps.unsqueeze(1), size=(24, 32), mode="area").squeeze(1)
    pred = pred + 0.05 * torch.rand(pred.shape, generator=generator, device=DEVICE)
    return maps, fixations, pred


def check(name: str, gpu: torch.Tensor, cpu: torch.Tensor, atol: float) -> str:
    error = (gpu.cpu() - cpu).abs().nan_to_num(0).max().item()
    same_nans = torch.equal(torch.isnan(gpu.cpu()), torch.isnan(cpu))
    ok = error <= atol and same_nans
    print(f"check {name:<28} max |gpu - cpu| = {error:.2e} (tolerance {atol:.0e}) {'ok' if ok else 'MISMATCH'}")
    return "ok" if ok else "MISMATCH"


def main() -> int:
    require_cuda("metrics")
    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    figures = Figures()
    rows = []

    def record(name: str, ms: float, goal: float | None, status: str) -> None:
        rows.append((name, ms, goal, status))
        figures.add(name, ms, "ms", "" if goal is None else f"<= {goal:.0f} ms", None if goal is None else ms <= goal,
                    status)

    x, y = layer_data(1, 3000, seed=2)
    gx, gy = x.to(DEVICE), y.to(DEVICE)
    status = check("bootstrap distribution", bootstrap_distribution(gx, gy.view(1, -1), resamples=2000, seed=1),
                   bootstrap_distribution(x, y.view(1, -1), resamples=2000, seed=1), 1e-12)
    result = bootstrap_ci(gx[0], gy, method="spearman")
    expected = bootstrap_ci(x[0], y, method="spearman")
    status = status if status != "ok" else check("bootstrap BCa bounds", torch.stack([result.low, result.high]),
                                                 torch.stack([expected.low, expected.high]), 1e-12)
    ms = time_ms(lambda: bootstrap_ci(gx[0], gy, method="spearman"), repeats=5)
    record("bootstrap Spearman BCa, n=3000, R=10000", ms, 50.0, status)

    layers, human = layer_data(24, 10_125, seed=0)
    gl, gh = layers.to(DEVICE), human.to(DEVICE)
    for name, fn, goal in [("kendall", kendall_tau_b, 20.0), ("spearman", spearman, None), ("pearson", pearson, None)]:
        status = check(f"{name} 24x10125", fn(gl, gh), fn(layers, human), 1e-12)
        record(f"{name} tau/rho 24 x 10125", time_ms(lambda: fn(gl, gh)), goal, status)

    big, scores = layer_data(1, 100_000, seed=1)
    status = check("kendall n=100000 (sort-based)", kendall_tau_b(big.to(DEVICE), scores.to(DEVICE)),
                   kendall_tau_b(big, scores), 1e-12)
    record("kendall tau-b n=100000", time_ms(lambda: kendall_tau_b(big.to(DEVICE), scores.to(DEVICE)), repeats=5),
           None, status)

    maps, fixations, pred = synthetic_maps(1003)
    small = slice(0, 12)
    gpu_scores = saliency_metrics(pred[small], fixation_map=maps[small], fixations=fixations[small], seed=0)
    cpu_scores = saliency_metrics(
        pred[small].cpu(), fixation_map=maps[small].cpu(), fixations=fixations[small].cpu(), seed=0
    )
    status = "ok"
    for metric in gpu_scores:
        if check(f"saliency {metric}", gpu_scores[metric], cpu_scores[metric], 1e-9) != "ok":
            status = "MISMATCH"
    ms = time_ms(lambda: saliency_metrics(pred, fixation_map=maps, fixations=fixations, seed=0), repeats=3, warmup=1)
    record("all 8 saliency metrics, 1003 maps 768x1024", ms, 1000.0, status)

    print()
    print(f"{'workload':<46} {'ms':>10} {'goal ms':>9} {'meets':>6} {'GPU = CPU':>10}")
    for name, ms, goal, status in rows:
        meets = "-" if goal is None else ("yes" if ms <= goal else "NO")
        print(f"{name:<46} {ms:>10.2f} {('-' if goal is None else f'{goal:.0f}'):>9} {meets:>6} {status:>10}")
    return 0 if all(status == "ok" for *_, status in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
