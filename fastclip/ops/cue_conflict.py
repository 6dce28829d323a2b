"""Cue-conflict stimuli: texture-filled silhouettes composited in one launch, and the phase-amplitude swap.

Texture-filled silhouettes (Geirhos et al. 2019's "filled silhouette" condition, any categories):

    out[p] = mask[s_p] * texture[t_p] + (1 - mask[s_p]) * background[p]      for each pair p = (s_p, t_p)

- masks: object coverage in [0,1] (1 = object), binary or soft; `silhouette_masks` turns black-on-white silhouette
  images (the Geirhos ones) into coverage. Masks are resampled to the output size with an anti-aliasing filter, so
  edge pixels hold partial coverage; `feather` (Gaussian sigma in output pixels) softens binary masks further.
- textures: any RGB images. texture_fit="tile" repeats each at its own resolution (wrap-around), "resize" rescales
  it to the output size.
- background: a grey level, an RGB colour, or one RGB colour per pair (default white, as Geirhos' silhouettes).

Mask and texture preparation touches only the S masks and T textures; the compositing of all P pairs is one Triton
launch ("triton" backend, kernels/cue_conflict.py) that reads a mask and a texture pixel and writes the output once,
or a gather-and-blend chain of torch ops ("reference", `cue_conflict_ref`). Auto picks Triton on CUDA.

`phase_amplitude_swap` builds the other classic cue conflict: the Fourier phase of the shape image with the
amplitude spectrum of the texture image (torch.fft on the images' device).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from fastclip.ops._dispatch import Backend, OpDispatcher, triton_unavailable

TEXTURE_FITS = ("tile", "resize")
OUT_DTYPES = (torch.float32, torch.bfloat16, torch.uint8)


def silhouette_masks(silhouettes: torch.Tensor) -> torch.Tensor:
    """Object coverage (S,H,W) float32 from dark-object-on-light silhouettes (S,H,W) or (S,C,H,W), uint8 or [0,1]."""
    images = _unit_float(silhouettes, "silhouettes")
    if images.dim() == 4:
        images = images.mean(dim=1)
    if images.dim() != 3:
        raise ValueError(f"silhouette_masks: silhouettes must be (S,H,W) or (S,C,H,W), got {tuple(silhouettes.shape)}")
    return 1.0 - images


def prepare_masks(masks: torch.Tensor, size: tuple[int, int], feather: float = 0.0) -> torch.Tensor:
    """(S,H,W) coverage at the output size: anti-aliased resampling, then an optional Gaussian feather; float32."""
    masks = _resampled(_unit_float(masks, "masks").unsqueeze(1), size)
    if feather > 0:
        masks = _gaussian_blur(masks, feather)
    return masks.squeeze(1).clamp(0.0, 1.0).contiguous()


def prepare_textures(textures: torch.Tensor, size: tuple[int, int], texture_fit: str) -> torch.Tensor:
    """(T,3,Ht,Wt) float32 in [0,1]: native size for "tile", the output size for "resize"."""
    textures = _unit_float(textures, "textures")
    if texture_fit == "resize" and tuple(textures.shape[-2:]) != size:
        textures = _resampled(textures, size).clamp(0.0, 1.0)
    return textures.contiguous()


def composite_ref(
    masks: torch.Tensor, textures: torch.Tensor, pairs: torch.Tensor, background: torch.Tensor, out_dtype: torch.dtype
) -> torch.Tensor:
    """The blend on prepared inputs: masks (S,H,W), textures (T,3,Ht,Wt) tiled to (H,W), background (P,3)."""
    height, width = masks.shape[-2:]
    mask = masks[pairs[:, 0]].unsqueeze(1)
    texture = tile_textures(textures[pairs[:, 1]], (height, width))
    blended = mask * texture + (1.0 - mask) * background[:, :, None, None]
    return to_out_dtype(blended, out_dtype)


def tile_textures(textures: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Textures (N,3,Ht,Wt) repeated from their top-left corner to cover (H,W): pixel (y,x) = (y mod Ht, x mod Wt)."""
    rows = torch.arange(size[0], device=textures.device) % textures.shape[-2]
    cols = torch.arange(size[1], device=textures.device) % textures.shape[-1]
    return textures[:, :, rows][:, :, :, cols]


