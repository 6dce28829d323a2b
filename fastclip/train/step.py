"""The forward and backward passes of one optimizer step, with open_clip's --accum-freq feature cache.

With accum_freq = k, the step sees k micro-batches. Each is first encoded without gradients and its features
cached; then each is encoded again with gradients and its features replace its own slot among the cached ones,
so the loss of every pass is the loss of the whole effective batch (k x batch size x ranks), and its gradient
reaches only the re-encoded micro-batch. Summed over the k passes that is the towers' gradient of the large-batch
loss (open_clip_train.train.train_one_epoch); the logit scale (and SigLIP's bias), which every pass uses with its
gradient, gets k times its large-batch gradient, as in open_clip. fastclip's fused loss needs O(B·D) memory for
the effective batch B, never the B x B logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fastclip.data.loader import Batch
from fastclip.models import autocast


@dataclass
class StepOutput:
    loss: torch.Tensor  # the loss of the last pass (detached)
    logit_scale: torch.Tensor  # the model's logit scale in that pass


def _backward(loss: torch.Tensor, scaler) -> None:
    if scaler is not None:
        scaler.scale(loss).backward()
    else:
        loss.backward()


def forward_backward(model, loss_fn, micro_batches: list[Batch], *, precision: str, device, scaler) -> StepOutput:
    """Accumulate the gradients of one optimizer step (the caller zeroes them before and steps after)."""
    if len(micro_batches) == 1:
        batch = micro_batches[0]
        with autocast(precision, device):
            # (image_features, text_features, logit_scale[, logit_bias]): the bias exists for SigLIP models only.
            outputs = model(batch.images, batch.texts)
            loss = loss_fn(*outputs[:3], *outputs[3:4])
        _backward(loss, scaler)
        return StepOutput(loss.detach(), outputs[2].detach())

    with torch.no_grad(), autocast(precision, device):
        cached = [model(batch.images, batch.texts)[:2] for batch in micro_batches]
    cached_images = [features[0] for features in cached]
    cached_texts = [features[1] for features in cached]
    for index, batch in enumerate(micro_batches):
        with autocast(precision, device):
            outputs = model(batch.images, batch.texts)
            image_features = torch.cat(cached_images[:index] + [outputs[0]] + cached_images[index + 1:])
            text_features = torch.cat(cached_texts[:index] + [outputs[1]] + cached_texts[index + 1:])
            loss = loss_fn(image_features, text_features, outputs[2], *outputs[3:4])
        _backward(loss, scaler)
    return StepOutput(loss.detach(), outputs[2].detach())
