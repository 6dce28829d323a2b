"""The embedded toy world: a procedural image-caption world in which shape and texture are separate cues.

Each of the 16 categories (named like the 16 Geirhos categories, so the same zero-shot code serves both) has its own
silhouette and its own texture (fastclip.ops.toyworld_render has the geometry). A natural image shows the
category's silhouette, filled with the category's texture, at a random position, scale and rotation, in two random
colours (colour is never a cue), on a low-contrast background. In the cue-equal world both cues always predict the
label; the training world's knobs (fastclip.data.toyworld_knobs: predictivity and decodability of each cue, caption
noise) change how often and how clearly each cue shows it. Evaluation sets always show the cue-equal world and take
the cues apart: cue-conflict images put the texture of b in the shape of a, shape-only images fill the silhouette with
one flat colour, texture-only images fill the whole frame with the texture.

Every per-sample value comes from a counter-based hash of (seed, kind, sample index, field), so scene i is the same
whichever batch, rank or device renders it. Labels cycle through the categories with the index (index % 16), so
any 16 consecutive indices hold every category once; training shuffles indices, not labels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import torch

from fastclip.data.toyworld_knobs import WorldKnobs
from fastclip.ops.toyworld_render import (
    CATEGORIES,
    MASK32,
    NUM_CATEGORIES,
    SceneParams,
    mix32,
    toyworld_render,
    uniform_from_hash,
)

__all__ = [
    "CATEGORIES", "KINDS", "TEMPLATES", "LabelledImages", "SceneParams", "ToyWorldData", "captions",
    "cue_conflict_set", "heldout_set", "sample_scenes", "scene_labels", "scenes_for_indices", "shape_only_set",
    "texture_only_set", "WorldKnobs", "natural_cue_labels", "occlude", "occluder_boxes", "HELDOUT_SEED",
    "CUE_CONFLICT_SEED", "SHAPE_ONLY_SEED", "TEXTURE_ONLY_SEED",
]  # fmt: skip

KINDS = ("natural", "cue_conflict", "shape_only", "texture_only")
NUM_PAIRS = NUM_CATEGORIES * (NUM_CATEGORIES - 1)  # ordered (shape, texture) pairs with shape != texture

# Evaluation sets use fixed seeds far from the small seeds training runs use, so they are held out.
HELDOUT_SEED = 0x5EED0001
CUE_CONFLICT_SEED = 0x5EED0002
SHAPE_ONLY_SEED = 0x5EED0003
TEXTURE_ONLY_SEED = 0x5EED0004

# Scene distribution. Scale is the silhouette's radius as a fraction of half the image side; the centre stays
# within 1 - CENTER_MARGIN * scale of the middle, so at most a small part of the silhouette leaves the frame.
SCALE_RANGE = (0.4, 0.75)
ROTATION_RANGE = (-math.pi / 4, math.pi / 4)
CENTER_MARGIN = 0.85
# One texture colour is dark and the other bright in every channel, so every texture shows; which one is which is
# random, and so are the hues.
DARK_RANGE = (0.0, 0.45)
BRIGHT_RANGE = (0.55, 1.0)
BACKGROUND_RANGE = (0.3, 0.7)

TEMPLATES: tuple[str, ...] = (
    "a photo of {a}.",
    "a picture of {a}.",
    "an image of {a}.",
    "{a} on a plain background.",
    "a rendering of {a}.",
    "a drawing of {a}.",
    "a photo of the {name}.",
    "a cropped photo of {a}.",
    "a close-up of the {name}.",
    "this is {a}.",
    "there is {a} in the picture.",
    "{a}.",
)

# Hash streams: one per (kind, field). The fields of a scene, in stream order:
_FIELDS = (
    "center_x", "center_y", "scale", "rotation", "dark_r", "dark_g", "dark_b", "bright_r", "bright_g", "bright_b",
    "swap", "background_r", "background_g", "background_b", "phase_x", "phase_y", "background_seed",
    # The knobs' draws (fastclip.data.toyworld_knobs), after the others so that they leave those values as they were.
    "texture_keep", "texture_other", "shape_keep", "shape_other", "occluder_x", "occluder_y", "caption_keep",
    "caption_other",
)  # fmt: skip
_FIELD = {name: k for k, name in enumerate(_FIELDS)}
_STREAM_DOMAIN = 0x5BD1E995
_CAPTION_STREAM = mix32(_STREAM_DOMAIN ^ 0xCA000000)
_SHUFFLE_STREAM = mix32(_STREAM_DOMAIN ^ 0x5F000000)


def _streams(kind: str) -> torch.Tensor:
    code = KINDS.index(kind)
    return torch.tensor([mix32(_STREAM_DOMAIN ^ (code << 8) ^ field) for field in range(len(_FIELDS))])


def counter_hash(seed: int, indices: torch.Tensor, streams: torch.Tensor) -> torch.Tensor:
    """(N, F) 32-bit hash words (in int64) of (seed, index, stream): the world's only source of randomness."""
    seed &= (1 << 64) - 1
    key = mix32(mix32((seed & MASK32) ^ 0x9E3779B9) ^ (seed >> 32))
    h = mix32((indices & MASK32) ^ key)
    h = mix32(h ^ ((indices >> 32) & MASK32))
    return mix32(h[:, None] ^ streams.to(indices.device)[None, :])