def to_out_dtype(images: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
    """float32 images in [0,1] as out_dtype; uint8 rounds half up, floor(y*255 + 0.5)."""
    if out_dtype == torch.uint8:
        return torch.floor(images * 255.0 + 0.5).to(torch.uint8)
    return images.to(out_dtype)


def cue_conflict_ref(
    masks: torch.Tensor,
    textures: torch.Tensor,
    pairs: torch.Tensor | None = None,
    *,
    background: float | Sequence[float] | torch.Tensor = 1.0,
    texture_fit: str = "tile",
    size: int | tuple[int, int] | None = None,
    feather: float = 0.0,
    out_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Plain-PyTorch cue_conflict (the oracle, the CPU path and the benchmark's torch chain); same arguments."""
    prepared = _prepare(masks, textures, pairs, background, texture_fit, size, feather, out_dtype, "cue_conflict_ref")
    return _run_reference(*prepared)


def _run_reference(masks, textures, pairs, background, out_dtype):
    return composite_ref(masks, textures, pairs, background, out_dtype)


def _run_triton(masks, textures, pairs, background, out_dtype):
    from fastclip.kernels.cue_conflict import cue_conflict_fwd

    return cue_conflict_fwd(masks, textures, pairs, background, out_dtype)


_DISPATCH = OpDispatcher(
    "cue_conflict",
    backends=[Backend("triton", _run_triton, triton_unavailable), Backend("reference", _run_reference)],
    auto_order={"cpu": ("reference",), "cuda": ("triton", "reference")},
)


def cue_conflict(
    masks: torch.Tensor,
    textures: torch.Tensor,
    pairs: torch.Tensor | None = None,
    *,
    background: float | Sequence[float] | torch.Tensor = 1.0,
    texture_fit: str = "tile",
    size: int | tuple[int, int] | None = None,
    feather: float = 0.0,
    out_dtype: torch.dtype = torch.float32,
    backend: str = "auto",
) -> torch.Tensor:
    """Texture-filled silhouettes for a batch of (mask, texture) pairs; see the module docstring.

    Args:
        masks: (S,H,W) object coverage, uint8 (0..255) or floating in [0,1], binary or soft.
        textures: (T,3,Ht,Wt) uint8 or floating in [0,1]; any size.
        pairs: (P,2) integer tensor of (mask index, texture index); default every mask with every texture, mask-major.
        background: a grey level, an RGB triple, or (P,3) colours in [0,1].
        texture_fit: "tile" (repeat at native resolution) or "resize" (rescale to the output size).
        size: output (H,W) or side; default the masks' size.
        feather: Gaussian sigma in output pixels applied to the masks (0: none).
        out_dtype: torch.float32, torch.bfloat16 or torch.uint8 (rounded).
        backend: "auto", "triton" or "reference".

    Returns:
        (P,3,H,W) in out_dtype on the masks' device.
    """
    prepared = _prepare(masks, textures, pairs, background, texture_fit, size, feather, out_dtype, "cue_conflict")
    return _DISPATCH.choose(prepared[0].device, backend).run(*prepared)


def phase_amplitude_swap(
    shape_images: torch.Tensor,
    texture_images: torch.Tensor,
    pairs: torch.Tensor | None = None,
    *,
    size: int | tuple[int, int] | None = None,
    texture_fit: str = "resize",
) -> torch.Tensor:
    """The phase spectrum of each shape image with the amplitude spectrum of its texture image, per channel.

    shape_images (S,C,H,W) or (S,H,W) (grey images are used for all three channels), texture_images (T,3,Ht,Wt);
    uint8 or [0,1]. Textures are fitted to the output size (default the shape images') as in cue_conflict. The real
    part of the inverse transform is clipped to [0,1]: float32 (P,3,H,W).
    """
    shapes = _unit_float(shape_images, "shape_images")
    if shapes.dim() == 3:
        shapes = shapes.unsqueeze(1)
    if shapes.dim() != 4 or shapes.shape[1] not in (1, 3):
        raise ValueError(
            "phase_amplitude_swap: shape_images must be (S,H,W), (S,1,H,W) or (S,3,H,W), "
            f"got {tuple(shape_images.shape)}"
        )
    _check_textures(texture_images, "phase_amplitude_swap")
    size = _output_size(size, tuple(shapes.shape[-2:]), "phase_amplitude_swap")
    if texture_fit not in TEXTURE_FITS:
        raise ValueError(f"phase_amplitude_swap: texture_fit must be one of {TEXTURE_FITS}, got {texture_fit!r}")
    shapes = _resampled(shapes, size)
    textures = prepare_textures(texture_images.to(shapes.device), size, texture_fit)
    pairs = _pairs(pairs, len(shapes), len(textures), shapes.device, "phase_amplitude_swap")
    shape_spectrum = torch.fft.rfft2(shapes[pairs[:, 0]].expand(-1, 3, -1, -1))
    texture_spectrum = torch.fft.rfft2(tile_textures(textures[pairs[:, 1]], size))
    swapped = torch.polar(texture_spectrum.abs(), shape_spectrum.angle())
    return torch.fft.irfft2(swapped, s=size).clamp(0.0, 1.0)


def all_pairs(num_masks: int, num_textures: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(S*T, 2) every (mask, texture) index pair, mask-major."""
    masks = torch.arange(num_masks, device=device).repeat_interleave(num_textures)
    textures = torch.arange(num_textures, device=device).repeat(num_masks)
    return torch.stack((masks, textures), dim=1)


def _prepare(masks, textures, pairs, background, texture_fit, size, feather, out_dtype, op):
    if not isinstance(masks, torch.Tensor) or masks.dim() != 3:
        shape = tuple(masks.shape) if isinstance(masks, torch.Tensor) else type(masks).__name__
        raise ValueError(f"{op}: masks must be an (S,H,W) tensor of coverage, got {shape}; see silhouette_masks")
    _check_textures(textures, op)
    if texture_fit not in TEXTURE_FITS:
        raise ValueError(f"{op}: texture_fit must be one of {TEXTURE_FITS}, got {texture_fit!r}")
    if out_dtype not in OUT_DTYPES:
        raise ValueError(f"{op}: out_dtype must be one of {OUT_DTYPES}, got {out_dtype}")
    if not (isinstance(feather, (int, float)) and math.isfinite(feather) and feather >= 0):
        raise ValueError(f"{op}: feather must be a finite number of pixels >= 0, got {feather!r}")
    device = masks.device
    size = _output_size(size, tuple(masks.shape[-2:]), op)
    pairs = _pairs(pairs, len(masks), len(textures), device, op)
    background = _background(background, len(pairs), device, op)
    prepared_masks = prepare_masks(masks, size, float(feather))
    prepared_textures = prepare_textures(textures.to(device), size, texture_fit)
    return prepared_masks, prepared_textures, pairs, background, out_dtype


def _check_textures(textures, op):
    if not isinstance(textures, torch.Tensor) or textures.dim() != 4 or textures.shape[1] != 3:
        shape = tuple(textures.shape) if isinstance(textures, torch.Tensor) else type(textures).__name__
        raise ValueError(f"{op}: textures must be a (T,3,H,W) RGB tensor, got {shape}")
    if textures.shape[0] == 0 or textures.shape[-1] == 0 or textures.shape[-2] == 0:
        raise ValueError(f"{op}: textures must hold at least one non-empty image, got {tuple(textures.shape)}")


def _output_size(size, default: tuple[int, int], op) -> tuple[int, int]:
    if size is None:
        size = default
    elif isinstance(size, int):
        size = (size, size)
    size = tuple(int(side) for side in size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"{op}: size must be a positive side or (height, width), got {size}")
    return size


def _pairs(pairs, num_masks, num_textures, device, op) -> torch.Tensor:
    if pairs is None:
        return all_pairs(num_masks, num_textures, device)
    pairs = torch.as_tensor(pairs)
    if pairs.dtype.is_floating_point or pairs.dim() != 2 or pairs.shape[1] != 2:
        raise ValueError(
            f"{op}: pairs must be an integer (P,2) tensor of (mask index, texture index), "
            f"got {tuple(pairs.shape)} {pairs.dtype}"
        )
    pairs = pairs.to(device=device, dtype=torch.int64).contiguous()
    if len(pairs):
        for column, name, count in ((0, "mask", num_masks), (1, "texture", num_textures)):
            low, high = int(pairs[:, column].min()), int(pairs[:, column].max())
            if low < 0 or high >= count:
                raise ValueError(
                    f"{op}: pairs[:, {column}] holds {name} indices in [{low}, {high}], but there are {count} {name}s"
                )
    return pairs


def _background(background, num_pairs, device, op) -> torch.Tensor:
    colours = torch.as_tensor(background, dtype=torch.float32).to(device)
    if colours.dim() == 0:
        colours = colours.expand(3)
    if colours.shape == (3,):
        colours = colours.expand(num_pairs, 3)
    if colours.shape != (num_pairs, 3):
        raise ValueError(
            f"{op}: background must be a grey level, an RGB triple or ({num_pairs},3) colours, "
            f"got {tuple(colours.shape)}"
        )
    if not bool(((colours >= 0) & (colours <= 1)).all()):
        raise ValueError(f"{op}: background colours must lie in [0,1]")
    return colours.contiguous()


def _unit_float(images: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(images).__name__}")
    if images.dtype == torch.uint8:
        return images.to(torch.float32) / 255.0
    if not images.is_floating_point():
        raise TypeError(f"{name} must be uint8 (0..255) or floating in [0,1], got {images.dtype}")
    return images.to(torch.float32)


def _resampled(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N,C,h,w) images at the output size (H,W) by anti-aliased bilinear resampling; as they are when already so."""
    if tuple(images.shape[-2:]) == size:
        return images
    return F.interpolate(images, size=size, mode="bilinear", antialias=True, align_corners=False)


def _gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (N,1,H,W), edges replicated, radius 3 sigma."""
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32, device=images.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    padded = F.pad(images, (radius, radius, 0, 0), mode="replicate")
    images = F.conv2d(padded, kernel.view(1, 1, 1, -1))
    padded = F.pad(images, (0, 0, radius, radius), mode="replicate")
    return F.conv2d(padded, kernel.view(1, 1, -1, 1))
