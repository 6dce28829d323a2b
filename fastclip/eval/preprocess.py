"""Images to model input: the geometry of open_clip's eval transform, then per-channel normalisation.

open_clip evaluates with Resize(shorter side -> image_size, bicubic) + CenterCrop(image_size) + Normalize(mean, std).
Here the same steps run on batched tensors on the model's device (antialiased bicubic, as PIL's resize filters), so
datasets decoded once can be fed to models of any image size. Bicubic overshoots, so the result is clipped to [0, 1]
as PIL's 8-bit output is.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF


def to_unit_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (0..255) or floating [0,1] -> float32 [0,1]."""
    if images.dtype == torch.uint8:
        return images.to(torch.float32) / 255.0
    return images.to(torch.float32)


def resize_center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """(N,3,H,W) uint8 or [0,1] float -> float32 (N,3,size,size) in [0,1]; only converted when already that size."""
    images = to_unit_float(images)
    if tuple(images.shape[-2:]) == (size, size):
        return images
    resized = TF.resize(images, [size], interpolation=InterpolationMode.BICUBIC, antialias=True)
    return TF.center_crop(resized, [size, size]).clamp_(0.0, 1.0)


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(x - mean[c]) / std[c] in float32, written as fastclip.ops.gaussian_noise writes it, so sigma = 0 matches."""
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=images.device)
    std_t = torch.as_tensor(std, dtype=torch.float32, device=images.device)
    return (images - mean_t[:, None, None]) / std_t[:, None, None]
