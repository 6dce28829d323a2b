"""Triton kernel for fastclip.ops.gaussian_noise: noise, clip, quantise, normalise and cast in one pass.

Each program owns BLOCK consecutive elements of one image: it reads them once, draws their normals with
tl.randn4x keyed by (seed, sample id, element // 4) (the counter scheme documented in fastclip/ops/gaussian_noise.py),
and writes one output per sigma of the sweep, so K perturbed copies cost one read and K writes.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._launch import Capability, LaunchConfig, device_capability



def launch_config(capability: Capability | None = None) -> LaunchConfig:
    """The launch configuration on a GPU of this compute capability (None: the CPU interpreter)."""
    # 32-71 regs, no spills (32 B of stack: the sin/cos range reduction of Box-Muller), <= 5 KiB smem, 28-64 warps/SM
    # on sm_80/90/100 (audit, triton 3.8): 8 elements per thread give wide loads and stores at full occupancy.
    return LaunchConfig(block=1024, num_warps=4, num_stages=3)


@triton.jit
def _gaussian_noise_fwd_kernel(
    images_ptr,
    out_ptr,
    sigma_ptr,  # float32 (K, N)
    sample_ids_ptr,  # int64 (N,)
    mean_ptr,
    std_ptr,
    seed,
    num_images,
    image_numel,
    channel_numel,
    num_sigmas,
    blocks_per_image,
    IS_UINT8: tl.constexpr,
    QUANTIZE: tl.constexpr,
    NORMALIZE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    program = tl.program_id(0)
    image = program // blocks_per_image
    block = program % blocks_per_image
    element = block * BLOCK + tl.arange(0, BLOCK)
    in_image = element < image_numel
    image_base = image.to(tl.int64) * image_numel

    x = tl.load(images_ptr + image_base + element, mask=in_image, other=0)
    # Divisions use div_rn (IEEE rounding, as torch) where Triton's `/` is approximate on GPUs, so sigma = 0 gives
    # exactly the reference's (and fastclip.eval.preprocess's) clean, normalised images.
    if IS_UINT8:
        x = tl.math.div_rn(x.to(tl.float32), 255.0)
    else:
        x = x.to(tl.float32)

    # Lane j of Philox group g is element 4g + j. tl.join appends a minor axis, so joining (n1, n3) with (n2, n4)
    # gives [g, i, j] = lane 2j + i... flattened row-major as n1, n2, n3, n4.
    sample_id = tl.load(sample_ids_ptr + image)
    group = block * (BLOCK // 4) + tl.arange(0, BLOCK // 4)
    offset = (sample_id << 32) | group.to(tl.int64)
    n1, n2, n3, n4 = tl.randn4x(seed, offset)
    z = tl.reshape(tl.join(tl.join(n1, n3), tl.join(n2, n4)), [BLOCK])

    if NORMALIZE:
        channel = element // channel_numel
        mean = tl.load(mean_ptr + channel, mask=in_image, other=0.0)
        std = tl.load(std_ptr + channel, mask=in_image, other=1.0)

    for k in range(num_sigmas):
        sigma = tl.load(sigma_ptr + k * num_images + image)
        y = x + sigma * z
        y = tl.minimum(tl.maximum(y, 0.0), 1.0)
        if QUANTIZE:
            y = tl.math.div_rn(tl.floor(y * 255.0), 255.0)
        if NORMALIZE:
            y = tl.math.div_rn(y - mean, std)
        out_base = (k * num_images + image).to(tl.int64) * image_numel
        tl.store(out_ptr + out_base + element, y.to(out_ptr.dtype.element_ty), mask=in_image)


def gaussian_noise_fwd(
    images: torch.Tensor,
    sigma_table: torch.Tensor,
    *,
    seed: int,
    sample_ids: torch.Tensor,
    quantize: bool,
    mean: torch.Tensor | None,
    std: torch.Tensor | None,
    out_dtype: torch.dtype,
    config: LaunchConfig | None = None,
) -> torch.Tensor:
    """images (N,C,H,W) contiguous uint8/float, sigma_table float32 (K,N) -> (K,N,C,H,W) in out_dtype.

    Arguments are validated by fastclip.ops.gaussian_noise; this only launches (with `config`, default
    launch_config of images' device).
    """
    cfg = config or launch_config(device_capability(images.device))
    num_sigmas, num_images = sigma_table.shape
    _, channels, height, width = images.shape
    out = torch.empty(num_sigmas, *images.shape, dtype=out_dtype, device=images.device)
    image_numel = channels * height * width
    if out.numel() == 0:
        return out
    blocks_per_image = triton.cdiv(image_numel, cfg.block)
    normalize = mean is not None
    placeholder = sigma_table  # any float32 tensor: the NORMALIZE=False branch never reads it
    _gaussian_noise_fwd_kernel[(num_images * blocks_per_image,)](
        images,
        out,
        sigma_table.contiguous(),
        sample_ids.contiguous(),
        mean if normalize else placeholder,
        std if normalize else placeholder,
        seed,
        num_images,
        image_numel,
        height * width,
        num_sigmas,
        blocks_per_image,
        IS_UINT8=images.dtype == torch.uint8,
        QUANTIZE=quantize,
        NORMALIZE=normalize,
        BLOCK=cfg.block,
        num_warps=cfg.num_warps,
        num_stages=cfg.num_stages,
    )
    return out
