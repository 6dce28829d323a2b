"""The training loss: chosen here, so that other losses (the fused Triton loss, SigLIP) plug in at one place."""

from __future__ import annotations

import math

import torch

from fastclip.train.distributed import World


# --loss -> the fastclip.nn backend: auto is Triton on CUDA and the chunked PyTorch loss on the CPU.
LOSS_BACKENDS = {"auto": "auto", "fused": "triton", "reference": "reference"}


def create_loss(args, world: World) -> torch.nn.Module:
    """open_clip's ClipLoss (or SigLipLoss with --siglip) over the world's ranks, computed by fastclip.nn.

    --local-loss / --gather-with-grad keep open_clip's meanings; --loss picks the implementation.
    """
    from fastclip.nn import FusedClipLoss, FusedSigLipLoss

    backend = LOSS_BACKENDS[args.loss]
    if args.siglip:
        return FusedSigLipLoss(rank=world.rank, world_size=world.world_size, backend=backend,
                               dist_impl=getattr(args, "loss_dist_impl", None))
    return FusedClipLoss(
        local_loss=args.local_loss,
        gather_with_grad=args.gather_with_grad,
        cache_labels=True,
        rank=world.rank,
        world_size=world.world_size,
        backend=backend,
    )


def model_kwargs(args) -> dict:
    """open_clip create_model keyword arguments the loss needs: SigLIP's initial logit_scale and logit_bias."""
    if args.siglip:
        return {"init_logit_scale": math.log(10), "init_logit_bias": -10.0}
    return {}
