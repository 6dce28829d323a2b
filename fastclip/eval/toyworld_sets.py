"""The toy world's evaluation sets for the benchmarks other than classification (fastclip.eval.datasets.
classification.load_toyworld renders those), generated on the fly (nothing on disk).

- cue conflict: the shape of a filled with the texture of b (shape_bias);
- iqa: references (natural scenes) and distorted copies, Gaussian noise and Gaussian blur at 5 levels each; the
  "human" score of a distorted image is 6 - level (1 = worst). A synthetic stand-in with the structure of TID2013,
  not human data: a model aligned with it ranks stronger distortions as more distant;
- two_afc: triplets (reference, distortion a, distortion b): every pair of levels within a type and every (noise,
  blur) pair across types; judge = 1 when p1 is the weaker distortion by level, 0 when it is the stronger, 0.5 for
  equal levels of different types (groups "within" and "across");
- saliency: natural scenes with the object's silhouette as where "observers" look: the fixation map is the
  silhouette blurred by a Gaussian, the fixations a few pixels of the silhouette chosen by a counter hash.
The iqa and two_afc sets share their images (ImageSet key "toyworld_distortions"), so they are encoded once.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torchvision.transforms.v2 import functional as TF

from fastclip.eval.evalsets import CueConflictSet, Geometry, ImageSet, IQASet, SaliencySet, TwoAFCSet

CONFLICT_PAIRS = 15  # a shape is paired with the 15 other categories' textures
NOISE_SIGMAS = (0.03, 0.06, 0.1, 0.15, 0.22)  # on [0, 1] pixels
BLUR_SIGMAS = (0.4, 0.7, 1.0, 1.5, 2.2)  # in pixels of a 64-pixel image; scaled with the resolution
DISTORTION_SEED = 0x5EED0010
SALIENCY_SEED = 0x5EED0011
FIXATION_BLUR = 0.06  # fixation-map Gaussian sigma as a fraction of the image side
FIXATIONS_PER_IMAGE = 8


def cue_conflict(size: int) -> CueConflictSet:
    """At least `size` images per shape: ceil(size / 15) per (shape, texture) pair."""
    from fastclip.data.toyworld import cue_conflict_set
    from fastclip.ops.toyworld_render import CATEGORIES

    per_pair = max(1, math.ceil(size / CONFLICT_PAIRS))
    names_set = cue_conflict_set(per_pair, image_size=8)  # names and labels do not depend on the resolution

    def fetch(geometry: Geometry, fetch_device) -> torch.Tensor:
        return cue_conflict_set(per_pair, image_size=square_side(geometry), device=fetch_device).images

    shapes = [CATEGORIES[label] for label in names_set.shape_labels.tolist()]
    images = ImageSet(f"toyworld_cue_conflict_{per_pair}", len(names_set), fetch)
    return CueConflictSet(images, list(names_set.names), shapes, CATEGORIES)


def square_side(geometry: Geometry) -> int:
    """The toy world renders square images; a (h, w) geometry must be square too."""
    if isinstance(geometry, int):
        return geometry
    if geometry[0] != geometry[1]:
        raise ValueError(f"the toy world renders square images, got {geometry}")
    return int(geometry[0])


def _distorted(references: torch.Tensor) -> torch.Tensor:
    """(R, 3, S, S) -> (R * 10, 3, S, S): per reference, noise levels 1..5 then blur levels 1..5."""
    from fastclip.ops import gaussian_noise

    count, side = references.shape[0], references.shape[-1]
    noisy = gaussian_noise(
        references, list(NOISE_SIGMAS), sweep=True, seed=DISTORTION_SEED,
        sample_ids=torch.arange(count, device=references.device),
    ).transpose(0, 1)  # fmt: skip
    blurred = []
    for sigma in BLUR_SIGMAS:
        sigma_px = sigma * side / 64
        kernel = 2 * math.ceil(3 * sigma_px) + 1
        blurred.append(TF.gaussian_blur(references, [kernel, kernel], [sigma_px, sigma_px]))
    return torch.cat([noisy, torch.stack(blurred, dim=1)], dim=1).reshape(-1, *references.shape[1:])


def _distortion_images(references: int) -> ImageSet:
    """references reference images followed by their 10 distorted copies each."""
    from fastclip.data.toyworld import heldout_set

    per_category = max(1, math.ceil(references / 16))

    def fetch(geometry: Geometry, fetch_device) -> torch.Tensor:
        refs = heldout_set(per_category, image_size=square_side(geometry), device=fetch_device).images[:references]
        return torch.cat([refs, _distorted(refs)])

    return ImageSet(f"toyworld_distortions_{references}", references * 11, fetch)


def _levels(references: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(reference index, distortion type 0 noise / 1 blur, level 1..5) of every distorted image, in image order."""
    ids = torch.arange(references * 10)
    return ids // 10, (ids % 10) // 5, ids % 5 + 1


