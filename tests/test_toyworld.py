"""The embedded toy world: the renderer op (fastclip.ops.toyworld_render) and the world (fastclip.data.toyworld)."""

from __future__ import annotations

import importlib
import math
import re

import numpy as np
import pytest
import torch

from fastclip.data import toyworld
from fastclip.data.toyworld import (
    CATEGORIES,
    KINDS,
    ToyWorldData,
    captions,
    cue_conflict_set,
    heldout_set,
    sample_scenes,
    scene_labels,
    scenes_for_indices,
    shape_only_set,
    texture_only_set,
)
from fastclip.ops import toyworld_render
from fastclip.ops.toyworld_render import (
    NUM_CATEGORIES,
    SHAPE_NAMES,
    TEXTURE_NAMES,
    SceneParams,
    background_intensity,
    mix32,
    silhouette_coverage,
    texture_intensity,
)

# `fastclip.ops.toyworld_render` is the function (re-exported by the package); the module holds the chunk size.
render_module = importlib.import_module("fastclip.ops.toyworld_render")

GEIRHOS_16 = ["airplane", "bear", "bicycle", "bird", "boat", "bottle", "car", "cat", "chair", "clock", "dog",
              "elephant", "keyboard", "knife", "oven", "truck"]  # fmt: skip
SCENE_FIELDS = ("shape_id", "texture_id", "center", "scale", "rotation", "texture_colors", "background_color",
                "texture_phase", "background_seed")  # fmt: skip


def posed(shape_id, texture_id=None, *, scale=0.8, rotation=0.0, center=(0.0, 0.0), phase=(0.5, 0.5)):
    """Scenes at one fixed pose, one per shape id (texture -1 unless given)."""
    shape_id = torch.as_tensor(shape_id, dtype=torch.int64)
    n = shape_id.numel()
    texture_id = torch.full((n,), -1) if texture_id is None else torch.as_tensor(texture_id, dtype=torch.int64)
    colors = torch.tensor([[0.1, 0.2, 0.3], [0.9, 0.8, 0.7]]).expand(n, 2, 3).clone()
    return SceneParams(
        shape_id=shape_id,
        texture_id=texture_id,
        center=torch.tensor(center).expand(n, 2).clone(),
        scale=torch.full((n,), scale),
        rotation=torch.full((n,), rotation),
        texture_colors=colors,
        background_color=torch.full((n, 3), 0.5),
        texture_phase=torch.tensor(phase).expand(n, 2).clone(),
        background_seed=torch.arange(n, dtype=torch.int64),
    )


def with_field(params: SceneParams, **values) -> SceneParams:
    return SceneParams(**{name: values.get(name, getattr(params, name)) for name in SCENE_FIELDS})


def assert_same_scenes(a: SceneParams, b: SceneParams) -> None:
    for name in SCENE_FIELDS:
        assert torch.equal(getattr(a, name), getattr(b, name)), name


# ---------------------------------------------------------------------------------------------- determinism


def test_mix32_matches_wrapping_uint32_lowbias32():
    x = np.random.default_rng(0).integers(0, 2**32, size=2000, dtype=np.uint64).astype(np.uint32)
    expected = x.copy()
    expected ^= expected >> np.uint32(16)
    expected *= np.uint32(0x7FEB352D)
    expected ^= expected >> np.uint32(15)
    expected *= np.uint32(0x846CA68B)
    expected ^= expected >> np.uint32(16)
    got = mix32(torch.from_numpy(x.astype(np.int64)))
    assert np.array_equal(got.numpy(), expected.astype(np.int64))
    assert mix32(int(x[7])) == int(expected[7])


@pytest.mark.parametrize("kind", KINDS)
def test_scenes_do_not_depend_on_batch_split_or_order(kind):
    whole = sample_scenes(50, seed=3, kind=kind)
    split = SceneParams.cat([sample_scenes(13, seed=3, kind=kind), sample_scenes(37, seed=3, start=13, kind=kind)])
    assert_same_scenes(whole, split)
    order = torch.randperm(50, generator=torch.Generator().manual_seed(0))
    assert_same_scenes(whole[order], scenes_for_indices(order, seed=3, kind=kind))
    other_seed = sample_scenes(50, seed=4, kind=kind)
    assert not torch.equal(whole.center, other_seed.center)


