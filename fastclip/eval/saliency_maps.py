"""Saliency maps of a CLIP image tower, one value per patch (ViT) or feature-map cell (ResNet), batched.

ViT (open_clip VisionTransformer with ResidualAttentionBlock / nn.MultiheadAttention blocks). `vit_forward` runs the
tower block by block as open_clip does (x + ls_1(attn(ln_1(x))), then x + ls_2(mlp(ln_2(x)))), with the attention
written out so its probabilities (B, heads, T, T) are kept (and differentiable):
  cls_attention  the last block's attention of the CLS token to the patches, averaged over heads;
  rollout        attention rollout (Abnar & Zuidema 2020): per block A' = (mean_heads A + I) / 2 with every row
                 renormalised to sum to 1 (jacobgil/vit-explain divides without keepdim, a broadcasting bug;
                 reference/eval.md §4), R = A'_L ... A'_1, the CLS row of R over the patches;
  relevance      gradient-weighted relevance (Chefer et al. 2021, CLIP_explainability): R = I, then per block
                 R <- R + mean_heads(clamp(dlogit/dA * A, min=0)) @ R, the CLS row over the patches, where logit is
                 the cosine of the image and text embeddings (the prompt is a benchmark setting).
ResNet (open_clip ModifiedResNet):
  gradcam        Grad-CAM (Selvaraju et al. 2017) on layer4: ReLU(sum_c mean_xy(dlogit/dA_c) A_c).
Maps are returned as (B, grid_h, grid_w) float32; the saliency benchmark upsamples them to each image's size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from fastclip.eval.errors import InputError

VIT_MAPS = ("cls_attention", "rollout", "relevance")
RESNET_MAPS = ("gradcam",)
MAP_METHODS = VIT_MAPS + RESNET_MAPS


def tower_kind(model: torch.nn.Module) -> str:
    """"vit" or "resnet": which map methods the image tower supports; InputError for other towers."""
    visual = model.visual
    blocks = getattr(getattr(visual, "transformer", None), "resblocks", None)
    if blocks is not None:
        unsupported = [type(b).__name__ for b in blocks if not isinstance(getattr(b, "attn", None), torch.nn.MultiheadAttention)]
        if unsupported or getattr(visual, "attn_pool", None) is not None:
            raise InputError(
                f"saliency maps need open_clip's standard ViT blocks (nn.MultiheadAttention, token pooling); this "
                f"tower has {sorted(set(unsupported)) or 'attentional pooling'}"
            )
        return "vit"
    if hasattr(visual, "layer4") and hasattr(visual, "attnpool"):
        return "resnet"
    raise InputError(f"saliency maps support open_clip ViT and ModifiedResNet towers, not {type(visual).__name__}")


def _block_forward(block: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One open_clip ResidualAttentionBlock on batch-first tokens (B, T, W): (output, attention (B, heads, T, T))."""
    attention = block.attn
    batch, tokens, width = x.shape
    heads = attention.num_heads
    y = block.ln_1(x)
    q, k, v = F.linear(y, attention.in_proj_weight, attention.in_proj_bias).chunk(3, dim=-1)
    q, k, v = (t.reshape(batch, tokens, heads, width // heads).transpose(1, 2) for t in (q, k, v))
    probabilities = torch.softmax((q @ k.transpose(-2, -1)) / math.sqrt(width // heads), dim=-1)
    mixed = (probabilities @ v).transpose(1, 2).reshape(batch, tokens, width)
    x = x + block.ls_1(attention.out_proj(mixed))
    x = x + block.ls_2(block.mlp(block.ln_2(x)))
    return x, probabilities


def vit_forward(visual: torch.nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(image embedding (B, D), attention probabilities of every block) for normalised images."""
    x = visual._embeds(images)
    attentions = []
    for block in visual.transformer.resblocks:
        x, probabilities = _block_forward(block, x)
        attentions.append(probabilities)
    pooled, _ = visual._pool(x)
    if visual.proj is not None:
        pooled = pooled @ visual.proj
    return pooled, attentions


def _patch_grid(visual: torch.nn.Module, row: torch.Tensor) -> torch.Tensor:
    """(B, T) CLS row (CLS first) -> (B, grid_h, grid_w) over the patches."""
    grid_h, grid_w = visual.grid_size
    return row[:, 1:].reshape(row.shape[0], grid_h, grid_w).float()


def cls_attention(visual, attentions: list[torch.Tensor]) -> torch.Tensor:
    return _patch_grid(visual, attentions[-1].mean(dim=1)[:, 0])


def rollout_matrix(attentions: list[torch.Tensor]) -> torch.Tensor:
    """(B, T, T) attention rollout; every row sums to 1."""
    rolled = None
    for probabilities in attentions:
        fused = probabilities.mean(dim=1).double()
        identity = torch.eye(fused.shape[-1], dtype=fused.dtype, device=fused.device)
        step = (fused + identity) / 2
        step = step / step.sum(dim=-1, keepdim=True)
        rolled = step if rolled is None else step @ rolled
    return rolled


def rollout(visual, attentions: list[torch.Tensor]) -> torch.Tensor:
    return _patch_grid(visual, rollout_matrix(attentions)[:, 0])


def relevance_matrix(attentions: list[torch.Tensor], gradients: list[torch.Tensor]) -> torch.Tensor:
    """(B, T, T) Chefer's relevance R from each block's attention and the logit's gradient with respect to it."""
    batch, _, tokens, _ = attentions[0].shape
    relevance = torch.eye(tokens, dtype=torch.float64, device=attentions[0].device).expand(batch, -1, -1)
    for probabilities, gradient in zip(attentions, gradients):
        cam = (gradient.double() * probabilities.double()).clamp(min=0).mean(dim=1)
        relevance = relevance + cam @ relevance
    return relevance


def _text_embedding(model, tokenizer, text: str, device) -> torch.Tensor:
    with torch.no_grad():
        return F.normalize(model.encode_text(tokenizer([text]).to(device)).float(), dim=-1)


def vit_maps(model, tokenizer, images: torch.Tensor, methods: tuple[str, ...], *, text: str) -> dict[str, torch.Tensor]:
    """{method: (B, grid_h, grid_w)} for the ViT methods asked, from one forward (and one backward for relevance)."""
    visual = model.visual
    if "relevance" not in methods:
        with torch.inference_mode():
            _, attentions = vit_forward(visual, images)
        gradients = None
    else:
        target = _text_embedding(model, tokenizer, text, images.device)
        with torch.enable_grad():
            embedding, attentions = vit_forward(visual, images)
            logits = (F.normalize(embedding.float(), dim=-1) * target).sum()  # each image's logit is its own term
            gradients = torch.autograd.grad(logits, attentions)
        attentions = [a.detach() for a in attentions]
    maps = {}
    if "cls_attention" in methods:
        maps["cls_attention"] = cls_attention(visual, attentions)
    if "rollout" in methods:
        maps["rollout"] = rollout(visual, attentions)
    if "relevance" in methods:
        maps["relevance"] = _patch_grid(visual, relevance_matrix(attentions, gradients)[:, 0])
    return maps


def gradcam(model, tokenizer, images: torch.Tensor, *, text: str) -> torch.Tensor:
    """(B, h, w) Grad-CAM of a ModifiedResNet's layer4 for the image-text cosine."""
    visual = model.visual
    target = _text_embedding(model, tokenizer, text, images.device)
    stored = {}
    handle = visual.layer4.register_forward_hook(lambda module, inputs, output: stored.setdefault("a", output))
    try:
        with torch.enable_grad():
            embedding = visual(images)
            logits = (F.normalize(embedding.float(), dim=-1) * target).sum()
            (gradient,) = torch.autograd.grad(logits, stored["a"])
    finally:
        handle.remove()
    activations = stored["a"].detach()
    weights = gradient.mean(dim=(2, 3), keepdim=True)
    return F.relu((weights * activations).sum(dim=1)).float()
