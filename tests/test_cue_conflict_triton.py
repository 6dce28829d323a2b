"""The Triton cue_conflict kernel under TRITON_INTERPRET=1 against the reference (small sizes)."""

from __future__ import annotations

import pytest
import torch

from fastclip.ops import cue_conflict

pytestmark = pytest.mark.triton_interpret


@pytest.mark.parametrize(
    "size, texture_size, texture_fit",
    [((1, 1), (1, 1), "tile"), ((19, 23), (5, 7), "tile"), ((33, 40), (50, 45), "tile"), ((32, 32), (9, 13), "resize")],
)
def test_kernel_matches_reference(size, texture_size, texture_fit):
    generator = torch.Generator().manual_seed(0)
    masks = torch.rand(3, *size, generator=generator)
    masks[0] = (masks[0] > 0.5).float()  # one binary mask among the soft ones
    textures = torch.randint(0, 256, (4, 3, *texture_size), dtype=torch.uint8, generator=generator)
    pairs = torch.tensor([[0, 3], [2, 0], [1, 1], [2, 3], [0, 0]])
    background = torch.rand(5, 3, generator=generator)
    kwargs = dict(background=background, texture_fit=texture_fit)
    fused = cue_conflict(masks, textures, pairs, backend="triton", **kwargs)
    assert torch.equal(fused, cue_conflict(masks, textures, pairs, backend="reference", **kwargs))
    fused8 = cue_conflict(masks, textures, pairs, out_dtype=torch.uint8, backend="triton", **kwargs)
    reference8 = cue_conflict(masks, textures, pairs, out_dtype=torch.uint8, backend="reference", **kwargs)
    assert torch.equal(fused8, reference8)


def test_kernel_with_default_pairs_feather_and_resize_to_a_new_size():
    masks = (torch.rand(2, 40, 40) > 0.5).float()
    textures = torch.rand(3, 3, 8, 8)
    kwargs = dict(size=(21, 17), feather=0.8, background=0.25)
    fused = cue_conflict(masks, textures, backend="triton", **kwargs)
    assert fused.shape == (6, 3, 21, 17)
    assert torch.equal(fused, cue_conflict(masks, textures, backend="reference", **kwargs))


def test_bfloat16_within_one_bf16_ulp():
    masks, textures = torch.rand(2, 9, 9), torch.rand(2, 3, 9, 9)
    fused = cue_conflict(masks, textures, out_dtype=torch.bfloat16, backend="triton").float()
    reference = cue_conflict(masks, textures, backend="reference")
    # The interpreter truncates float32 to bfloat16 where a GPU rounds to nearest.
    assert ((fused - reference).abs() <= reference.abs() * 2**-7 + 1e-6).all()