def iqa(references: int) -> IQASet:
    reference, kind, level = _levels(references)
    names = [f"ref{r}_{'noise' if k == 0 else 'blur'}{lv}" for r, k, lv in zip(*(t.tolist() for t in (reference, kind, level)))]
    return IQASet(
        _distortion_images(references), reference, references + torch.arange(references * 10),
        (6 - level).to(torch.float64), True, names,
    )  # fmt: skip


def two_afc(references: int) -> TwoAFCSet:
    """Per reference: every ordered pair of different levels within a distortion type (group "within"), and every
    (noise level a, blur level b) pair across types (group "across"); the weaker distortion is the closer image, and
    equal levels across types split the observers (judge 0.5)."""
    refs, p0, p1, judge, across = [], [], [], [], []

    def add(r: int, first: tuple[int, int], second: tuple[int, int]) -> None:
        refs.append(r)
        p0.append(references + r * 10 + first[0] * 5 + first[1] - 1)
        p1.append(references + r * 10 + second[0] * 5 + second[1] - 1)
        judge.append(1.0 if second[1] < first[1] else 0.0 if second[1] > first[1] else 0.5)
        across.append(first[0] != second[0])

    for r in range(references):
        for kind in (0, 1):
            for a in range(1, 6):
                for b in range(1, 6):
                    if a != b:
                        add(r, (kind, a), (kind, b))
        for a in range(1, 6):
            for b in range(1, 6):
                add(r, (0, a), (1, b))
    across_t = torch.tensor(across)
    return TwoAFCSet(
        _distortion_images(references), torch.tensor(refs), torch.tensor(p0), torch.tensor(p1),
        torch.tensor(judge, dtype=torch.float64),
        {"within": torch.nonzero(~across_t).flatten(), "across": torch.nonzero(across_t).flatten()},
    )  # fmt: skip


def _scenes(count: int, device):
    from fastclip.data.toyworld import scenes_for_indices

    return scenes_for_indices(torch.arange(count), seed=SALIENCY_SEED, kind="natural", device=device)


def silhouettes(count: int, side: int, device="cpu") -> torch.Tensor:
    """bool (count, side, side): where each saliency scene's object is (its render with a white object on black)."""
    from fastclip.ops.toyworld_render import toyworld_render

    params = _scenes(count, device)
    white = dataclasses.replace(
        params,
        texture_colors=torch.ones_like(params.texture_colors),
        background_color=torch.zeros_like(params.background_color),
    )
    return toyworld_render(white, side).mean(dim=1) > 0.5


def saliency(count: int, map_size: int = 64) -> SaliencySet:
    from fastclip.ops.toyworld_render import toyworld_render

    def fetch(geometry: Geometry, fetch_device) -> torch.Tensor:
        return toyworld_render(_scenes(count, fetch_device), square_side(geometry))

    masks = silhouettes(count, map_size)
    sigma = FIXATION_BLUR * map_size
    kernel = 2 * math.ceil(3 * sigma) + 1
    maps = TF.gaussian_blur(masks[:, None].float(), [kernel, kernel], [sigma, sigma])[:, 0]
    fixations = []
    for index, mask in enumerate(masks):
        inside = torch.nonzero(mask.flatten()).flatten()
        keys = (inside * 2654435761 + index * 40503) % 4294967291  # a fixed pseudo-random order of the pixels
        chosen = inside[torch.argsort(keys)[:FIXATIONS_PER_IMAGE]]
        points = torch.zeros(map_size * map_size, dtype=torch.bool)
        points[chosen] = True
        fixations.append(points.reshape(map_size, map_size))
    names = [f"scene{index}" for index in range(count)]
    return SaliencySet(
        ImageSet(f"toyworld_saliency_{count}", count, fetch), names, lambda: list(maps), lambda: fixations
    )
