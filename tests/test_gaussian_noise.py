"""fastclip.ops.gaussian_noise: statistics, counter-based determinism, the deterministic steps, imagecorruptions."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch

from fastclip.ops import gaussian_noise, gaussian_noise_ref
from fastclip.ops._dispatch import BackendUnavailableError
from fastclip.ops.gaussian_noise import (
    IMAGECORRUPTIONS_SIGMAS,
    images_to_unit_float,
    perturb_ref,
    standard_normal,
)
from fastclip.ops._philox import philox4x32


def _noise_of(images_float: torch.Tensor, sigma: float, **kwargs) -> torch.Tensor:
    """The added noise, recovered from an unclipped perturbation (mid-grey images, small sigma)."""
    return gaussian_noise(images_float, sigma, **kwargs) - images_float


def test_philox_matches_the_published_known_answer():
    # Random123's kat_vectors for philox4x32_10: counter (0,0,0,0) key (0,0) and counter all-ones key all-ones.
    zeros = torch.zeros(1, dtype=torch.int64)
    result = philox4x32(zeros, zeros, zeros, zeros, 0)
    assert [int(v) for v in result] == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]
    ones = torch.full((1,), 0xFFFFFFFF, dtype=torch.int64)
    result = philox4x32(ones, ones, ones, ones, 0xFFFFFFFFFFFFFFFF)
    assert [int(v) for v in result] == [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]


def test_noise_moments_ks_and_sigma_estimate():
    sigma = 0.05
    images = torch.full((8, 3, 128, 128), 0.5)  # 393k draws; 0.5 +- 10 sigma never clips
    noise = _noise_of(images, sigma, seed=11).double().flatten().numpy()
    n = noise.size
    z = noise / sigma
    assert abs(z.mean()) < 5 / np.sqrt(n)
    assert abs(z.var() - 1) < 5 * np.sqrt(2 / n)
    assert abs(scipy.stats.skew(z)) < 5 * np.sqrt(6 / n)
    assert abs(scipy.stats.kurtosis(z)) < 5 * np.sqrt(24 / n)
    assert abs(noise.std() / sigma - 1) < 0.01
    ks = scipy.stats.kstest(noise, "norm", args=(0.0, sigma))
    assert ks.pvalue > 1e-3, ks
    assert ks.statistic < 1.95 / np.sqrt(n)  # the 0.1% critical value


def test_noise_is_uncorrelated_across_samples_lanes_and_seeds():
    z = standard_normal(5, torch.arange(4), 20_000).double()
    assert abs(np.corrcoef(z[0], z[1])[0, 1]) < 0.04
    lanes = z[0].reshape(-1, 4)
    assert np.abs(np.corrcoef(lanes.T.numpy()) - np.eye(4)).max() < 0.06
    other_seed = standard_normal(6, torch.arange(4), 20_000).double()
    assert abs(np.corrcoef(z[0], other_seed[0])[0, 1]) < 0.04


def test_same_seed_and_ids_give_identical_bits_across_batch_splits_and_orders():
    images = torch.randint(0, 256, (7, 3, 9, 11), dtype=torch.uint8)
    ids = torch.tensor([3, 14, 15, 92, 65, 35, 89])
    whole = gaussian_noise(images, 0.2, seed=42, sample_ids=ids)
    order = torch.tensor([5, 0, 6, 2, 1, 4, 3])
    pieces = [order[:1], order[1:4], order[4:]]
    parts = torch.cat([gaussian_noise(images[p], 0.2, seed=42, sample_ids=ids[p]) for p in pieces])
    assert torch.equal(parts, whole[order])
    assert torch.equal(gaussian_noise(images, 0.2, seed=42, sample_ids=ids), whole)
    assert not torch.equal(gaussian_noise(images, 0.2, seed=43, sample_ids=ids), whole)
    assert not torch.equal(gaussian_noise(images, 0.2, seed=42, sample_ids=ids + 1), whole)


def test_default_sample_ids_are_positions():
    images = torch.rand(4, 1, 5, 5)
    explicit = gaussian_noise(images, 0.1, seed=0, sample_ids=torch.arange(4))
    assert torch.equal(gaussian_noise(images, 0.1, seed=0), explicit)


def test_sweep_uses_common_random_numbers_and_matches_single_calls():
    images = torch.full((3, 2, 6, 5), 0.5)
    sigmas = [0.0, 0.01, 0.02, 0.04]
    swept = gaussian_noise(images, sigmas, seed=9, sweep=True)
    assert swept.shape == (4, 3, 2, 6, 5)
    for k, sigma in enumerate(sigmas):
        assert torch.equal(swept[k], gaussian_noise(images, sigma, seed=9))
    z = standard_normal(9, torch.arange(3), images[0].numel()).view_as(images)
    for k, sigma in enumerate(sigmas):
        # The only error is rounding 0.5 + sigma*z to float32 (half an ulp of numbers in [0.5, 1)).
        torch.testing.assert_close(swept[k] - images, sigma * z, atol=1.5e-7, rtol=0)


def test_per_image_sigma():
    images = torch.full((3, 1, 40, 40), 0.5)
    sigma = torch.tensor([0.0, 0.01, 0.03])
    noise = gaussian_noise(images, sigma, seed=1) - images
    assert torch.equal(noise[0], torch.zeros_like(noise[0]))
    for i in (1, 2):
        alone = gaussian_noise(images[i : i + 1], float(sigma[i]), seed=1, sample_ids=torch.tensor([i]))[0]
        assert torch.equal(noise[i] + images[i], alone)
    assert abs(noise[2].std() / noise[1].std() - 3) < 0.3


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 1, 5), (3, 3, 127, 1), (1, 3, 13, 129)])
def test_zero_sigma_is_the_identity_on_uint8_and_float(shape):
    images = torch.randint(0, 256, shape, dtype=torch.uint8)
    out = gaussian_noise(images, 0.0, seed=0)
    assert torch.equal(out, images.float() / 255)
    assert torch.equal(gaussian_noise(images, 0.0, seed=0, quantize=True), images.float() / 255)
    floats = torch.rand(shape)
    assert torch.equal(gaussian_noise(floats, 0.0, seed=0), floats)


def test_deterministic_steps_given_the_noise_equal_the_formula():
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 7, 8, generator=generator)
    z = torch.randn(2, 3, 7, 8, generator=generator) * 3
    sigma = torch.tensor([[0.0, 0.1], [0.3, 0.3]])
    mean, std = torch.tensor([0.48, 0.46, 0.41]), torch.tensor([0.27, 0.26, 0.28])
    out = perturb_ref(x, z, sigma, quantize=True, mean=mean, std=std)
    for k in range(2):
        for n in range(2):
            expected = (x[n] + sigma[k, n] * z[n]).clamp(0, 1)
            expected = torch.floor(expected * 255) / 255
            expected = (expected - mean[:, None, None]) / std[:, None, None]
            assert torch.equal(out[k, n], expected)
    images = (x * 255).to(torch.uint8)
    normalised = gaussian_noise(images, 0.0, seed=3, quantize=True, mean=mean, std=std)
    assert torch.equal(normalised, (images.float() / 255 - mean[:, None, None]) / std[:, None, None])


def test_bfloat16_output_is_the_rounded_float32_result():
    images = torch.randint(0, 256, (2, 3, 10, 10), dtype=torch.uint8)
    kwargs = dict(seed=4, quantize=True, mean=[0.5, 0.5, 0.5], std=[0.2, 0.3, 0.4])
    full = gaussian_noise(images, 0.1, **kwargs)
    half = gaussian_noise(images, 0.1, out_dtype=torch.bfloat16, **kwargs)
    assert half.dtype == torch.bfloat16
    assert torch.equal(half, full.to(torch.bfloat16))


def _imagecorruptions_gaussian_noise(x_uint8: np.ndarray, c: float, noise: np.ndarray) -> np.ndarray:
    # bethgelab/imagecorruptions corruptions.py gaussian_noise with its np.random.normal(scale=c) draw replaced by
    # c * noise, followed by corrupt()'s np.uint8(...) cast (truncation).
    x = np.array(x_uint8) / 255.0
    return np.uint8(np.clip(x + c * noise, 0, 1) * 255)


@pytest.mark.parametrize("severity", IMAGECORRUPTIONS_SIGMAS)
def test_quantisation_matches_imagecorruptions_on_fixed_noise(severity):
    assert severity in (0.08, 0.12, 0.18, 0.26, 0.38)
    images = torch.randint(0, 256, (2, 3, 40, 40), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    x = images_to_unit_float(images)
    z = standard_normal(8, torch.arange(2), x[0].numel()).view_as(x)
    ours = perturb_ref(x, z, torch.full((1, 2), severity), quantize=True)[0]
    ours_levels = torch.round(ours * 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    channels_last = (0, 2, 3, 1)  # imagecorruptions works on HWC arrays
    theirs = _imagecorruptions_gaussian_noise(
        images.permute(channels_last).numpy(), severity, z.permute(channels_last).double().numpy()
    )
    # float32 against float64 arithmetic may disagree only where x + c*z lies within float32 rounding of a level.
    differs = ours_levels != theirs
    assert np.abs(ours_levels.astype(int) - theirs.astype(int)).max() <= 1
    assert differs.mean() < 1e-3
    exact_sum = images.double() / 255 + severity * z.double()
    distance_to_level = np.abs(exact_sum.numpy() * 255 - np.round(exact_sum.numpy() * 255)).transpose(0, 2, 3, 1)
    assert (distance_to_level[differs] < 1e-4).all()


def test_quantisation_truncates_rather_than_rounds():
    x = torch.tensor([10.9 / 255, 0.5 / 255, 254.99 / 255, 1.2, -0.3]).reshape(1, 1, 1, 5)
    out = perturb_ref(x, torch.zeros_like(x), torch.zeros(1, 1), quantize=True)[0]
    assert torch.equal(torch.round(out * 255).flatten(), torch.tensor([10.0, 0.0, 254.0, 255.0, 0.0]))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(sigma=-0.1), "sigma must be finite and >= 0"),
        (dict(sigma=torch.tensor([0.1, 0.2])), "one value per image"),
        (dict(sigma=[0.1, 0.2], sweep=False), "one value per image"),
        (dict(sigma=0.1, sweep=True), "sweep=True"),
        (dict(sigma="loud"), "sigma must be"),
        (dict(sigma=0.1, seed=-1), "seed"),
        (dict(sigma=0.1, sample_ids=torch.tensor([0, 1, 2])), "sample_ids must have shape"),
        (dict(sigma=0.1, sample_ids=torch.tensor([0, 2**31, 1, 2])), "sample_ids must lie"),
        (dict(sigma=0.1, mean=[0.5, 0.5, 0.5]), "both mean and std"),
        (dict(sigma=0.1, mean=[0.5], std=[0.2]), "one value per channel"),
        (dict(sigma=0.1, mean=[0.5] * 3, std=[0.2, 0.0, 0.2]), "std must be positive"),
        (dict(sigma=0.1, out_dtype=torch.float16), "out_dtype"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, message):
    kwargs = {"seed": 0, **kwargs}
    with pytest.raises((ValueError, TypeError), match=message):
        gaussian_noise(torch.zeros(4, 3, 2, 2), **kwargs)


def test_bad_images_are_rejected():
    with pytest.raises(ValueError, match="images must be"):
        gaussian_noise(torch.zeros(3, 2, 2), 0.1, seed=0)
    with pytest.raises(TypeError, match="images must be uint8"):
        gaussian_noise(torch.zeros(1, 3, 2, 2, dtype=torch.int32), 0.1, seed=0)


def test_extension_matches_the_reference_on_float64_images():
    from fastclip import _ext

    reason = _ext.kernel_unavailable("gaussian_noise", "cpu")
    if reason is not None:
        pytest.skip(f"needs the C++ extension: {reason}")
    images = torch.rand(2, 3, 5, 5, dtype=torch.float64)
    expected = gaussian_noise_ref(images, [0.1, 0.2], seed=7, sweep=True)
    assert expected.dtype == torch.float32
    assert torch.equal(gaussian_noise(images, [0.1, 0.2], seed=7, sweep=True, backend="extension"), expected)


def test_triton_backend_on_cpu_says_how_to_enable_it(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(BackendUnavailableError, match="TRITON_INTERPRET=1"):
        gaussian_noise(torch.zeros(1, 3, 2, 2), 0.1, seed=0, backend="triton")


@pytest.mark.needs_cuda
@pytest.mark.parametrize("out_dtype", [torch.float32, torch.bfloat16])
def test_triton_matches_reference_on_cuda(out_dtype):
    images = torch.randint(0, 256, (5, 3, 33, 31), dtype=torch.uint8, device="cuda")
    ids = torch.tensor([9, 2, 7, 0, 123456], device="cuda")
    kwargs = dict(seed=77, sample_ids=ids, sweep=True, out_dtype=out_dtype)
    fused = gaussian_noise(images, [0.0, 0.08, 0.38], backend="triton", **kwargs).float()
    reference = gaussian_noise(images, [0.0, 0.08, 0.38], backend="reference", **kwargs).float()
    tolerance = 1e-5 if out_dtype == torch.float32 else 2**-8
    torch.testing.assert_close(fused, reference, atol=tolerance, rtol=tolerance)
    quantised = dict(seed=77, sample_ids=ids, quantize=True, mean=[0.48, 0.46, 0.41], std=[0.27, 0.26, 0.28])
    fused = gaussian_noise(images, 0.1, backend="triton", **quantised)
    reference = gaussian_noise(images, 0.1, backend="reference", **quantised)
    # x + sigma*z may round differently (fused multiply-add) and flip a truncation at a level boundary.
    assert ((fused - reference).abs() > 1e-5).float().mean() < 1e-3
