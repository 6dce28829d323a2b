"""All eight saliency metrics on MIT1003-sized maps: fastclip vs the numpy transcription of the MIT code.

Maps are 768 x 1024 (MIT1003's most common size): the 50 real fixation maps of ../shared/data/mit1003-subset
resized to it and repeated (smooth synthetic blob maps when the data is absent). Fixations are the maps' local maxima
(61 x 61) of at least a quarter of the maximum (the subset has no raw fixations). Predictions are the maps reduced to
24 x 32 plus noise, like a ViT's patch map, so every metric resizes them. The issue's workload is 1,003 maps; on the
CPU the count is scaled down to COUNT_CPU maps (the ratio is what the issue asks for; both sides scale linearly).

Providers: fastclip (auto backend: the C++ extension on the CPU, the batched torch path on CUDA), batched (torch
ops, the CUDA path) and numpy (tests/saliency_mit_numpy.py, one image at a time, via
tests/test_saliency_metrics.py::transcribed). test_done_when_cpu times the transcription with its own numpy draws
(MATLAB's rand / randi / randperm), so that drawing random numbers costs both sides.

Done-when (issue 6, 2 CPU cores): fastclip >= 5x faster than the numpy transcription, measured in one run by
test_done_when_cpu (which also records the per-metric ratios). fastclip is timed with torch's default thread count
and with one thread, and the faster counts: on a busy shared machine the second thread's wake-up latency can outweigh
its work (both figures are recorded, with the load average).
    pytest benchmarks/bench_saliency_metrics.py --benchmark-only --benchmark-group-by=group
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fastclip.ops import saliency_metrics
from fastclip.ops.saliency_metrics import METRICS

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # the transcription lives with the tests (the package `tests`)
from tests import saliency_mit_numpy as mit  # noqa: E402
from tests.test_saliency_metrics import transcribed  # noqa: E402

MIT_MAPS = REPO_ROOT.parent / "shared" / "data" / "mit1003-subset" / "fixation-maps"
HEIGHT, WIDTH = 768, 1024
COUNT_GPU, COUNT_CPU = 1003, 16
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def make_maps(count: int, seed: int = 0):
    """(fixation maps float32, fixations bool, predictions float32), each (count, ...)."""
    if MIT_MAPS.is_dir():
        from PIL import Image

        sources = []
        for path in sorted(MIT_MAPS.glob("*.jpg")):
            image = torch.from_numpy(np.asarray(Image.open(path).convert("L"), dtype=np.float32) / 255)
            sources.append(F.interpolate(image[None, None], size=(HEIGHT, WIDTH), mode="bilinear")[0, 0])
        maps = torch.stack([sources[i % len(sources)] for i in range(count)])
    else:
        generator = torch.Generator().manual_seed(seed)
        coarse = torch.rand(count, 1, 6, 8, generator=generator) ** 4
        maps = F.interpolate(coarse, size=(HEIGHT, WIDTH), mode="bicubic").clamp(min=0)[:, 0]
    peaks = F.max_pool2d(maps.unsqueeze(1), 61, stride=1, padding=30).squeeze(1)
    fixations = (maps == peaks) & (maps >= 0.25 * maps.amax((1, 2), keepdim=True))
    generator = torch.Generator().manual_seed(seed + 1)
    pred = F.interpolate(maps.unsqueeze(1), size=(24, 32), mode="area").squeeze(1)
    pred = pred + 0.05 * torch.rand(count, 24, 32, generator=generator)
    return maps, fixations, pred


@contextlib.contextmanager
def torch_threads(threads: int):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _best_of(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def run_fastclip(pred, maps, fixations, backend="auto"):
    scores = saliency_metrics(pred, fixation_map=maps, fixations=fixations, seed=0, backend=backend)
    if pred.is_cuda:
        torch.cuda.synchronize()
    return scores


@pytest.fixture(scope="module")
def cpu_maps():
    return make_maps(COUNT_CPU)


@pytest.mark.benchmark(group="saliency_all_metrics")
@pytest.mark.parametrize("provider", ["fastclip", "batched", "numpy"])
def test_saliency_metrics(benchmark, bench_info, cpu_maps, provider):
    maps, fixations, pred = cpu_maps if DEVICE.type == "cpu" else make_maps(COUNT_GPU)
    bench_info.update(provider=provider, maps=maps.shape[0], size=f"{HEIGHT}x{WIDTH}", device=str(DEVICE),
                      fixations_per_map=round(float(fixations.sum((1, 2)).double().mean()), 1))  # fmt: skip
    if provider == "numpy":
        if DEVICE.type == "cuda":
            maps, fixations, pred = maps[:COUNT_CPU], fixations[:COUNT_CPU], pred[:COUNT_CPU]
        benchmark.pedantic(transcribed, args=(pred, maps, fixations), kwargs=dict(seed=0), rounds=1, iterations=1)
        return
    inputs = (pred.to(DEVICE), maps.to(DEVICE), fixations.to(DEVICE))
    backend = "auto" if provider == "fastclip" else "batched"
    benchmark.pedantic(run_fastclip, args=inputs, kwargs=dict(backend=backend), rounds=3, iterations=1, warmup_rounds=1)


def _numpy_metric(name, p, g, f, others, rng):
    """One metric of one map by the transcription, drawing its own random numbers with numpy as MATLAB's code does
    (rand for AUC-Judd's jitter, randi for AUC-Borji, randperm for shuffled AUC), so their cost is counted too."""
    if name == "cc":
        return mit.CC(p, g)
    if name == "nss":
        return mit.NSS(p, f)
    if name == "sim":
        return mit.similarity(p, g)
    if name == "kld":
        return mit.KLdiv(p, g)
    if name == "info_gain":
        return mit.InfoGain(p, f, others["baseline"])
    if name == "auc_judd":
        return mit.AUC_Judd(p, f, rng.random(f.size) / 1e7)
    fixations = int(f.sum())
    if name == "auc_borji":
        return mit.AUC_Borji(p, f, rng.integers(0, f.size, size=(fixations, 100)))
    union = others["union"]
    take = min(fixations, len(union))
    return mit.AUC_shuffled(p, f, [union[rng.permutation(len(union))[:take]] for _ in range(100)])


def test_done_when_cpu(benchmark, bench_info, cpu_maps):
    """fastclip (auto, all metrics at once) vs the transcription on the same maps, plus each metric alone."""
    from fastclip.ops.saliency_metrics import center_bias, other_images

    maps, fixations, pred = cpu_maps
    scores = run_fastclip(pred, maps, fixations)  # warm-up
    seconds_by_threads = {}
    # On a shared machine, waking a second thread can cost more than it gives: time both.
    for threads in (torch.get_num_threads(), 1):
        with torch_threads(threads):
            seconds_by_threads[threads] = _best_of(lambda: run_fastclip(pred, maps, fixations), 3)
    fast_seconds = min(seconds_by_threads.values())
    count = maps.shape[0]
    others = other_images(0, count, min(10, count - 1))
    baseline = center_bias(HEIGHT, WIDTH).numpy()
    arrays = [(pred[i].double().numpy(), maps[i].double().numpy(), fixations[i].numpy()) for i in range(count)]
    unions = [np.unique(np.concatenate([np.flatnonzero(arrays[o][2]) for o in row.tolist()])) for row in others]
    context = [dict(baseline=baseline, union=union) for union in unions]
    rng = np.random.default_rng(0)
    per_metric = {}
    numpy_total = 0.0
    for name in METRICS:
        start = time.perf_counter()
        expected = [_numpy_metric(name, p, g, f, extra, rng) for (p, g, f), extra in zip(arrays, context)]
        numpy_seconds = time.perf_counter() - start
        numpy_total += numpy_seconds
        start = time.perf_counter()
        alone = saliency_metrics(pred, fixation_map=maps, fixations=fixations, metrics=[name], seed=0)[name]
        fast_alone = time.perf_counter() - start
        # Exact metrics agree to 1e-6; the random ones (other draws here) to their Monte-Carlo spread.
        tolerance = 1e-6 if name in ("cc", "nss", "sim", "kld", "info_gain") else 0.02
        np.testing.assert_allclose(scores[name].numpy(), expected, rtol=0, atol=tolerance, err_msg=name)
        torch.testing.assert_close(alone, scores[name], rtol=0, atol=1e-12)
        per_metric[name] = round(numpy_seconds / fast_alone, 1)
    bench_info.update(
        load_average=os.getloadavg()[0], maps=count, size=f"{HEIGHT}x{WIDTH}",
        fastclip_seconds_by_threads={k: round(v, 3) for k, v in seconds_by_threads.items()},
        numpy_seconds=round(numpy_total, 2), speedup=round(numpy_total / fast_seconds, 1),
        speedup_per_metric_alone=per_metric,
    )  # fmt: skip
    benchmark.pedantic(lambda: None, rounds=1)
    print("\n" + "\n".join(f"{key}: {value}" for key, value in bench_info.items()))
    assert numpy_total / fast_seconds >= 5


@pytest.mark.benchmark(group="resize_bilinear")
@pytest.mark.parametrize("provider", ["fastclip", "torch_interpolate"])
def test_resize_bilinear(benchmark, bench_info, cpu_maps, provider):
    """The metrics' first step: patch maps (24 x 32) to the fixation size, into one reused buffer as the metrics do
    it (fastclip: C++ on the CPU) vs torch.nn.functional.interpolate allocating its output."""
    from fastclip.ops import resize_bilinear, resize_bilinear_ref

    _, _, pred = cpu_maps
    pred = pred.to(DEVICE)
    bench_info.update(provider=provider, maps=pred.shape[0], size=f"{HEIGHT}x{WIDTH}", device=str(DEVICE))
    if provider == "fastclip":
        buffer = torch.empty(pred.shape[0], HEIGHT, WIDTH, dtype=torch.float64, device=DEVICE)
        run = lambda: resize_bilinear(pred, (HEIGHT, WIDTH), out=buffer)  # noqa: E731
    else:
        run = lambda: resize_bilinear_ref(pred, (HEIGHT, WIDTH))  # noqa: E731
    benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)
