"""Image features in one batched forward pass: the image embedding and, when asked, every visual block's tokens
averaged over tokens (forward hooks on open_clip's VisionTransformer resblocks), under torch.inference_mode and
autocast. The IQA and 2AFC benchmarks compare images layer by layer with these.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import torch

from fastclip.eval.errors import InputError
from fastclip.eval.preprocess import normalize
from fastclip.models import autocast

EMBEDDING = "embedding"


@dataclass
class ImageFeatures:
    embedding: torch.Tensor  # float32 (N, D), not normalised
    blocks: list[torch.Tensor] | None = None  # float32 (N, width) per visual block, tokens averaged

    def layers(self) -> dict[str, torch.Tensor]:
        """{"embedding": ..., "block0": ..., ...}: what the layer-wise benchmarks iterate over."""
        named = {EMBEDDING: self.embedding}
        for index, block in enumerate(self.blocks or ()):
            named[f"block{index}"] = block
        return named


def visual_blocks(model: torch.nn.Module) -> tuple[list[torch.nn.Module], bool]:
    """(the resblocks of the image tower, whether their tensors are batch-first); InputError for other towers."""
    transformer = getattr(getattr(model, "visual", None), "transformer", None)
    blocks = getattr(transformer, "resblocks", None)
    if blocks is None:
        raise InputError(
            f"layer-wise features need a ViT image tower (open_clip's VisionTransformer with transformer.resblocks); "
            f"{type(getattr(model, 'visual', model)).__name__} has none: use layers = \"embedding\""
        )
    return list(blocks), bool(getattr(transformer, "batch_first", True))


@contextlib.contextmanager
def block_means(model: torch.nn.Module) -> Iterator[list[list[torch.Tensor]]]:
    """Collect every visual block's output averaged over tokens, one list per block, while the context is open."""
    blocks, batch_first = visual_blocks(model)
    collected: list[list[torch.Tensor]] = [[] for _ in blocks]
    token_dim = 1 if batch_first else 0

    def hook(index):
        def store(module, inputs, output):
            tokens = output[0] if isinstance(output, tuple) else output
            collected[index].append(tokens.float().mean(dim=token_dim))

        return store

    handles = [block.register_forward_hook(hook(index)) for index, block in enumerate(blocks)]
    try:
        yield collected
    finally:
        for handle in handles:
            handle.remove()


def encode(
    model: torch.nn.Module,
    images: torch.Tensor,
    *,
    mean,
    std,
    device: torch.device,
    precision: str,
    batch_size: int,
    blocks: bool = False,
) -> ImageFeatures:
    """Model-sized images (uint8 or [0,1] float, on any device, pinned memory welcome) -> features on `device`."""
    from fastclip.eval.preprocess import to_unit_float

    embeddings = []
    context = block_means(model) if blocks else contextlib.nullcontext([])
    with context as collected, torch.inference_mode(), autocast(precision, device):
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size].to(device, non_blocking=True)
            embeddings.append(model.encode_image(normalize(to_unit_float(batch), mean, std)).float())
    return ImageFeatures(
        torch.cat(embeddings) if embeddings else torch.empty(0),
        [torch.cat(chunks) for chunks in collected] if blocks else None,
    )
