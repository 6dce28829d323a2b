"""Drop-in replacements for open_clip's ClipLoss and SigLipLoss, backed by fastclip.ops.contrastive_loss.

Same constructor arguments, same forward(image_features, text_features, logit_scale, logit_bias, output_dict=False)
(logit_bias optional for ClipLoss, positional for SigLipLoss, as in open_clip), same return values and, under
torch.distributed, the same per-rank losses and gradients for every local_loss / gather_with_grad combination;
plus backend= ("auto", "triton", "chunked", "reference").

With world_size > 1 the fused backends all-gather only the text features and compute one strip of rows per rank
(memory O(B·D) per rank instead of open_clip's O(b·B) logits). Every rank must hold the same batch size: unequal
batches raise a ValueError on every rank instead of hanging in a collective.
"""

from __future__ import annotations

from torch import nn

from fastclip.nn import distributed
from fastclip.ops.contrastive_loss import clip_loss, clip_loss_strip, siglip_loss, siglip_loss_strip

SIGLIP_DIST_IMPLS = ("bidir", "shift", "reduce", "gather")


class FusedClipLoss(nn.Module):
    """open_clip.loss.ClipLoss without the B x B logits.

    cache_labels is accepted and has no effect (no labels are built). use_horovod is not supported.
    """

    def __init__(
        self,
        local_loss: bool = False,
        gather_with_grad: bool = False,
        cache_labels: bool = False,
        rank: int = 0,
        world_size: int = 1,
        use_horovod: bool = False,
        *,
        backend: str = "auto",
    ):
        super().__init__()
        if use_horovod:
            raise NotImplementedError("FusedClipLoss: use_horovod=True is not supported; use torch.distributed")
        self.local_loss = local_loss
        self.gather_with_grad = gather_with_grad
        self.cache_labels = cache_labels
        self.rank = rank
        self.world_size = world_size
        self.use_horovod = use_horovod
        self.backend = backend

    def forward(self, image_features, text_features, logit_scale, logit_bias=None, output_dict=False):
        if self.world_size > 1:
            comm = distributed.collectives_for("FusedClipLoss", self.rank, self.world_size)
            distributed.check_equal_batches("FusedClipLoss", image_features, text_features, comm)
            if self.backend == "reference":
                loss = distributed.reference_clip_loss(
                    image_features, text_features, logit_scale, logit_bias,
                    local_loss=self.local_loss, gather_with_grad=self.gather_with_grad, comm=comm,
                )
            else:
                loss = clip_loss_strip(
                    image_features, text_features, logit_scale, logit_bias, comm=comm,
                    local_loss=self.local_loss, gather_with_grad=self.gather_with_grad, backend=self.backend,
                )
        else:
            loss = clip_loss(image_features, text_features, logit_scale, logit_bias, backend=self.backend)
        return {"contrastive_loss": loss} if output_dict else loss


class FusedSigLipLoss(nn.Module):
    """open_clip.loss.SigLipLoss without the B x B logits. As there, forward takes logit_bias positionally (None for
    no bias), so a caller that forgets the model's bias fails instead of training without it.

    Every dist_impl gives the same loss and gradients here (the text features are all-gathered once); the argument
    is validated and kept for compatibility. cache_labels has no effect, as in open_clip. chunk_size (open_clip
    main's row chunk for its memory-efficient SigLIP) is validated and kept: the fused backends never hold more than
    their own chunk budget (fastclip.ops.contrastive_loss: CHUNK_ELEMENTS, TRITON_GRAD_BYTES), so it changes
    neither the result nor the memory bound.
    """

    def __init__(
        self,
        cache_labels: bool = False,
        rank: int = 0,
        world_size: int = 1,
        dist_impl: str | None = None,
        chunk_size: int = 0,
        *,
        backend: str = "auto",
    ):
        super().__init__()
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 0:
            raise ValueError(f"FusedSigLipLoss: chunk_size must be an integer >= 0, got {chunk_size!r}")
        self.chunk_size = chunk_size
        self.cache_labels = cache_labels
        self.rank = rank
        self.world_size = world_size
        self.dist_impl = dist_impl or "bidir"
        if self.dist_impl not in SIGLIP_DIST_IMPLS:
            raise ValueError(f"FusedSigLipLoss: dist_impl must be one of {SIGLIP_DIST_IMPLS}, got {dist_impl!r}")
        self.backend = backend

    def forward(self, image_features, text_features, logit_scale, logit_bias, output_dict=False):
        if self.world_size > 1:
            comm = distributed.collectives_for("FusedSigLipLoss", self.rank, self.world_size)
            distributed.check_equal_batches("FusedSigLipLoss", image_features, text_features, comm)
            if self.backend == "reference":
                loss = distributed.reference_siglip_loss(image_features, text_features, logit_scale, logit_bias, comm=comm)
            else:
                loss = siglip_loss_strip(
                    image_features, text_features, logit_scale, logit_bias, comm=comm, backend=self.backend
                )
        else:
            loss = siglip_loss(image_features, text_features, logit_scale, logit_bias, backend=self.backend)
        return {"contrastive_loss": loss} if output_dict else loss
