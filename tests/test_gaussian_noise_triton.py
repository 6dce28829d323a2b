"""The Triton gaussian_noise kernel under TRITON_INTERPRET=1 against the reference (small sizes)."""

from __future__ import annotations

import pytest
import torch

from fastclip.ops import gaussian_noise
from fastclip.ops.gaussian_noise import standard_normal

pytestmark = pytest.mark.triton_interpret


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 1, 7), (3, 1, 37, 29), (1, 3, 20, 20)])
def test_kernel_draws_the_reference_noise(shape):
    images = torch.full(shape, 0.5)
    ids = torch.arange(shape[0]) * 1000 + 17
    fused = gaussian_noise(images, 1e-3, seed=2**40 + 3, sample_ids=ids, backend="triton")
    z = standard_normal(2**40 + 3, ids, images[0].numel()).view(shape)
    # Same Philox integers; log/sin/cos may differ by an ulp between numpy and torch.
    torch.testing.assert_close((fused - 0.5) / 1e-3, z, atol=2e-4, rtol=0)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.float16])
def test_sweep_matches_reference(dtype):
    images = torch.randint(0, 256, (3, 3, 11, 13), dtype=torch.uint8)
    if dtype != torch.uint8:
        images = (images.float() / 255).to(dtype)
    kwargs = dict(seed=5, sample_ids=torch.tensor([4, 0, 2**31 - 1]), sweep=True)
    sigmas = [0.0, 0.08, 0.38]
    fused = gaussian_noise(images, sigmas, backend="triton", **kwargs)
    reference = gaussian_noise(images, sigmas, backend="reference", **kwargs)
    assert fused.shape == (3, 3, 3, 11, 13)
    torch.testing.assert_close(fused, reference, atol=1e-6, rtol=0)
    assert torch.equal(fused[0], reference[0])


def test_deterministic_steps_equal_the_reference_exactly_at_zero_sigma():
    images = torch.randint(0, 256, (2, 3, 9, 10), dtype=torch.uint8)
    kwargs = dict(seed=1, quantize=True, mean=[0.48, 0.46, 0.41], std=[0.27, 0.26, 0.28])
    fused = gaussian_noise(images, 0.0, backend="triton", **kwargs)
    assert torch.equal(fused, gaussian_noise(images, 0.0, backend="reference", **kwargs))


def test_quantised_normalised_output_matches_reference():
    images = torch.randint(0, 256, (2, 3, 9, 10), dtype=torch.uint8)
    kwargs = dict(seed=1, quantize=True, mean=[0.48, 0.46, 0.41], std=[0.27, 0.26, 0.28])
    fused = gaussian_noise(images, torch.tensor([0.1, 0.26]), backend="triton", **kwargs)
    reference = gaussian_noise(images, torch.tensor([0.1, 0.26]), backend="reference", **kwargs)
    # A noise value one ulp apart can cross a truncation level: allow one such flip in a thousand.
    assert ((fused - reference).abs() > 1e-6).float().mean() < 1e-3


def test_bfloat16_output_within_one_bf16_ulp():
    images = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    kwargs = dict(seed=2, mean=[0.5, 0.5, 0.5], std=[0.2, 0.3, 0.4])
    fused = gaussian_noise(images, 0.1, out_dtype=torch.bfloat16, backend="triton", **kwargs)
    assert fused.dtype == torch.bfloat16
    reference = gaussian_noise(images, 0.1, backend="reference", **kwargs)
    # The interpreter truncates float32 to bfloat16 where a GPU rounds to nearest: one bf16 ulp either way.
    assert ((fused.float() - reference).abs() <= reference.abs() * 2**-7 + 1e-6).all()


def test_kernel_noise_is_independent_of_batch_split_and_order():
    images = torch.randint(0, 256, (5, 3, 6, 7), dtype=torch.uint8)
    ids = torch.tensor([10, 11, 12, 13, 14])
    whole = gaussian_noise(images, 0.2, seed=3, sample_ids=ids, backend="triton")
    order = torch.tensor([4, 1, 3, 0, 2])
    pieces = (order[:2], order[2:])
    parts = torch.cat([gaussian_noise(images[p], 0.2, seed=3, sample_ids=ids[p], backend="triton") for p in pieces])
    assert torch.equal(parts, whole[order])
    assert not torch.equal(gaussian_noise(images, 0.2, seed=4, sample_ids=ids, backend="triton"), whole)
