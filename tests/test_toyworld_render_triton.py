"""The Triton toy-world renderer against toyworld_render_ref: a grid of parameters and the edge cases.

Interpreter tests (TRITON_INTERPRET=1) cover every silhouette and texture, rotation 0 and pi, silhouettes that cross
the border, the smallest scales and odd image sizes; the CUDA test repeats the check at 64 and 224 px.
"""

from __future__ import annotations

import math

import pytest
import torch

from fastclip.data.toyworld import KINDS, SCALE_RANGE, sample_scenes
from fastclip.ops.toyworld_render import NUM_CATEGORIES, SceneParams, toyworld_render, toyworld_render_ref

# Float rounding only: the kernel evaluates the reference's closed form per pixel (atan2 by polynomial, |f - c|
# directly); 1e-4 of the [0,1] range is far below one 8-bit level.
ATOL = 1e-4


def scenes(shape_id, texture_id, *, center=(0.0, 0.0), scale=0.6, rotation=0.0, seed=0) -> SceneParams:
    """Scenes for the given ids (broadcast against each other), colours and phases drawn from `seed`."""
    shape_id, texture_id = torch.broadcast_tensors(torch.as_tensor(shape_id), torch.as_tensor(texture_id))
    n = shape_id.numel()
    generator = torch.Generator().manual_seed(seed)

    def column(value, trailing=()):
        return torch.as_tensor(value, dtype=torch.float32).expand(n, *trailing).clone()

    return SceneParams(
        shape_id=shape_id.reshape(-1).long(),
        texture_id=texture_id.reshape(-1).long(),
        center=column(center, (2,)),
        scale=column(scale),
        rotation=column(rotation),
        texture_colors=torch.rand(n, 2, 3, generator=generator),
        background_color=torch.rand(n, 3, generator=generator),
        texture_phase=torch.rand(n, 2, generator=generator),
        background_seed=torch.randint(0, 2**62, (n,), generator=generator),
    )


def assert_parity(params: SceneParams, image_size: int) -> None:
    fused = toyworld_render(params, image_size, backend="triton")
    reference = toyworld_render_ref(params, image_size)
    assert fused.shape == reference.shape == (len(params), 3, image_size, image_size)
    torch.testing.assert_close(fused, reference, atol=ATOL, rtol=0)


ALL_IDS = torch.arange(-1, NUM_CATEGORIES)


@pytest.mark.triton_interpret
@pytest.mark.parametrize("rotation", [0.0, math.pi])
def test_every_silhouette_and_texture_at_rotation_0_and_pi(rotation):
    # shape k with texture (k + 5) mod 17 - 1: every shape and every texture (and -1 for both) once per rotation
    assert_parity(scenes(ALL_IDS, (ALL_IDS + 6) % 17 - 1, rotation=rotation, scale=0.7), 16)


@pytest.mark.triton_interpret
@pytest.mark.parametrize("center", [(0.95, 0.0), (-1.0, -1.0), (0.3, 0.99)])
def test_silhouettes_crossing_the_border(center):
    assert_parity(scenes(torch.arange(0, NUM_CATEGORIES, 3), 4, center=center, scale=0.8, rotation=0.4), 16)


@pytest.mark.triton_interpret
@pytest.mark.parametrize("scale", [0.02, 0.1])
def test_subpixel_silhouettes(scale):
    assert_parity(scenes(torch.arange(NUM_CATEGORIES), 10, center=(0.13, -0.21), scale=scale, rotation=2.0), 16)


@pytest.mark.triton_interpret
@pytest.mark.parametrize("kind", KINDS)
def test_the_worlds_own_scenes_and_its_smallest_scale(kind):
    params = sample_scenes(4, seed=3, kind=kind)
    assert_parity(params, 16)
    params.scale = torch.full_like(params.scale, SCALE_RANGE[0])
    assert_parity(params, 16)


@pytest.mark.triton_interpret
@pytest.mark.parametrize("image_size", [1, 5, 17, 33])
def test_odd_image_sizes_and_random_poses(image_size):
    generator = torch.Generator().manual_seed(image_size)
    n = 6
    params = scenes(
        torch.randint(-1, NUM_CATEGORIES, (n,), generator=generator),
        torch.randint(-1, NUM_CATEGORIES, (n,), generator=generator),
        seed=image_size,
    )
    params.center = torch.rand(n, 2, generator=generator) * 2 - 1
    params.scale = 0.2 + torch.rand(n, generator=generator)
    params.rotation = (torch.rand(n, generator=generator) - 0.5) * 4 * math.pi
    assert_parity(params, image_size)


@pytest.mark.triton_interpret
def test_extreme_seeds_and_empty_batch():
    params = scenes(torch.tensor([3, -1]), torch.tensor([-1, 7]))
    params.background_seed = torch.tensor([0, 2**63 - 1])
    assert_parity(params, 8)
    assert toyworld_render(params[0:0], 8, backend="triton").shape == (0, 3, 8, 8)


@pytest.mark.needs_cuda
@pytest.mark.parametrize("image_size", [64, 224])
def test_kernel_matches_reference_on_cuda(image_size):
    generator = torch.Generator().manual_seed(1)
    n = 64
    params = scenes(
        torch.randint(-1, NUM_CATEGORIES, (n,), generator=generator),
        torch.randint(-1, NUM_CATEGORIES, (n,), generator=generator),
    )
    params.center = torch.rand(n, 2, generator=generator) * 2 - 1
    params.scale = 0.05 + torch.rand(n, generator=generator)
    params.rotation = (torch.rand(n, generator=generator) - 0.5) * 4 * math.pi
    params = params.to("cuda")
    fused = toyworld_render(params, image_size)  # auto picks Triton on CUDA
    reference = toyworld_render_ref(params, image_size)
    # GPU transcendental functions round differently from the CPU's; an 8-bit level is 4e-3.
    assert (fused - reference).abs().max() < 1e-3
    assert (fused - reference).abs().mean() < 1e-5