def test_images_do_not_depend_on_batch_split_chunking_or_threads(monkeypatch):
    params = sample_scenes(40, seed=11)
    whole = toyworld_render(params, 48)
    assert torch.equal(whole, torch.cat([toyworld_render(params[:7], 48), toyworld_render(params[7:], 48)]))
    monkeypatch.setattr(render_module, "_PIXELS_PER_CHUNK_CPU", 48 * 48 * 3)
    assert torch.equal(whole, toyworld_render(params, 48))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1 if threads > 1 else 2)
        assert torch.equal(whole, toyworld_render(sample_scenes(40, seed=11), 48))
    finally:
        torch.set_num_threads(threads)


@pytest.mark.needs_cuda
def test_cuda_scenes_equal_cpu_scenes_and_images_match():
    cpu = sample_scenes(64, seed=5, kind="cue_conflict")
    cuda = sample_scenes(64, seed=5, kind="cue_conflict", device="cuda")
    assert_same_scenes(cpu, cuda.to("cpu"))
    torch.testing.assert_close(toyworld_render(cuda, 64).cpu(), toyworld_render(cpu, 64), atol=2e-3, rtol=0)
    data = ToyWorldData(64, seed=2, device="cuda")
    images, texts, ids = next(data.batches(0, 16))
    assert images.device.type == "cuda"
    torch.testing.assert_close(images.cpu(), ToyWorldData(64, seed=2).render(ids)[0], atol=2e-3, rtol=0)


# ---------------------------------------------------------------------------------------------- images


@pytest.mark.parametrize("image_size", [1, 17, 64])
def test_images_are_float32_rgb_in_unit_range(image_size):
    params = sample_scenes(32, seed=1)
    params.background_color[:4] = torch.tensor([0.0, 1.0, 0.0])  # the background grating must be clipped
    images = toyworld_render(params, image_size)
    assert images.shape == (32, 3, image_size, image_size) and images.dtype == torch.float32
    assert images.min() >= 0 and images.max() <= 1
    # The renderer's values are held to toyworld_render_ref by the Triton tests (test_toyworld_render_triton.py):
    # on the CPU auto is the reference itself, so comparing the two here could not fail.


def test_empty_batch_renders_empty():
    assert toyworld_render(sample_scenes(0, seed=0), 8).shape == (0, 3, 8, 8)


def test_natural_scenes_show_the_category_in_both_cues():
    params = sample_scenes(64, seed=0)
    labels, shape_labels, texture_labels = scene_labels(torch.arange(64))
    assert torch.equal(params.shape_id, labels) and torch.equal(params.texture_id, labels)
    assert torch.equal(labels, torch.arange(64) % NUM_CATEGORIES)
    assert torch.equal(shape_labels, labels) and torch.equal(texture_labels, labels)


def test_pose_and_colour_ranges():
    params = sample_scenes(4000, seed=9)
    low, high = toyworld.SCALE_RANGE
    assert params.scale.min() >= low and params.scale.max() < high
    assert (params.center.abs() <= (1 - toyworld.CENTER_MARGIN * params.scale)[:, None]).all()
    assert params.rotation.abs().max() <= math.pi / 4
    assert params.texture_colors.min() >= 0 and params.texture_colors.max() <= 1
    # One colour dark and one bright in every channel, in either order.
    assert ((params.texture_colors[:, 0] - params.texture_colors[:, 1]).abs() >= 0.1).all()
    first_is_bright = params.texture_colors[:, 0, 0] > 0.5
    assert 0.4 < first_is_bright.float().mean() < 0.6


def test_colour_is_not_a_cue():
    params = sample_scenes(16 * 400, seed=2)
    overall = params.texture_colors.mean(0)
    for category in range(NUM_CATEGORIES):
        chosen = params.shape_id == category
        # The standard error of each mean is about 0.015.
        assert (params.texture_colors[chosen].mean(0) - overall).abs().max() < 0.06, CATEGORIES[category]
        assert (params.background_color[chosen].mean(0) - params.background_color.mean(0)).abs().max() < 0.06


