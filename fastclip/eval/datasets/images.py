"""Image files to tensors, decoded once per run: RGB images (N, 3, H, W) and grey-level maps (N, H, W), uint8.

Loaders return paths; decoding is this separate step so that a benchmark decodes only what it uses, at the size it
needs. `size` is one of
  None     the native size; every file must have the same one (else use a size);
  int      open_clip's eval geometry: the shorter side resized to `size` (bicubic for images, bilinear for maps),
           then a centre crop to size x size, so maps stay aligned with the images the model sees;
  (h, w)   a resize to exactly h x w, aspect ratio not kept.
Decoding uses PIL (the library open_clip's transforms use) in a thread pool; PIL releases the GIL while it decodes.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch

from fastclip.eval.errors import InputError

Size = Union[int, tuple[int, int], None]
_MAX_THREADS = 8


class ImageDecodeError(InputError):
    """A file that cannot be decoded, or images that cannot be stacked; the message names the file(s)."""


def check_size(size: Size) -> Size:
    if size is None:
        return None
    if isinstance(size, int) and not isinstance(size, bool) and size >= 1:
        return size
    if isinstance(size, (tuple, list)) and len(size) == 2 and all(isinstance(s, int) and s >= 1 for s in size):
        return (int(size[0]), int(size[1]))
    raise ValueError(f"size must be None, a positive int or a (height, width) pair of positive ints, got {size!r}")


def _fit(image, size: Size, interpolation):
    """PIL image -> PIL image at `size` (module docstring), with torchvision's functions as open_clip calls them."""
    if size is None:
        return image
    from torchvision.transforms.v2 import functional as TF

    if isinstance(size, int):
        return TF.center_crop(TF.resize(image, [size], interpolation=interpolation), [size, size])
    return TF.resize(image, list(size), interpolation=interpolation)


def _decode(path: Path, mode: str, size: Size) -> np.ndarray:
    from PIL import Image, ImageOps, UnidentifiedImageError
    from torchvision.transforms.v2 import InterpolationMode

    from fastclip.data.webdataset import scale_16bit_to_8bit

    interpolation = InterpolationMode.BICUBIC if mode == "RGB" else InterpolationMode.BILINEAR
    try:
        with Image.open(path) as image:
            # As the training decoders (fastclip.data.webdataset.decode_rgb) and DALI: the EXIF orientation
            # applied, and 16-bit values scaled to 8 bits instead of clipped by PIL's convert().
            upright = ImageOps.exif_transpose(image)
            converted = scale_16bit_to_8bit(upright).convert(mode)
            pixels = np.array(_fit(converted, size, interpolation))  # writable: torch.from_numpy needs that
    except FileNotFoundError as exc:
        raise ImageDecodeError(f"{path}: no such file") from exc
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise ImageDecodeError(f"{path}: cannot decode the image ({exc})") from exc
    return pixels


def _decode_many(paths: Sequence[str | os.PathLike], mode: str, size: Size, desc: str) -> torch.Tensor:
    paths = [Path(path) for path in paths]
    size = check_size(size)
    if not paths:
        raise ValueError("no image files to decode")
    from tqdm import tqdm  # here, not at import: the GPU machine's CUDA tests import this module without tqdm

    threads = max(1, min(_MAX_THREADS, os.cpu_count() or 1, len(paths)))
    out: torch.Tensor | None = None
    with ThreadPoolExecutor(threads) as pool, tqdm(total=len(paths), desc=desc, unit="img", leave=False) as bar:
        for index, pixels in enumerate(pool.map(lambda path: _decode(path, mode, size), paths)):
            if out is None:
                out = torch.empty((len(paths), *pixels.shape), dtype=torch.uint8)
            elif pixels.shape != tuple(out.shape[1:]):
                raise ImageDecodeError(
                    f"{paths[index]}: {pixels.shape[0]}x{pixels.shape[1]} pixels, but {paths[0]} has "
                    f"{out.shape[1]}x{out.shape[2]}; images stacked into one tensor must share a size (pass size=)"
                )
            out[index] = torch.from_numpy(pixels)
            bar.update()
    assert out is not None
    return out.permute(0, 3, 1, 2).contiguous() if mode == "RGB" else out


def decode_image(path: str | os.PathLike, size: Size = None) -> torch.Tensor:
    """One image file -> uint8 (3, H, W) RGB."""
    return torch.from_numpy(_decode(Path(path), "RGB", check_size(size))).permute(2, 0, 1).contiguous()


def decode_images(paths: Sequence[str | os.PathLike], size: Size = None, *, desc: str = "decoding") -> torch.Tensor:
    """Image files -> uint8 (N, 3, H, W) RGB, in the order given."""
    return _decode_many(paths, "RGB", size, desc)


def decode_map(path: str | os.PathLike, size: Size = None) -> torch.Tensor:
    """One grey-level map (a saliency or fixation map) -> uint8 (H, W); colour files are converted to luminance."""
    return torch.from_numpy(_decode(Path(path), "L", check_size(size)))


def decode_maps(paths: Sequence[str | os.PathLike], size: Size = None, *, desc: str = "decoding maps"):
    """Grey-level map files -> uint8 (N, H, W) tensor, in the order given."""
    return _decode_many(paths, "L", size, desc)
