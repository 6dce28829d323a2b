"""Gaussian-noise perturbation of images in one pass: add sigma*z, clip, optionally quantise and normalise.

    y = clip(x + sigma * z, 0, 1)
    y = floor(y * 255) / 255                 (quantize=True: 8-bit truncation, as imagecorruptions' np.uint8 does)
    y = (y - mean[c]) / std[c]               (when mean and std are given)
    written in out_dtype (float32 or bfloat16)

x is the image on the [0,1] scale (uint8 input is divided by 255); sigma is on that scale too (imagecorruptions'
severities 1-5 are sigma = 0.08, 0.12, 0.18, 0.26, 0.38).

Randomness is counter-based so a sample's noise depends only on (seed, sample id, element index), never on the batch
it lands in, its position there, the device or the backend. Element e of sample s takes lane e % 4 of one
Philox4x32-10 call (10 rounds, Triton's constants) with

    key     = (seed mod 2**32, seed div 2**32)
    counter = (e div 4, s, 0, 0)

whose four 32-bit outputs become four uniforms u = |int32| * 4.6566127342e-10 and then four normals by Box-Muller
(u1 floored at 1e-7): (r cos t, r sin t) with r = sqrt(-2 ln u1), t = 2 pi u2 for the lane pairs (0,1) and (2,3).
This is exactly `tl.randn4x(seed, (s << 32) | (e div 4))`, so the Triton kernel and the reference below draw the same
integers; the normals agree to float rounding of log/sin/cos (a few ulp). A sweep of K sigmas reuses the same z for
every sigma (common random numbers).

Backends: "triton" (one kernel: each image read once, each output written once; kernels/gaussian_noise.py),
"extension" (C++ CPU kernel, csrc/cpu/gaussian_noise.cpp: the same single pass, parallel over blocks of images;
bit-identical to the reference because it calls torch's own log/sqrt/sin/cos) and "reference" (plain PyTorch,
this file). Auto picks Triton on CUDA and the extension (else the reference) on the CPU.
"""

from __future__ import annotations

from typing import Sequence

import torch

from fastclip import _ext
from fastclip.ops._dispatch import Backend, OpDispatcher, extension_backend, triton_unavailable
from fastclip.ops._philox import check_seed, philox4x32

OUT_DTYPES = (torch.float32, torch.bfloat16)
# imagecorruptions' (and ImageNet-C's) gaussian_noise severities 1-5, sigma on the [0,1] scale.
IMAGECORRUPTIONS_SIGMAS = (0.08, 0.12, 0.18, 0.26, 0.38)
MAX_SAMPLE_ID = 2**31 - 1  # the sample id fills the upper half of Triton's 64-bit Philox offset

_UINT_TO_UNIFORM = 4.6566127342e-10  # Triton's scale: largest with (2**31 - 1) * scale < 1 in float32
_MIN_UNIFORM = 1.0e-7
_TWO_PI = 6.283185307179586

# The reference draws noise for this many Philox groups at a time: its int64 temporaries (2 MB each) stay in a CPU's
# cache, which makes the chain about twice as fast as whole-tensor passes, and memory stays bounded for any N.
_GROUPS_PER_CHUNK = 1 << 18


def _uint32_to_uniform(bits: torch.Tensor) -> torch.Tensor:
    """Triton's uint_to_uniform_float: read as int32, fold negatives with ~x, scale into [0, 1) in float32."""
    signed = torch.where(bits >= 2**31, bits - 2**32, bits)
    folded = torch.where(signed < 0, -signed - 1, signed)
    return folded.to(torch.float32) * torch.tensor(_UINT_TO_UNIFORM, dtype=torch.float32, device=bits.device)