def test_the_picture_does_not_depend_on_resolution():
    params = sample_scenes(8, seed=4, kind="shape_only")
    small = silhouette_coverage(params, 64)
    large = silhouette_coverage(params, 192)
    pooled = torch.nn.functional.avg_pool2d(large[:, None], 3)[:, 0]
    assert (pooled - small).abs().mean() < 0.01
    torch.testing.assert_close(small.mean((1, 2)), large.mean((1, 2)), atol=0.01, rtol=0)


# ---------------------------------------------------------------------------------------------- silhouettes


def coverage_of_distance(signed_distance: torch.Tensor, image_size: int) -> torch.Tensor:
    return (0.5 - signed_distance * image_size / 2).clamp(0, 1)


def pixel_centres(image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    centres = (torch.arange(image_size, dtype=torch.float64) * 2 + 1) / image_size - 1
    y, x = torch.meshgrid(-centres, centres, indexing="ij")
    return x, y


def test_circle_and_ring_coverage_match_their_exact_signed_distance():
    size, scale, center = 64, 0.6, (0.2, -0.1)
    x, y = pixel_centres(size)
    radius = torch.hypot(x - center[0], y - center[1])
    circle = silhouette_coverage(posed([SHAPE_NAMES.index("circle")], scale=scale, center=center), size)[0]
    torch.testing.assert_close(circle.double(), coverage_of_distance(radius - 0.9 * scale, size), atol=1e-4, rtol=0)
    ring_distance = torch.maximum(radius - 0.92 * scale, 0.55 * scale - radius)
    ring = silhouette_coverage(posed([SHAPE_NAMES.index("ring")], scale=scale, center=center), size)[0]
    torch.testing.assert_close(ring.double(), coverage_of_distance(ring_distance, size), atol=1e-4, rtol=0)


def test_edges_are_anti_aliased():
    coverage = silhouette_coverage(posed(torch.arange(NUM_CATEGORIES)), 64)
    inside, outside = coverage == 1, coverage == 0
    partial = ~inside & ~outside
    for k in range(NUM_CATEGORIES):
        assert inside[k].any() and outside[k].any(), SHAPE_NAMES[k]
        # Every pixel where the silhouette meets the background is partly covered: the edge is one pixel wide.
        touching = (inside[k, :, 1:] & outside[k, :, :-1]).sum() + (inside[k, :, :-1] & outside[k, :, 1:]).sum()
        assert touching == 0, SHAPE_NAMES[k]
        assert partial[k].sum() >= 20, SHAPE_NAMES[k]
    # A circle's partial pixels hug its perimeter: about one per pixel of perimeter.
    circle_perimeter = 2 * math.pi * 0.9 * 0.8 * 32
    assert 0.7 * circle_perimeter < partial[SHAPE_NAMES.index("circle")].sum() < 1.6 * circle_perimeter


def test_each_silhouette_is_distinct():
    masks = (silhouette_coverage(posed(torch.arange(NUM_CATEGORIES)), 64) > 0.5).flatten(1).double()
    area = masks.sum(1)
    assert ((area / masks.shape[1] > 0.1) & (area / masks.shape[1] < 0.6)).all()
    intersection = masks @ masks.T
    iou = intersection / (area[:, None] + area[None] - intersection)
    off_diagonal = iou[~torch.eye(NUM_CATEGORIES, dtype=torch.bool)]
    assert off_diagonal.max() < 0.85, off_diagonal.max()


def test_rotation_is_counter_clockwise_about_the_centre():
    arrow = SHAPE_NAMES.index("arrow")
    up = silhouette_coverage(posed([arrow]), 64)[0]
    assert up[:32].sum() > up[32:].sum()  # the head is wider than the shaft: at rotation 0 the arrow points up
    for quarter_turns in (1, 2, 3):
        turned = silhouette_coverage(posed([arrow], rotation=quarter_turns * math.pi / 2), 64)[0]
        # torch.rot90 turns a picture (rows downwards) counter-clockwise.
        torch.testing.assert_close(turned, torch.rot90(up, quarter_turns), atol=1e-4, rtol=0)
    square = SHAPE_NAMES.index("square")
    torch.testing.assert_close(
        silhouette_coverage(posed([square], rotation=math.pi / 2), 64), silhouette_coverage(posed([square]), 64),
        atol=1e-4, rtol=0,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------- textures


def test_each_texture_is_distinct_whatever_the_colours():
    """Amplitude spectra ignore the phase and a swap of the two colours (t -> 1 - t); no two textures share one."""
    spectra = []
    for phase in (0.13, 0.61):
        t = texture_intensity(posed(torch.full((16,), -1), torch.arange(16), phase=(phase, 1 - phase)), 64)
        assert (t.amax((1, 2)) - t.amin((1, 2)) > 0.8).all()  # every texture uses the whole range
        amplitude = torch.fft.fft2(t - t.mean((1, 2), keepdim=True)).abs().flatten(1)
        spectra.append(amplitude / amplitude.norm(dim=1, keepdim=True))
    cosine = spectra[0] @ spectra[1].T
    off_diagonal = cosine.masked_fill(torch.eye(NUM_CATEGORIES, dtype=torch.bool), 0)
    assert off_diagonal.max() < 0.8, off_diagonal.max()
    # Each texture's spectrum at another phase is still closer to its own than to any other texture's.
    assert (cosine.diagonal() > off_diagonal.amax(1)).all()


def test_texture_names_and_shape_names():
    assert len(set(SHAPE_NAMES)) == len(set(TEXTURE_NAMES)) == NUM_CATEGORIES
    assert "circle" in SHAPE_NAMES and "checker_f5" in TEXTURE_NAMES


# ---------------------------------------------------------------------------------------------- cue semantics


def test_shape_only_pixels_are_background_outside_and_flat_fill_inside():
    params = sample_scenes(32, seed=6, kind="shape_only")
    assert (params.texture_id == -1).all()
    images = toyworld_render(params, 64)
    coverage = silhouette_coverage(params, 64)[:, None].expand_as(images)
    background = background_intensity(params, 64).clamp(0, 1)
    fill = params.texture_colors[:, 0, :, None, None].expand_as(images)
    assert torch.equal(images[coverage == 0], background[coverage == 0])
    assert torch.equal(images[coverage == 1], fill[coverage == 1])
    assert (coverage == 1).any() and (coverage == 0).any()
    # The flat fill stands out from the background.
    assert ((params.texture_colors[:, 0] - params.background_color).abs().mean(1) > 0.15).all()


def test_texture_only_images_have_no_silhouette_and_no_background():
    params = sample_scenes(32, seed=7, kind="texture_only")
    assert (params.shape_id == -1).all()
    assert (silhouette_coverage(params, 32) == 1).all()
    images = toyworld_render(params, 32)
    other_background = with_field(
        params, background_color=1 - params.background_color, background_seed=params.background_seed + 1
    )
    assert torch.equal(images, toyworld_render(other_background, 32))
    t = texture_intensity(params, 32)[:, None]
    low, high = params.texture_colors[:, 0, :, None, None], params.texture_colors[:, 1, :, None, None]
    torch.testing.assert_close(images, torch.lerp(low, high, t).clamp(0, 1), atol=0, rtol=0)


def test_cue_conflict_puts_texture_b_in_shape_a():
    params = sample_scenes(240, seed=8, kind="cue_conflict")
    assert (params.shape_id != params.texture_id).all()
    pairs = set(zip(params.shape_id.tolist(), params.texture_id.tolist()))
    assert len(pairs) == 240
    # Inside the silhouette the pixels are the texture of b: equal to a texture-only rendering of b at that phase.
    full_frame = with_field(params, shape_id=torch.full_like(params.shape_id, -1))
    inside = silhouette_coverage(params, 24)[:, None].expand(-1, 3, -1, -1) == 1
    assert torch.equal(toyworld_render(params, 24)[inside], toyworld_render(full_frame, 24)[inside])


# ---------------------------------------------------------------------------------------------- captions


def test_captions_name_the_category_with_varied_templates():
    labels = torch.arange(400) % NUM_CATEGORIES
    texts = captions(labels, seed=0)
    assert len(texts) == 400
    for label, text in zip(labels.tolist(), texts):
        assert re.search(rf"\b{CATEGORIES[label]}\b", text), text
        assert not re.search(r"\ba [aeiou]", text), text
    assert len({re.sub("|".join(CATEGORIES), "X", re.sub(r"\ban? ", "", t)) for t in texts}) >= 8
    assert captions(labels[100:], seed=0, start=100) == texts[100:]
    assert captions(labels, seed=1) != texts
    assert captions([], seed=0) == []


# ---------------------------------------------------------------------------------------------- eval sets


def test_categories_are_the_geirhos_16():
    assert list(CATEGORIES) == GEIRHOS_16


def test_heldout_set():
    held = heldout_set(2, image_size=32)
    assert len(held) == 32 and held.images.shape == (32, 3, 32, 32)
    assert torch.equal(torch.bincount(held.labels), torch.full((16,), 2))
    assert torch.equal(held.shape_labels, held.labels) and torch.equal(held.texture_labels, held.labels)
    assert len(set(held.names)) == 32 and held.names[0] == "airplane1.png" and held.names[16] == "airplane2.png"
    assert all(name.rstrip(".png").rstrip("0123456789") == CATEGORIES[c] for name, c in zip(held.names, held.labels))
    training = toyworld_render(sample_scenes(32, seed=0), 32)
    assert not torch.equal(held.images, training)
    assert torch.equal(held.images, heldout_set(2, image_size=32).images)


def test_cue_conflict_set():
    conflict = cue_conflict_set(1, image_size=16)
    assert len(conflict) == 240 and conflict.images.shape == (240, 3, 16, 16)
    assert torch.equal(conflict.labels, conflict.shape_labels)
    assert (conflict.shape_labels != conflict.texture_labels).all()
    assert len(set(zip(conflict.shape_labels.tolist(), conflict.texture_labels.tolist()))) == 240
    assert len(set(conflict.names)) == 240
    for name, a, b in zip(conflict.names, conflict.shape_labels.tolist(), conflict.texture_labels.tolist()):
        match = re.fullmatch(r"([a-z]+)(\d+)-([a-z]+)(\d+)\.png", name)
        assert match and match[1] == CATEGORIES[a] and match[3] == CATEGORIES[b], name
    assert len(cue_conflict_set(2, image_size=8)) == 480


def test_shape_only_and_texture_only_sets():
    shapes = shape_only_set(1, image_size=16)
    textures = texture_only_set(1, image_size=16)
    assert len(shapes) == len(textures) == 16
    assert (shapes.texture_labels == -1).all() and torch.equal(shapes.shape_labels, shapes.labels)
    assert (textures.shape_labels == -1).all() and torch.equal(textures.texture_labels, textures.labels)
    assert torch.equal(shapes.labels, torch.arange(16)) and shapes.names[3] == "bird1.png"


# ---------------------------------------------------------------------------------------------- training data


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_ranks_share_an_epoch_exactly_once_in_equal_batches(world_size):
    data = ToyWorldData(96, image_size=16, seed=5)
    per_rank = [data.sample_ids(1, 8, rank=r, world_size=world_size) for r in range(world_size)]
    assert all(ids.shape == (data.num_batches(8, world_size), 8) for ids in per_rank)
    everything = torch.cat([ids.flatten() for ids in per_rank]).sort().values
    assert torch.equal(everything, torch.arange(96, 192))  # epoch 1 holds ids 96..191, each exactly once
    batches = list(data.batches(1, 8, rank=world_size - 1, world_size=world_size))
    assert len(batches) == data.num_batches(8, world_size)
    for (images, texts, ids), expected in zip(batches, per_rank[-1]):
        assert images.shape == (8, 3, 16, 16) and len(texts) == 8 and torch.equal(ids, expected)


def test_epochs_are_reshuffled_and_replayable():
    data = ToyWorldData(64, seed=5)
    first, second = data.epoch_order(0), data.epoch_order(1)
    assert torch.equal(first.sort().values, torch.arange(64)) and not torch.equal(first, torch.arange(64))
    assert torch.equal(second.sort().values, torch.arange(64, 128))
    assert not torch.equal(second - 64, first)
    assert torch.equal(ToyWorldData(64, seed=5).epoch_order(1), second)
    assert not torch.equal(ToyWorldData(64, seed=6).epoch_order(0), first)


def test_uneven_epochs_with_and_without_drop_last():
    data = ToyWorldData(100, image_size=8, seed=1)
    kept = torch.cat([data.sample_ids(0, 8, rank=r, world_size=3).flatten() for r in range(3)])
    assert data.num_batches(8, 3) == 4 and kept.numel() == 96 and kept.unique().numel() == 96
    padded = [data.sample_ids(0, 8, rank=r, world_size=3, drop_last=False) for r in range(3)]
    assert all(ids.shape == (5, 8) for ids in padded) and data.num_batches(8, 3, drop_last=False) == 5
    assert torch.equal(torch.cat([ids.flatten() for ids in padded]).unique(), torch.arange(100))
    tiny = ToyWorldData(5, image_size=8)
    assert torch.cat([tiny.sample_ids(0, 4, rank=r, world_size=2, drop_last=False).flatten() for r in range(2)]
                     ).unique().numel() == 5  # fmt: skip


def test_a_sample_renders_the_same_on_every_rank():
    data = ToyWorldData(32, image_size=24, seed=3)
    images, texts, ids = next(data.batches(0, 4, rank=1, world_size=2))
    alone, alone_texts, _ = data.render(ids[2:3])
    assert torch.equal(images[2:3], alone) and texts[2:3] == alone_texts
    label = int(ids[2] % NUM_CATEGORIES)
    assert CATEGORIES[label] in texts[2]


# ---------------------------------------------------------------------------------------------- bad input


def test_scene_params_rows():
    params = sample_scenes(10, seed=0)
    assert len(params) == 10 and len(params[2:5]) == 3 and len(params[3]) == 1 and len(params[-1]) == 1
    assert torch.equal(params[torch.tensor([4, 1])].center, params.center[[4, 1]])
    assert params.to("cpu").device.type == "cpu"


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: sample_scenes(-1, seed=0), r"\bn\b"),
        (lambda: sample_scenes(4, seed=0.5), "seed"),
        (lambda: sample_scenes(4, seed=0, start=-2), "start"),
        (lambda: sample_scenes(4, seed=0, kind="photo"), "kind"),
        (lambda: scenes_for_indices(torch.tensor([-1]), seed=0), "indices"),
        (lambda: toyworld_render(sample_scenes(2, seed=0), 0), "image_size"),
        (lambda: toyworld_render(sample_scenes(2, seed=0), 32, backend="cuda-magic"), "backend"),
        (lambda: toyworld_render("scenes", 32), "params"),
        (lambda: toyworld_render(posed([16]), 8), "params.shape_id"),
        (lambda: toyworld_render(posed([0], [-2]), 8), "params.texture_id"),
        (lambda: toyworld_render(with_field(posed([0]), shape_id=torch.tensor([0.0])), 8), "params.shape_id"),
        (lambda: toyworld_render(posed([0], scale=0.0), 8), "params.scale"),
        (lambda: ToyWorldData(0), "num_samples"),
        (lambda: ToyWorldData(10, image_size=0), "image_size"),
        (lambda: ToyWorldData(10).num_batches(0), "batch_size"),
        (lambda: ToyWorldData(10).sample_ids(0, 4, rank=2, world_size=2), "rank"),
        (lambda: ToyWorldData(10).sample_ids(0, 4, world_size=0), "world_size"),
        (lambda: ToyWorldData(10).sample_ids(0, 16), "batch_size"),
        (lambda: ToyWorldData(10).sample_ids(-1, 4), "epoch"),
        (lambda: captions([3, 16], seed=0), "labels"),
        (lambda: captions([0.5], seed=0), "labels"),
        (lambda: heldout_set(0), "n_per_category"),
        (lambda: cue_conflict_set(0), "n_per_pair"),
        (lambda: shape_only_set(2, image_size=-4), "image_size"),
    ],
)
def test_bad_arguments_are_rejected_naming_the_argument(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_malformed_scene_fields_are_named():
    params = sample_scenes(3, seed=0)
    params.center = params.center[:, :1]
    with pytest.raises(ValueError, match=r"params\.center"):
        toyworld_render(params, 8)
    params = sample_scenes(3, seed=0)
    params.texture_phase = params.texture_phase.long()
    with pytest.raises(TypeError, match=r"params\.texture_phase"):
        toyworld_render(params, 8)
