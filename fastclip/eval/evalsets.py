"""What the benchmarks consume, whatever the dataset's layout: five kinds of evaluation set.

A set refers to its images through an `ImageSet` (files to decode, or images already in memory) and indexes into
it, so an image used by several pairs or triplets (a TID2013 reference) is decoded and encoded once. `EvalData`
turns an ImageSet into model-sized pixels once per run (context.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence, Union

import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from fastclip.eval.preprocess import resize_center_crop, to_unit_float

# An int: open_clip's eval geometry (shorter side resized, centre crop); (h, w): the whole image resized to h x w.
Geometry = Union[int, tuple[int, int]]

RESIZE_CHUNK = 1024
KINDS = ("classification", "cue_conflict", "iqa", "two_afc", "saliency")


@dataclass
class ImageSet:
    """The images of a dataset. `fetch(geometry, device)` returns all of them at that geometry: uint8 for decoded
    files and uint8 tensors (rounded after resizing, as PIL's 8-bit resize), float32 in [0, 1] for float sources
    (the toy world renders in float). `key` names the set uniquely within a run: sets with one key are the same
    images, decoded and encoded once."""

    key: str
    count: int
    fetch: Callable[[Geometry, torch.device], torch.Tensor]

    def __len__(self) -> int:
        return self.count

    @classmethod
    def from_paths(cls, key: str, paths: Sequence[Path]) -> "ImageSet":
        from fastclip.eval.datasets.images import decode_images

        paths = list(paths)
        return cls(key, len(paths), lambda geometry, device: decode_images(paths, geometry, desc=f"decoding {key}"))

    @classmethod
    def from_tensor(cls, key: str, images: torch.Tensor) -> "ImageSet":
        """(N, 3, H, W) uint8 or [0, 1] float images of any size (resized in chunks: the float intermediate of a
        whole dataset at 224 px would not fit)."""

        def fetch(geometry: Geometry, device) -> torch.Tensor:
            chunks = [
                resize_tensor(images[start : start + RESIZE_CHUNK].to(device), geometry)
                for start in range(0, len(images), RESIZE_CHUNK)
            ]
            return torch.cat(chunks)

        return cls(key, int(images.shape[0]), fetch)


def resize_tensor(images: torch.Tensor, geometry: Geometry) -> torch.Tensor:
    """(N, 3, H, W) images -> `geometry`, keeping uint8 as uint8 and float as float."""
    if isinstance(geometry, int):
        resized = resize_center_crop(images, geometry)
    elif tuple(images.shape[-2:]) == tuple(geometry):
        resized = to_unit_float(images)
    else:
        resized = TF.resize(
            to_unit_float(images), list(geometry), interpolation=InterpolationMode.BICUBIC, antialias=True
        ).clamp_(0.0, 1.0)
    if images.dtype == torch.uint8:
        return resized.mul_(255.0).round_().to(torch.uint8)
    return resized


@dataclass
class ClassificationSet:
    images: ImageSet
    labels: torch.Tensor  # long (N,)
    class_names: tuple[str, ...]
    templates: str | None = None  # a template-set name (zeroshot.template_set); None: the run's --templates


@dataclass
class CueConflictSet:
    images: ImageSet
    names: list[str]  # Geirhos file names <shape><i>-<texture><j>.png
    shapes: list[str]
    categories: tuple[str, ...]  # the 16-way decision classes
    templates: str | None = None
    human_reference: object | None = None  # ShapeBiasReport of the human observers' raw data, when given


@dataclass
class IQASet:
    """Full-reference image quality: pairs (reference, distorted) of `images` with a human score each."""

    images: ImageSet
    reference: torch.Tensor  # long (n,) index into images
    distorted: torch.Tensor  # long (n,)
    scores: torch.Tensor  # float64 (n,)
    higher_is_better: bool  # MOS (TID2013, KADID's "dmos"): True; a DMOS: False
    names: list[str] = field(default_factory=list)  # the distorted images' names, for the per-pair files


@dataclass
class TwoAFCSet:
    """Triplets (ref, p0, p1): `judge` is the fraction of observers who found p1 closer to ref."""

    images: ImageSet
    ref: torch.Tensor  # long (n,)
    p0: torch.Tensor
    p1: torch.Tensor
    judge: torch.Tensor  # float64 (n,) in [0, 1]
    groups: dict[str, torch.Tensor] = field(default_factory=dict)  # e.g. BAPPS subset -> long indices of triplets


class SaliencySet:
    """Images with human fixation data at each image's own resolution (sizes may differ between images). The
    fixation data is read on first use (`fixation_maps()`, `fixations()`), not when the suite is checked."""

    def __init__(
        self,
        images: ImageSet,
        names: list[str],
        fixation_maps: Callable[[], list[torch.Tensor]] | None,
        fixations: Callable[[], list[torch.Tensor]] | None,
    ):
        if fixation_maps is None and fixations is None:
            raise ValueError("a saliency set needs fixation maps, fixation points or both")
        self.images, self.names = images, names
        self._loaders = {"maps": fixation_maps, "fixations": fixations}
        self._loaded: dict[str, list[torch.Tensor]] = {}

    @property
    def has_fixation_maps(self) -> bool:
        return self._loaders["maps"] is not None

    @property
    def has_fixations(self) -> bool:
        return self._loaders["fixations"] is not None

    def _get(self, what: str) -> list[torch.Tensor]:
        if what not in self._loaded:
            self._loaded[what] = self._loaders[what]()
        return self._loaded[what]

    def fixation_maps(self) -> list[torch.Tensor]:
        """Continuous human maps, one (H_i, W_i) tensor per image (uint8 or float)."""
        return self._get("maps")

    def fixations(self) -> list[torch.Tensor]:
        """Fixated pixels, one bool (H_i, W_i) tensor per image."""
        return self._get("fixations")