# ------------------------------------------------------------------------------------------------- validation


def _check_int(name: str, value, *, minimum: int | None = None, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{where}: {name} must be an int, got {type(value).__name__} {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{where}: {name} must be >= {minimum}, got {value}")
    return value


def _check_kind(kind: str, where: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"{where}: kind must be one of {KINDS}, got {kind!r}")
    return kind


def _check_labels(labels, where: str) -> torch.Tensor:
    labels = torch.as_tensor(labels)
    if labels.numel() == 0:
        return labels.reshape(0).to(torch.int64)
    if labels.dim() != 1 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise TypeError(
            f"{where}: labels must be a 1-D sequence of ints, got {labels.dtype} of shape {tuple(labels.shape)}"
        )
    labels = labels.to("cpu", torch.int64)
    if (int(labels.min()) < 0 or int(labels.max()) >= NUM_CATEGORIES):
        raise ValueError(f"{where}: labels must lie in [0, {NUM_CATEGORIES}), got values in "
                         f"[{int(labels.min())}, {int(labels.max())}]")  # fmt: skip
    return labels


# ------------------------------------------------------------------------------------------------------ scenes


def scene_labels(indices: torch.Tensor, kind: str = "natural") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(labels, shape_labels, texture_labels) of scenes `indices` of `kind`; -1 marks a missing cue.

    natural: all three are index % 16. cue_conflict: index % 240 enumerates the ordered pairs (a, b), a != b, in
    lexicographic order; the label is the shape a. shape_only / texture_only: index % 16 is the one cue present.
    """
    _check_kind(kind, "scene_labels")
    indices = indices.to(torch.int64)
    none = torch.full_like(indices, -1)
    if kind == "cue_conflict":
        pair = indices % NUM_PAIRS
        shape = pair // (NUM_CATEGORIES - 1)
        other = pair % (NUM_CATEGORIES - 1)
        texture = other + (other >= shape).to(torch.int64)
        return shape, shape.clone(), texture
    category = indices % NUM_CATEGORIES
    if kind == "shape_only":
        return category, category.clone(), none
    if kind == "texture_only":
        return category, none, category.clone()
    return category, category.clone(), category.clone()


def _in_range(u: torch.Tensor, bounds: tuple[float, float]) -> torch.Tensor:
    low, high = bounds
    return u * (high - low) + low


def _uniforms(seed: int, indices: torch.Tensor, names: tuple[str, ...]) -> torch.Tensor:
    """(N, len(names)) uniforms of the natural kind's hash fields `names` (the same words scenes_for_indices uses)."""
    streams = _streams("natural")[[_FIELD[name] for name in names]]
    return uniform_from_hash(counter_hash(seed, indices, streams))


def _other_category(category: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """A category other than `category`, uniform over the 15 others, from uniforms u in [0, 1)."""
    return (category + 1 + (u * (NUM_CATEGORIES - 1)).to(torch.int64)) % NUM_CATEGORIES


def _kept_or_other(category: torch.Tensor, keep: torch.Tensor, other: torch.Tensor, share: float) -> torch.Tensor:
    if share >= 1.0:
        return category.clone()
    return torch.where(keep < share, category, _other_category(category, other))


def natural_cue_labels(indices: torch.Tensor, *, seed: int, world: WorldKnobs) -> tuple[torch.Tensor, ...]:
    """(caption labels, shape labels, texture labels) of natural training scenes `indices` in `world`.

    The drawn category is index % 16. Its silhouette is shown with probability world.shape_predictivity, its
    texture with probability world.texture_predictivity, else another category's (uniform over the other 15); the
    caption names it with probability 1 - world.caption_noise, else another category. All draws are counter-based.
    """
    indices = indices.to(torch.int64)
    category = indices % NUM_CATEGORIES
    u = _uniforms(seed, indices, ("shape_keep", "shape_other", "texture_keep", "texture_other", "caption_keep",
                                  "caption_other"))  # fmt: skip
    shape = _kept_or_other(category, u[:, 0], u[:, 1], world.shape_predictivity)
    texture = _kept_or_other(category, u[:, 2], u[:, 3], world.texture_predictivity)
    caption = _kept_or_other(category, u[:, 4], u[:, 5], 1.0 - world.caption_noise)
    return caption, shape, texture


def _with_contrast(first: torch.Tensor, second: torch.Tensor, contrast: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Pull the two texture colours towards their midpoint: the pattern keeps its geometry, loses contrast."""
    if contrast >= 1.0:
        return first, second
    middle = (first + second) / 2
    return middle + contrast * (first - middle), middle + contrast * (second - middle)


def scenes_for_indices(indices: torch.Tensor, *, seed: int, kind: str = "natural", device=None,
                       world: WorldKnobs | None = None) -> SceneParams:  # fmt: skip
    """The scenes with these sample indices (any order, repeats allowed), computed on `device`.

    Scene i depends only on (seed, i, kind, world), so any batch split, rank or device gives the same parameters
    (bit for bit: integer hashing, then exact float32 arithmetic). `world` (natural scenes only) sets the training
    world's knobs; None is the cue-equal world, which every evaluation set shows.
    """
    _check_int("seed", seed, where="scenes_for_indices")
    _check_kind(kind, "scenes_for_indices")
    if not isinstance(indices, torch.Tensor) or indices.dim() != 1 or indices.dtype.is_floating_point:
        raise TypeError("scenes_for_indices: indices must be a 1-D integer tensor")
    if world is not None and kind != "natural":
        raise ValueError(f"scenes_for_indices: world knobs apply to natural scenes only, got kind {kind!r}")
    world = WorldKnobs() if world is None else world
    device = torch.device(device) if device is not None else indices.device
    indices = indices.to(device, torch.int64)
    if indices.numel() and int(indices.min()) < 0:
        raise ValueError("scenes_for_indices: indices must be >= 0")
    hashes = counter_hash(seed, indices, _streams(kind))
    u = uniform_from_hash(hashes)

    def field(name: str) -> torch.Tensor:
        return u[:, _FIELD[name]]

    def fields(*names: str) -> torch.Tensor:
        return u[:, [_FIELD[name] for name in names]]

    scale = _in_range(field("scale"), world.scale_range)
    reach = 1 - CENTER_MARGIN * scale
    center = (fields("center_x", "center_y") * 2 - 1) * reach[:, None]
    dark = _in_range(fields("dark_r", "dark_g", "dark_b"), DARK_RANGE)
    bright = _in_range(fields("bright_r", "bright_g", "bright_b"), BRIGHT_RANGE)
    background = _in_range(fields("background_r", "background_g", "background_b"), BACKGROUND_RANGE)
    bright_first = field("swap") < 0.5
    if kind == "shape_only":
        # The flat fill is texture_colors[:, 0]: take whichever colour stands out more from the background.
        bright_first = (bright - background).abs().mean(1) > (dark - background).abs().mean(1)
    first = torch.where(bright_first[:, None], bright, dark)
    second = torch.where(bright_first[:, None], dark, bright)
    first, second = _with_contrast(first, second, world.texture_contrast)
    if kind == "natural":
        _, shape_labels, texture_labels = natural_cue_labels(indices, seed=seed, world=world)
    else:
        _, shape_labels, texture_labels = scene_labels(indices, kind)
    return SceneParams(
        shape_id=shape_labels,
        texture_id=texture_labels,
        center=center,
        scale=scale,
        rotation=_in_range(field("rotation"), ROTATION_RANGE),
        texture_colors=torch.stack([first, second], dim=1),
        background_color=background,
        texture_phase=fields("phase_x", "phase_y"),
        background_seed=hashes[:, _FIELD["background_seed"]],
    )


def occluder_boxes(indices: torch.Tensor, params: SceneParams, *, seed: int, world: WorldKnobs) -> torch.Tensor:
    """(N, 3) occluding squares (centre x, centre y, half side) in image units for natural scenes `indices`.

    The square's side is world.occlusion times the silhouette's diameter (2 * scale); its centre lies uniformly
    within half a radius of the silhouette's centre, so it always hides part of the silhouette.
    """
    u = _uniforms(seed, indices.to(torch.int64), ("occluder_x", "occluder_y")).to(params.device)
    centre = params.center + (u * 2 - 1) * (params.scale / 2)[:, None]
    return torch.cat([centre, (world.occlusion * params.scale)[:, None]], dim=1)


def occlude(images: torch.Tensor, boxes: torch.Tensor, colors: torch.Tensor) -> torch.Tensor:
    """Paint each image's square `boxes` row (see occluder_boxes) in its flat `colors` row (N, 3), in place."""
    side = images.shape[-1]
    centres = (torch.arange(side, device=images.device, dtype=torch.float32) * 2 + 1) / side - 1
    inside_x = (centres[None, :] - boxes[:, 0:1]).abs() <= boxes[:, 2:3]  # (N, S) columns
    inside_y = (-centres[None, :] - boxes[:, 1:2]).abs() <= boxes[:, 2:3]  # (N, S) rows (y grows upwards)
    mask = inside_y[:, :, None] & inside_x[:, None, :]
    images.copy_(torch.where(mask[:, None], colors[:, :, None, None], images))
    return images


def sample_scenes(n: int, *, seed: int, start: int = 0, kind: str = "natural", device="cpu") -> SceneParams:
    """Scenes start, ..., start + n - 1 of `kind` (see scenes_for_indices)."""
    _check_int("n", n, minimum=0, where="sample_scenes")
    _check_int("start", start, minimum=0, where="sample_scenes")
    _check_int("seed", seed, where="sample_scenes")
    _check_kind(kind, "sample_scenes")
    return scenes_for_indices(torch.arange(start, start + n, device=device), seed=seed, kind=kind)


# ---------------------------------------------------------------------------------------------------- captions


def _article(name: str) -> str:
    return ("an " if name[0] in "aeiou" else "a ") + name


def _caption_texts(labels: torch.Tensor, indices: torch.Tensor, seed: int) -> list[str]:
    choice = counter_hash(seed, indices.to("cpu", torch.int64), torch.tensor([_CAPTION_STREAM]))[:, 0]
    template = (choice % len(TEMPLATES)).tolist()
    names = [CATEGORIES[c] for c in labels.tolist()]
    return [TEMPLATES[t].format(a=_article(name), name=name) for t, name in zip(template, names)]


def captions(labels, *, seed: int, start: int = 0) -> list[str]:
    """One caption per label, naming its category through a template chosen from (seed, start + position)."""
    labels = _check_labels(labels, "captions")
    _check_int("seed", seed, where="captions")
    _check_int("start", start, minimum=0, where="captions")
    return _caption_texts(labels, torch.arange(start, start + labels.numel()), seed)


# ---------------------------------------------------------------------------------------------------- training


class ToyWorldData:
    """Training data from the toy world: an epoch is `num_samples` freshly rendered images.

    The sample ids of epoch e are e * num_samples + [0, num_samples), shuffled by a counter hash of (seed, id), so
    every epoch shows new scenes in a new order and any (epoch, rank) can be replayed, e.g. after a resume. The
    shuffled ids are dealt round-robin to the ranks and cut into batches; every rank yields the same number of
    equal-shape batches. drop_last=True leaves out the tail that does not fill a batch on every rank (a different
    tail each epoch); drop_last=False pads it from the start of the epoch's order instead, so every sample is seen
    at least once (exactly once when num_samples is a multiple of batch_size * world_size).
    """

    def __init__(self, num_samples: int, *, image_size: int = 64, seed: int = 0, device="cpu",
                 world: WorldKnobs | None = None):  # fmt: skip
        if world is not None and not isinstance(world, WorldKnobs):
            raise TypeError(f"ToyWorldData: world must be a WorldKnobs, got {type(world).__name__}")
        self.world = WorldKnobs() if world is None else world
        self.num_samples = _check_int("num_samples", num_samples, minimum=1, where="ToyWorldData")
        self.image_size = _check_int("image_size", image_size, minimum=1, where="ToyWorldData")
        self.seed = _check_int("seed", seed, where="ToyWorldData")
        self.device = torch.device(device)
        self._order_cache: tuple[int, torch.Tensor] | None = None

    def __repr__(self) -> str:
        return (f"ToyWorldData(num_samples={self.num_samples}, image_size={self.image_size}, seed={self.seed}, "
                f"device={str(self.device)!r}, world={self.world!r})")  # fmt: skip

    def _check_split(self, batch_size, world_size, rank=0) -> None:
        _check_int("batch_size", batch_size, minimum=1, where="ToyWorldData")
        _check_int("world_size", world_size, minimum=1, where="ToyWorldData")
        _check_int("rank", rank, minimum=0, where="ToyWorldData")
        if rank >= world_size:
            raise ValueError(f"ToyWorldData: rank must be < world_size ({world_size}), got {rank}")

    def num_batches(self, batch_size: int, world_size: int = 1, *, drop_last: bool = True) -> int:
        """Batches each rank yields per epoch."""
        self._check_split(batch_size, world_size)
        per_step = batch_size * world_size
        return self.num_samples // per_step if drop_last else -(-self.num_samples // per_step)

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """All sample ids of `epoch`, shuffled (CPU long tensor of num_samples ids)."""
        _check_int("epoch", epoch, minimum=0, where="ToyWorldData")
        if self._order_cache is None or self._order_cache[0] != epoch:
            ids = torch.arange(self.num_samples, dtype=torch.int64) + epoch * self.num_samples
            keys = counter_hash(self.seed, ids, torch.tensor([_SHUFFLE_STREAM]))[:, 0]
            self._order_cache = (epoch, ids[torch.argsort(keys, stable=True)])
        return self._order_cache[1]

    def sample_ids(self, epoch: int, batch_size: int, *, rank: int = 0, world_size: int = 1,
                   drop_last: bool = True) -> torch.Tensor:  # fmt: skip
        """(num_batches, batch_size) sample ids that `rank` renders in `epoch`, batch by batch (CPU long)."""
        self._check_split(batch_size, world_size, rank)
        batches = self.num_batches(batch_size, world_size, drop_last=drop_last)
        if batches == 0:
            raise ValueError(
                f"ToyWorldData: batch_size * world_size = {batch_size * world_size} exceeds num_samples = "
                f"{self.num_samples}, so drop_last=True leaves no batch; lower batch_size or raise num_samples"
            )
        order = self.epoch_order(epoch)
        used = batches * batch_size * world_size
        if used > order.numel():
            order = order.repeat(-(-used // order.numel()))
        return order[:used][rank::world_size].reshape(batches, batch_size)

    def batches(self, epoch: int, batch_size: int, *, rank: int = 0, world_size: int = 1,
                drop_last: bool = True) -> Iterator[tuple[torch.Tensor, list[str], torch.Tensor]]:  # fmt: skip
        """Yield (images float (B, 3, S, S) in [0, 1] on the device, captions, sample_ids long (B,) on the CPU)."""
        for ids in self.sample_ids(epoch, batch_size, rank=rank, world_size=world_size, drop_last=drop_last):
            yield self.render(ids)

    def render(self, ids: torch.Tensor) -> tuple[torch.Tensor, list[str], torch.Tensor]:
        """(images, captions, ids) of natural scenes `ids` (any ids, e.g. one batch of sample_ids) in self.world."""
        params = scenes_for_indices(ids, seed=self.seed, kind="natural", device=self.device, world=self.world)
        images = toyworld_render(params, self.image_size)
        if self.world.occlusion > 0:
            boxes = occluder_boxes(ids, params, seed=self.seed, world=self.world)
            occlude(images, boxes, params.background_color)
        labels, _, _ = natural_cue_labels(ids, seed=self.seed, world=self.world)
        return images, _caption_texts(labels, ids, self.seed), ids


# ---------------------------------------------------------------------------------------------- evaluation sets


@dataclass
class LabelledImages:
    """An evaluation set: images float (N, 3, S, S) in [0, 1], labels long (N,), file-style names, and the
    category of each cue (shape_labels / texture_labels, -1 where the cue is absent); tensors on one device."""

    images: torch.Tensor
    labels: torch.Tensor
    names: list[str]
    shape_labels: torch.Tensor
    texture_labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.names)


def _labelled_set(kind: str, count: int, image_size: int, seed: int, device, where: str) -> tuple:
    _check_int("image_size", image_size, minimum=1, where=where)
    _check_int("seed", seed, where=where)
    indices = torch.arange(count)
    params = scenes_for_indices(indices, seed=seed, kind=kind, device=device)
    labels, shape_labels, texture_labels = (ids.to(params.device) for ids in scene_labels(indices, kind))
    return toyworld_render(params, image_size), labels, shape_labels, texture_labels


def _per_category_set(kind: str, n_per_category: int, image_size: int, seed: int, device, where: str):
    _check_int("n_per_category", n_per_category, minimum=1, where=where)
    images, labels, shape_labels, texture_labels = _labelled_set(
        kind, n_per_category * NUM_CATEGORIES, image_size, seed, device, where
    )
    names = [f"{CATEGORIES[c]}{i // NUM_CATEGORIES + 1}.png" for i, c in enumerate(labels.tolist())]
    return LabelledImages(images, labels, names, shape_labels, texture_labels)


def heldout_set(n_per_category: int = 16, *, image_size: int = 64, seed: int = HELDOUT_SEED, device="cpu"):
    """Natural images of the world from a held-out seed; names "{category}{i}.png", i from 1."""
    return _per_category_set("natural", n_per_category, image_size, seed, device, "heldout_set")


def shape_only_set(n_per_category: int = 16, *, image_size: int = 64, seed: int = SHAPE_ONLY_SEED, device="cpu"):
    """Silhouettes in one flat colour (no texture): texture_labels are -1."""
    return _per_category_set("shape_only", n_per_category, image_size, seed, device, "shape_only_set")


def texture_only_set(n_per_category: int = 16, *, image_size: int = 64, seed: int = TEXTURE_ONLY_SEED,
                     device="cpu"):  # fmt: skip
    """Textures filling the whole frame (no silhouette): shape_labels are -1."""
    return _per_category_set("texture_only", n_per_category, image_size, seed, device, "texture_only_set")


def cue_conflict_set(n_per_pair: int = 1, *, image_size: int = 64, seed: int = CUE_CONFLICT_SEED, device="cpu"):
    """The shape of a filled with the texture of b, for every a != b (240 images per n), labelled by shape.

    Names follow the Geirhos layout "{shape}{i}-{texture}{i}.png" (i from 1, the repeat of the pair), so the
    texture category parses from the name as model-vs-human does.
    """
    _check_int("n_per_pair", n_per_pair, minimum=1, where="cue_conflict_set")
    images, labels, shape_labels, texture_labels = _labelled_set(
        "cue_conflict", n_per_pair * NUM_PAIRS, image_size, seed, device, "cue_conflict_set"
    )
    names = [
        f"{CATEGORIES[a]}{i // NUM_PAIRS + 1}-{CATEGORIES[b]}{i // NUM_PAIRS + 1}.png"
        for i, (a, b) in enumerate(zip(shape_labels.tolist(), texture_labels.tolist()))
    ]
    return LabelledImages(images, labels, names, shape_labels, texture_labels)