def _box_muller(u1: torch.Tensor, u2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton's pair_uniform_to_normal, in float32 with the same constants."""
    f32 = dict(dtype=torch.float32, device=u1.device)
    u1 = torch.maximum(u1, torch.tensor(_MIN_UNIFORM, **f32))
    angle = torch.tensor(_TWO_PI, **f32) * u2
    radius = torch.sqrt(torch.tensor(-2.0, **f32) * torch.log(u1))
    return radius * torch.cos(angle), radius * torch.sin(angle)


def standard_normal(seed: int, sample_ids: torch.Tensor, num_elements: int) -> torch.Tensor:
    """The z of the module docstring: float32 (len(sample_ids), num_elements) normals on sample_ids' device."""
    device = sample_ids.device
    num_groups = -(-num_elements // 4)
    z = torch.empty(len(sample_ids), num_groups * 4, dtype=torch.float32, device=device)
    samples_per_chunk = max(1, _GROUPS_PER_CHUNK // max(num_groups, 1))
    groups_per_chunk = min(num_groups, _GROUPS_PER_CHUNK)
    for first_sample in range(0, len(sample_ids), samples_per_chunk):
        ids = sample_ids[first_sample : first_sample + samples_per_chunk].to(torch.int64)
        for first_group in range(0, num_groups, groups_per_chunk):
            groups = torch.arange(first_group, min(first_group + groups_per_chunk, num_groups), device=device)
            c0 = groups.expand(len(ids), -1)
            c1 = ids[:, None].expand_as(c0)
            zero = torch.zeros_like(c0)
            bits = philox4x32(c0, c1, zero, zero, seed)
            u1, u2, u3, u4 = (_uint32_to_uniform(b) for b in bits)
            n1, n2 = _box_muller(u1, u2)
            n3, n4 = _box_muller(u3, u4)
            lanes = torch.stack((n1, n2, n3, n4), dim=-1).reshape(len(ids), -1)
            z[first_sample : first_sample + len(ids), first_group * 4 : first_group * 4 + lanes.shape[1]] = lanes
    return z[:, :num_elements]


def images_to_unit_float(images: torch.Tensor) -> torch.Tensor:
    """float32 on the [0,1] scale: uint8 divided by 255 (a true division, so 8-bit values round-trip exactly)."""
    if images.dtype == torch.uint8:
        return images.to(torch.float32) / 255.0
    return images.to(torch.float32)


def perturb_ref(
    x: torch.Tensor,
    z: torch.Tensor,
    sigma: torch.Tensor,
    *,
    quantize: bool = False,
    mean: torch.Tensor | None = None,
    std: torch.Tensor | None = None,
    out_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The deterministic part given the noise z: x and z float32 (N,C,H,W), sigma float32 (K,N) -> (K,N,C,H,W)."""
    y = x.unsqueeze(0) + sigma[:, :, None, None, None] * z.unsqueeze(0)
    y = y.clamp(0.0, 1.0)
    if quantize:
        y = torch.floor(y * 255.0) / 255.0
    if mean is not None:
        y = (y - mean[:, None, None]) / std[:, None, None]
    return y.to(out_dtype)


def gaussian_noise_ref(
    images: torch.Tensor,
    sigma: float | Sequence[float] | torch.Tensor,
    *,
    seed: int,
    sample_ids: torch.Tensor | None = None,
    quantize: bool = False,
    mean: Sequence[float] | torch.Tensor | None = None,
    std: Sequence[float] | torch.Tensor | None = None,
    out_dtype: torch.dtype = torch.float32,
    sweep: bool = False,
) -> torch.Tensor:
    """Plain-PyTorch gaussian_noise (the oracle, the CPU path and the benchmark's torch chain); same arguments."""
    call = _validate(images, sigma, seed, sample_ids, quantize, mean, std, out_dtype, sweep, "gaussian_noise_ref")
    return _run_reference(*call)


def _run_reference(images, sigma_table, seed, sample_ids, quantize, mean, std, out_dtype, sweep):
    num_images, channels, height, width = images.shape
    out = torch.empty(len(sigma_table), num_images, channels, height, width, dtype=out_dtype, device=images.device)
    # Chunks of images keep the float32 temporaries of the chain at a few hundred MB whatever N is.
    per_chunk = max(1, _GROUPS_PER_CHUNK * 4 // max(channels * height * width, 1))
    for first in range(0, num_images, per_chunk):
        chunk = slice(first, first + per_chunk)
        x = images_to_unit_float(images[chunk])
        z = standard_normal(seed, sample_ids[chunk], x[0].numel()).view_as(x)
        out[:, chunk] = perturb_ref(
            x, z, sigma_table[:, chunk], quantize=quantize, mean=mean, std=std, out_dtype=out_dtype
        )
    return out if sweep else out[0]


def _run_triton(images, sigma_table, seed, sample_ids, quantize, mean, std, out_dtype, sweep):
    from fastclip.kernels.gaussian_noise import gaussian_noise_fwd

    out = gaussian_noise_fwd(
        images, sigma_table, seed=seed, sample_ids=sample_ids, quantize=quantize, mean=mean, std=std,
        out_dtype=out_dtype,
    )
    return out if sweep else out[0]


def _run_extension(images, sigma_table, seed, sample_ids, quantize, mean, std, out_dtype, sweep):
    out = _ext.op("gaussian_noise")(images, sigma_table, seed, sample_ids, quantize, mean, std, out_dtype)
    return out if sweep else out[0]


_DISPATCH = OpDispatcher(
    "gaussian_noise",
    backends=[
        Backend("triton", _run_triton, triton_unavailable),
        extension_backend("gaussian_noise", _run_extension),
        Backend("reference", _run_reference),
    ],
    auto_order={"cpu": ("extension", "reference"), "cuda": ("triton", "reference")},
)


def gaussian_noise(
    images: torch.Tensor,
    sigma: float | Sequence[float] | torch.Tensor,
    *,
    seed: int,
    sample_ids: torch.Tensor | None = None,
    quantize: bool = False,
    mean: Sequence[float] | torch.Tensor | None = None,
    std: Sequence[float] | torch.Tensor | None = None,
    out_dtype: torch.dtype = torch.float32,
    sweep: bool = False,
    backend: str = "auto",
) -> torch.Tensor:
    """Perturb images with Gaussian noise keyed by (seed, sample id, element); see the module docstring.

    Args:
        images: (N,C,H,W) uint8 (0..255) or floating in [0,1]; computed in float32.
        sigma: noise standard deviation on the [0,1] scale: a float, or an (N,) tensor/sequence (one per image);
            with sweep=True, a sequence or 1-D tensor of K sigmas, giving K perturbed copies from one launch.
        seed: integer in [0, 2**63).
        sample_ids: (N,) integer tensor in [0, 2**31), default arange(N); the identity that keys each image's noise.
        quantize: truncate to 8 bits after clipping, floor(y*255)/255, as imagecorruptions' np.uint8 does.
        mean, std: per-channel normalisation (C values each), both or neither; applied last.
        out_dtype: torch.float32 or torch.bfloat16.
        sweep: treat sigma as K sigmas and return (K,N,C,H,W).
        backend: "auto", "triton", "extension" (CPU) or "reference".

    Returns:
        (N,C,H,W), or (K,N,C,H,W) when sweep=True, in out_dtype on images' device.
    """
    call = _validate(images, sigma, seed, sample_ids, quantize, mean, std, out_dtype, sweep, "gaussian_noise")
    return _DISPATCH.choose(images.device, backend).run(*call)


def _validate(images, sigma, seed, sample_ids, quantize, mean, std, out_dtype, sweep, op):
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{op}: images must be a torch.Tensor, got {type(images).__name__}")
    if images.dim() != 4:
        raise ValueError(f"{op}: images must be (N,C,H,W), got shape {tuple(images.shape)}")
    if images.dtype != torch.uint8 and not images.is_floating_point():
        raise TypeError(f"{op}: images must be uint8 (0..255) or floating in [0,1], got {images.dtype}")
    num_images, channels = images.shape[:2]
    device = images.device
    if out_dtype not in OUT_DTYPES:
        raise ValueError(f"{op}: out_dtype must be one of {OUT_DTYPES}, got {out_dtype}")
    check_seed(seed, f"{op}: seed")
    sigma_table = _sigma_table(sigma, sweep, num_images, device, op)
    if sample_ids is None:
        sample_ids = torch.arange(num_images, device=device)
    else:
        is_integer = isinstance(sample_ids, torch.Tensor) and not sample_ids.is_floating_point()
        if not is_integer or sample_ids.dtype == torch.bool or sample_ids.is_complex():
            raise TypeError(f"{op}: sample_ids must be an integer tensor of shape (N,)")
        if sample_ids.shape != (num_images,):
            raise ValueError(f"{op}: sample_ids must have shape ({num_images},), got {tuple(sample_ids.shape)}")
        if num_images and (int(sample_ids.min()) < 0 or int(sample_ids.max()) > MAX_SAMPLE_ID):
            raise ValueError(f"{op}: sample_ids must lie in [0, 2**31)")
        sample_ids = sample_ids.to(device=device, dtype=torch.int64).contiguous()
    if (mean is None) != (std is None):
        raise ValueError(f"{op}: give both mean and std (normalisation) or neither")
    if mean is not None:
        mean = _per_channel(mean, "mean", channels, device, op)
        std = _per_channel(std, "std", channels, device, op)
        if not bool((std > 0).all()):
            raise ValueError(f"{op}: std must be positive, got {std.tolist()}")
    if images.dtype not in (torch.uint8, torch.float32, torch.float16, torch.bfloat16):
        images = images.to(torch.float32)
    return images.contiguous(), sigma_table, seed, sample_ids, bool(quantize), mean, std, out_dtype, bool(sweep)


def _sigma_table(sigma, sweep, num_images, device, op) -> torch.Tensor:
    """sigma as a float32 (K, N) table: K = 1 unless sweeping; one column per image."""
    if isinstance(sigma, torch.Tensor):
        values = sigma.detach().to(device=device, dtype=torch.float32)
    elif isinstance(sigma, (int, float)) and not isinstance(sigma, bool):
        values = torch.tensor(float(sigma), dtype=torch.float32, device=device)
    else:
        try:
            values = torch.tensor([float(s) for s in sigma], dtype=torch.float32, device=device)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{op}: sigma must be a float, a sequence of floats or a tensor, got {sigma!r}") from exc
    if sweep:
        if values.dim() != 1 or values.numel() == 0:
            raise ValueError(f"{op}: with sweep=True, sigma must be a non-empty 1-D sequence of K sigmas")
        table = values[:, None].expand(-1, num_images)
    elif values.dim() == 0:
        table = values.expand(1, num_images)
    elif values.shape == (num_images,):
        table = values[None, :]
    else:
        raise ValueError(
            f"{op}: sigma must be a float or one value per image ({num_images},), got shape {tuple(values.shape)}; "
            "pass sweep=True for K sigmas applied to every image"
        )
    if values.numel() and not bool(torch.isfinite(values).all() and (values >= 0).all()):
        raise ValueError(f"{op}: sigma must be finite and >= 0")
    return table.contiguous()


def _per_channel(values, name, channels, device, op) -> torch.Tensor:
    tensor = torch.as_tensor(values, dtype=torch.float32).to(device).reshape(-1)
    if tensor.numel() != channels:
        raise ValueError(f"{op}: {name} must have one value per channel ({channels}), got {tensor.numel()}")
    return tensor.contiguous()

