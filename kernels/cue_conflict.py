"""Triton kernel for fastclip.ops.cue_conflict: blend every (mask, texture) pair in one launch.

Each program owns BLOCK pixels of one pair: it reads their coverage once, gathers the tiled texture (y mod Ht,
x mod Wt) for the three channels and writes mask*texture + (1 - mask)*background, so the P outputs are written once
without materialising the gathered masks and textures the torch chain builds.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._launch import Capability, LaunchConfig, device_capability



def launch_config(capability: Capability | None = None) -> LaunchConfig:
    """The launch configuration on a GPU of this compute capability (None: the CPU interpreter)."""
    # 48 regs, no spills, no smem, 40 warps/SM on sm_90 (audit, triton 3.8): a gather-and-blend pass, bandwidth-bound.
    return LaunchConfig(block=1024, num_warps=4, num_stages=3)


@triton.jit
def _cue_conflict_fwd_kernel(
    masks_ptr,  # float32 (S, H, W)
    textures_ptr,  # float32 (T, 3, Ht, Wt)
    pairs_ptr,  # int64 (P, 2)
    background_ptr,  # float32 (P, 3)
    out_ptr,  # (P, 3, H, W)
    width,
    image_numel,
    texture_height,
    texture_width,
    blocks_per_image,
    OUT_UINT8: tl.constexpr,
    BLOCK: tl.constexpr,
):
    program = tl.program_id(0)
    pair = program // blocks_per_image
    block = program % blocks_per_image
    pixel = block * BLOCK + tl.arange(0, BLOCK)
    in_image = pixel < image_numel
    row = pixel // width
    col = pixel % width

    mask_index = tl.load(pairs_ptr + 2 * pair)
    texture_index = tl.load(pairs_ptr + 2 * pair + 1)
    mask = tl.load(masks_ptr + mask_index * image_numel + pixel, mask=in_image, other=0.0)
    texture_numel = texture_height * texture_width
    texel = (row % texture_height) * texture_width + col % texture_width
    texture_base = texture_index * 3 * texture_numel
    out_base = pair.to(tl.int64) * 3 * image_numel
    for channel in tl.static_range(3):
        texture = tl.load(textures_ptr + texture_base + channel * texture_numel + texel, mask=in_image, other=0.0)
        background = tl.load(background_ptr + 3 * pair + channel)
        blended = mask * texture + (1.0 - mask) * background
        if OUT_UINT8:
            stored = tl.floor(blended * 255.0 + 0.5).to(tl.uint8)
        else:
            stored = blended.to(out_ptr.dtype.element_ty)
        tl.store(out_ptr + out_base + channel * image_numel + pixel, stored, mask=in_image)


def cue_conflict_fwd(
    masks: torch.Tensor, textures: torch.Tensor, pairs: torch.Tensor, background: torch.Tensor, out_dtype: torch.dtype,
    config: LaunchConfig | None = None,
) -> torch.Tensor:
    """Prepared inputs (see fastclip.ops.cue_conflict.composite_ref) -> (P,3,H,W); validated by the op."""
    cfg = config or launch_config(device_capability(masks.device))
    height, width = masks.shape[-2:]
    out = torch.empty(len(pairs), 3, height, width, dtype=out_dtype, device=masks.device)
    if out.numel() == 0:
        return out
    image_numel = height * width
    blocks_per_image = triton.cdiv(image_numel, cfg.block)
    _cue_conflict_fwd_kernel[(len(pairs) * blocks_per_image,)](
        masks.contiguous(),
        textures.contiguous(),
        pairs.contiguous(),
        background.contiguous(),
        out,
        width,
        image_numel,
        textures.shape[-2],
        textures.shape[-1],
        blocks_per_image,
        OUT_UINT8=out_dtype == torch.uint8,
        BLOCK=cfg.block,
        num_warps=cfg.num_warps,
        num_stages=cfg.num_stages,
    )
    return out
