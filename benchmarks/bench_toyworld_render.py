"""toyworld_render: rendering the embedded toy world, and whether it outpaces the training step it feeds.

Providers:
    reference   toyworld_render_ref, the plain-PyTorch renderer (the CPU path of fastclip-train on the toy world)
    fused       the Triton kernel (kernels/toyworld_render.py, backend "triton"; timed on CUDA only)
Sizes: S in {64, 224} px; N = 256 images (and 4096 on CUDA). extra_info records images/s and GB/s, counting one
float32 write of every output pixel (the renderer reads only ~20 numbers per image).

test_render_outpaces_train_step renders 64 images at fc-tiny-vit's 64 px and times one forward + backward of
fc-tiny-vit at batch 64 (CLIP loss included, no optimizer step) in the same run; extra_info records both and
their ratio (render_per_train_step < 1 means the renderer keeps ahead of training).

    pytest benchmarks/bench_toyworld_render.py --benchmark-only --benchmark-group-by=param:image_size

extra_info also records the 1-minute load average: on a CPU shared with other busy processes, torch's two
intra-op threads wait on each other at every op and timings collapse (OMP_NUM_THREADS=1 then measures one core).
"""

from __future__ import annotations

import os

import pytest
import torch

from conftest import Timing, timed, timed_pair  # benchmarks/conftest.py (pytest puts benchmarks/ on sys.path)

from fastclip.data.toyworld import sample_scenes
from fastclip.ops import toyworld_render, toyworld_render_ref

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
COUNTS = [256, 4096] if DEVICE.type == "cuda" else [256]
PROVIDERS = {
    "reference": toyworld_render_ref,
    "fused": lambda params, image_size: toyworld_render(params, image_size, backend="triton"),
}


def sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def render(provider: str, params, image_size: int) -> torch.Tensor:
    images = PROVIDERS[provider](params, image_size)
    sync()
    return images


@pytest.mark.parametrize("provider", list(PROVIDERS))
@pytest.mark.parametrize("count", COUNTS)
@pytest.mark.parametrize("image_size", [64, 224])
def test_toyworld_render(benchmark, bench_info, provider, count, image_size):
    if provider == "fused" and DEVICE.type != "cuda":
        pytest.skip("the fused kernel is timed on CUDA only (the interpreter says nothing about speed)")
    params = sample_scenes(count, seed=0, device=DEVICE)
    timing = Timing(rounds=5 if DEVICE.type == "cuda" or image_size == 64 else 3, warmup=1)  # same for every provider
    images = timed(benchmark, render, timing, provider, params, image_size)
    assert images.shape == (count, 3, image_size, image_size)
    seconds = benchmark.stats.stats.mean
    bench_info.update(
        provider=provider, images=count, image_size=image_size, device=str(DEVICE),
        images_per_s=round(count / seconds, 1), gb_per_s=round(images.numel() * 4 / seconds / 1e9, 3),
        load_average=round(os.getloadavg()[0], 2),
    )  # fmt: skip


def _train_step(batch: int):
    """One fc-tiny-vit training step (forward, open_clip's ClipLoss, backward) at `batch`, and the model's image size."""
    from open_clip.loss import ClipLoss

    from fastclip.models import create_model

    torch.manual_seed(0)
    bundle = create_model("fc-tiny-vit", device=DEVICE)
    model = bundle.model.train()
    images = torch.rand(batch, 3, bundle.image_size, bundle.image_size, device=DEVICE)
    texts = torch.randint(0, 49408, (batch, bundle.model_cfg["text_cfg"]["context_length"]), device=DEVICE)
    loss_fn = ClipLoss()

    def step() -> None:
        model.zero_grad(set_to_none=True)
        image_features, text_features, logit_scale = model(images, texts)[:3]
        loss_fn(image_features, text_features, logit_scale).backward()
        sync()

    return step, bundle.image_size


def test_render_outpaces_train_step(benchmark, bench_info):
    """Rendering a batch vs one training step on it, interleaved under one discipline: the ratio is step / render."""
    batch = 64
    train_step, image_size = _train_step(batch)
    params = sample_scenes(batch, seed=0, device=DEVICE)
    bench_info.update(provider="reference render vs fc-tiny-vit train step", images=batch, image_size=image_size,
                      device=str(DEVICE), model="fc-tiny-vit")  # fmt: skip
    result = timed_pair(benchmark, lambda: render("reference", params, image_size), train_step, Timing(5, 1))
    if result:
        bench_info["render_per_train_step"] = round(1 / result["ratio"], 4)
