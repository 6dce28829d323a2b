"""Bilinear resizing of a stack of 2-D maps (saliency maps to the fixation maps' size), in float64.

Half-pixel centres and no antialiasing: torch's interpolate(mode="bilinear", align_corners=False), which is the
reference. Backends: "extension" (C++ on the CPU, parallel over output rows; it interpolates along x, then y, so
it differs from torch's kernel by a few ulp) and "torch" (the reference, on any device). Auto picks the extension
on the CPU, where it is ~4x faster than torch's kernel for patch grids upscaled to 768 x 1024
(benchmarks/bench_saliency_metrics.py), and torch on CUDA.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fastclip import _ext
from fastclip.ops._dispatch import Backend, OpDispatcher, extension_backend


def resize_bilinear_ref(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, h, w) -> (B, H, W) float64 with torch's interpolate (the oracle)."""
    return F.interpolate(maps.to(torch.float64).unsqueeze(1), size=size, mode="bilinear", align_corners=False).squeeze(1)


def _resize_extension(maps: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    if maps.dtype not in (torch.float32, torch.float64):
        maps = maps.to(torch.float64)
    return _ext.op("resize_bilinear_into")(maps, out)


def _resize_torch(maps: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    return out.copy_(resize_bilinear_ref(maps, tuple(out.shape[-2:])))


_DISPATCH = OpDispatcher(
    "resize_bilinear",
    backends=[extension_backend("resize_bilinear_into", _resize_extension), Backend("torch", _resize_torch)],
    auto_order={"cpu": ("extension", "torch"), "cuda": ("torch",)},
)


def resize_bilinear(
    maps: torch.Tensor, size: tuple[int, int], *, out: torch.Tensor | None = None, backend: str = "auto"
) -> torch.Tensor:
    """Resize (B, h, w) real maps to (B, H, W) float64 (maps already of that size are only made float64).

    Args:
        maps: (B, h, w) tensor of any real dtype.
        size: (H, W), positive integers.
        out: optional contiguous float64 (B, H, W) tensor on maps' device to write into and return: callers that
            resize chunk after chunk reuse one buffer instead of paying a page fault per 4 kB of a fresh one.
        backend: "auto", "extension" or "torch".
    """
    if not isinstance(maps, torch.Tensor) or maps.dim() != 3:
        raise ValueError(f"resize_bilinear: maps must be a (B, h, w) tensor, got {getattr(maps, 'shape', type(maps))}")
    if maps.is_complex() or maps.dtype == torch.bool:
        raise TypeError(f"resize_bilinear: maps must be real numbers, got {maps.dtype}")
    height, width = (int(side) for side in size)
    if height < 1 or width < 1:
        raise ValueError(f"resize_bilinear: size must be positive, got {tuple(size)}")
    if maps.shape[-2] < 1 or maps.shape[-1] < 1:
        raise ValueError(f"resize_bilinear: maps must not be empty, got shape {tuple(maps.shape)}")
    expected = (maps.shape[0], height, width)
    if out is not None and (
        tuple(out.shape) != expected or out.dtype != torch.float64 or not out.is_contiguous() or out.device != maps.device
    ):
        raise ValueError(
            f"resize_bilinear: out must be a contiguous float64 tensor of shape {expected} on {maps.device}, got "
            f"{out.dtype} {tuple(out.shape)} on {out.device}"
        )
    if tuple(maps.shape[-2:]) == (height, width):
        # Nothing to interpolate: no copy unless the caller asked for one into its buffer.
        return maps.to(torch.float64) if out is None else out.copy_(maps)
    if out is None:
        out = torch.empty(expected, dtype=torch.float64, device=maps.device)
    if maps.shape[0] == 0:
        return out
    return _DISPATCH.choose(maps.device, backend).run(maps, out)
