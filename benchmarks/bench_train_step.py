"""One fastclip-train step of fc-tiny-vit at batch 64 (forward, ClipLoss, backward, AdamW), and the AdamW update
alone, with the three AdamW implementations: the per-tensor loop, foreach, and fused (what fastclip-train uses).

    pytest benchmarks/bench_train_step.py --benchmark-only --benchmark-group-by=func
Quote the ratios between providers of one run; CPU timings on a shared machine move a lot between runs.
"""

from __future__ import annotations

import pytest
import torch

from fastclip.models import create_model
from fastclip.train.config import parse_args
from fastclip.train.distributed import World
from fastclip.train.loop import clamp_logit_scale
from fastclip.train.loss import create_loss
from fastclip.train.optim import parameter_groups

BATCH = 64
OPTIMIZERS = {"loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def setup(optimizer_name: str):
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    bundle = create_model("fc-tiny-vit", device=device)
    model = bundle.model.train()
    args = parse_args([])
    optimizer = torch.optim.AdamW(parameter_groups(model, args.wd), lr=1e-4, betas=(args.beta1, args.beta2),
                                  eps=args.eps, **OPTIMIZERS[optimizer_name])
    images = torch.randn(BATCH, 3, bundle.image_size, bundle.image_size, device=device)
    texts = torch.randint(0, 49408, (BATCH, bundle.model_cfg["text_cfg"]["context_length"]), device=device)
    loss_fn = create_loss(args, World(0, 0, 1, device))
    return model, optimizer, images, texts, loss_fn, device


def train_step(model, optimizer, images, texts, loss_fn):
    optimizer.zero_grad(set_to_none=True)
    image_features, text_features, logit_scale = model(images, texts)[:3]
    loss_fn(image_features, text_features, logit_scale).backward()
    optimizer.step()
    clamp_logit_scale(model)


@pytest.mark.parametrize("optimizer_name", list(OPTIMIZERS))
def test_train_step(benchmark, bench_info, optimizer_name):
    model, optimizer, images, texts, loss_fn, device = setup(optimizer_name)
    bench_info.update(provider=optimizer_name, model="fc-tiny-vit", batch=BATCH, device=str(device))

    def step():
        train_step(model, optimizer, images, texts, loss_fn)
        sync(device)

    benchmark.pedantic(step, rounds=5, iterations=1, warmup_rounds=2)
    bench_info["images_per_s"] = BATCH / benchmark.stats.stats.median


@pytest.mark.parametrize("optimizer_name", list(OPTIMIZERS))
def test_optimizer_step(benchmark, bench_info, optimizer_name):
    model, optimizer, images, texts, loss_fn, device = setup(optimizer_name)
    bench_info.update(provider=optimizer_name, model="fc-tiny-vit", device=str(device),
                      parameters=sum(p.numel() for p in model.parameters()))
    train_step(model, optimizer, images, texts, loss_fn)  # gradients and optimizer state exist from here on

    def update():
        optimizer.step()
        sync(device)

    benchmark.pedantic(update, rounds=10, iterations=1, warmup_rounds=2)
