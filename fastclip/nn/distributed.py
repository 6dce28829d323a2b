"""torch.distributed plumbing for the fused losses.

ProcessGroupCollectives gives the strip drivers of fastclip.ops.contrastive_loss their four collectives;
check_equal_batches turns unequal per-rank batches into an error on every rank (the strip layout assumes equal
shares, and a mismatched all-gather would hang); reference_clip_loss / reference_siglip_loss are open_clip 3.3's
own gather-based computations, the "reference" backend of the modules under torch.distributed.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


def _collective(new_name: str, old_name: str):
    # torch >= 2.12 names the single-tensor collectives *_single and deprecates the *_tensor names it replaces.
    return getattr(dist, new_name, None) or getattr(dist, old_name)


class ProcessGroupCollectives:
    """Collectives over a process group, for tensors whose first axis is split evenly across ranks."""

    def __init__(self, rank: int, world_size: int, group: dist.ProcessGroup | None = None):
        self.rank = rank
        self.world_size = world_size
        self.group = group

    def all_gather_rows(self, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.contiguous()
        out = tensor.new_empty((self.world_size * tensor.shape[0], *tensor.shape[1:]))
        _collective("all_gather_single", "all_gather_into_tensor")(out, tensor, group=self.group)
        return out

    def all_reduce_max_(self, tensor: torch.Tensor) -> None:
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX, group=self.group)

    def all_reduce_sum_(self, tensor: torch.Tensor) -> None:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=self.group)

    def reduce_scatter_rows(self, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.contiguous()
        out = tensor.new_empty((tensor.shape[0] // self.world_size, *tensor.shape[1:]))
        _collective("reduce_scatter_single", "reduce_scatter_tensor")(out, tensor, group=self.group)
        return out


def collectives_for(owner: str, rank: int, world_size: int) -> ProcessGroupCollectives:
    """The default process group's collectives, after checking that it matches the module's rank and world_size."""
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            f"{owner}: world_size={world_size} needs torch.distributed initialised "
            "(torch.distributed.init_process_group, e.g. under torchrun)"
        )
    if dist.get_world_size() != world_size or dist.get_rank() != rank:
        raise ValueError(
            f"{owner}: constructed with rank={rank}, world_size={world_size}, but this process is rank "
            f"{dist.get_rank()} of {dist.get_world_size()}"
        )
    return ProcessGroupCollectives(rank, world_size)


def check_equal_batches(
    owner: str, image_features: torch.Tensor, text_features: torch.Tensor, comm: ProcessGroupCollectives
) -> None:
    """Raise the same ValueError on every rank unless all ranks hold equally shaped feature batches."""
    shape = torch.tensor([[*image_features.shape, *text_features.shape]], dtype=torch.int64, device=image_features.device)
    shapes = comm.all_gather_rows(shape).tolist()
    if any(row != shapes[0] for row in shapes) or shapes[0][0] != shapes[0][2] or shapes[0][1] != shapes[0][3]:
        listing = ", ".join(f"rank {r}: image {tuple(s[:2])} text {tuple(s[2:])}" for r, s in enumerate(shapes))
        raise ValueError(
            f"{owner}: every rank must pass image and text features of one equal (batch, dim) shape; got {listing}. "
            "Use a sampler/loader that drops the last incomplete batch (drop_last=True)"
        )


def _gather(tensor: torch.Tensor, comm: ProcessGroupCollectives, with_grad: bool, keep_local: bool) -> torch.Tensor:
    if with_grad:
        return torch.cat(torch.distributed.nn.all_gather(tensor), dim=0)
    gathered = list(comm.all_gather_rows(tensor.detach()).chunk(comm.world_size))
    if keep_local:
        gathered[comm.rank] = tensor  # open_clip re-inserts the local slot so that it carries a gradient
    return torch.cat(gathered, dim=0)


def reference_clip_loss(
    image_features, text_features, logit_scale, logit_bias, *, local_loss: bool, gather_with_grad: bool, comm
) -> torch.Tensor:
    """open_clip 3.3 ClipLoss.forward for world_size > 1 (torch.distributed, not Horovod), B x B logits and all."""
    all_image = _gather(image_features, comm, gather_with_grad, keep_local=not local_loss)
    all_text = _gather(text_features, comm, gather_with_grad, keep_local=not local_loss)
    if local_loss:
        logits_per_image = logit_scale * image_features @ all_text.T
        logits_per_text = logit_scale * text_features @ all_image.T
        labels = torch.arange(image_features.shape[0], device=image_features.device) + image_features.shape[0] * comm.rank
    else:
        logits_per_image = logit_scale * all_image @ all_text.T
        logits_per_text = logits_per_image.T
        labels = torch.arange(all_image.shape[0], device=image_features.device)
    if logit_bias is not None:
        logits_per_image = logits_per_image + logit_bias
        logits_per_text = logits_per_text + logit_bias
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2


def reference_siglip_loss(image_features, text_features, logit_scale, logit_bias, *, comm) -> torch.Tensor:
    """open_clip 3.3 SigLipLoss for world_size > 1: this rank's images against every rank's texts, over b.

    open_clip's dist_impl variants (bidir, shift, reduce, gather) exchange the text blocks differently; the loss
    and the gradients are the same sum, written here as one strip.
    """
    all_text = torch.cat(torch.distributed.nn.all_gather(text_features), dim=0)
    logits = logit_scale * image_features @ all_text.T
    if logit_bias is not None:
        logits = logits + logit_bias
    b = image_features.shape[0]
    labels = -torch.ones_like(logits)
    labels[:, comm.rank * b : (comm.rank + 1) * b] += 2 * torch.eye(b, dtype=logits.dtype, device=logits.device)
    return -F.logsigmoid(labels * logits).sum() / b
