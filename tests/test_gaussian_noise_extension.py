"""The C++ CPU kernel of gaussian_noise against the reference: bit for bit, on every input kind and option."""

from __future__ import annotations

import pytest
import torch

from fastclip import _ext
from fastclip.ops import _philox, gaussian_noise, gaussian_noise_ref
from fastclip.ops.gaussian_noise import _DISPATCH
from tests.helpers import run_python

pytestmark = pytest.mark.skipif(
    _ext.kernel_unavailable("gaussian_noise", "cpu") is not None,
    reason=f"extension has no cpu kernel: {_ext.kernel_unavailable('gaussian_noise', 'cpu')}",
)

MEAN, STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]  # CLIP's
SIGMAS = [0.0, 0.08, 0.38]
# (2, 3, 61, 67): 12261 elements per image, so a block boundary (8192 elements) falls inside a channel and the last
# Philox group of each image is partial; (3, 5, 7, 9): 315 elements, one partial block and group.
SHAPES = [(1, 1, 1, 1), (3, 5, 7, 9), (2, 3, 61, 67)]


def _images(shape, dtype, seed=0):
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)
    return images if dtype == torch.uint8 else (images.float() / 255).to(dtype)


def _both(images, sigma, **kwargs):
    fast = gaussian_noise(images, sigma, backend="extension", **kwargs)
    reference = gaussian_noise(images, sigma, backend="reference", **kwargs)
    return fast, reference


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize(
    "dtype", [torch.uint8, torch.float32, torch.float16, torch.bfloat16, torch.float64], ids=lambda d: str(d)[6:]
)
def test_sweep_is_bit_identical_to_the_reference(shape, dtype):
    ids = torch.tensor([2**31 - 1, 0, 123456])[: shape[0]]
    fast, reference = _both(_images(shape, dtype), SIGMAS, seed=2**40 + 3, sample_ids=ids, sweep=True)
    assert fast.shape == (len(SIGMAS), *shape) and fast.dtype == torch.float32
    assert torch.equal(fast, reference)


@pytest.mark.parametrize("out_dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("normalize", [False, True], ids=["raw", "normalised"])
@pytest.mark.parametrize("quantize", [False, True], ids=["float", "quantised"])
def test_options_are_bit_identical_to_the_reference(quantize, normalize, out_dtype):
    images = _images((3, 3, 17, 19), torch.uint8, seed=1)
    normalisation = dict(mean=MEAN, std=STD) if normalize else {}
    sigma = torch.tensor([0.26, 0.0, 0.12])  # one per image, one of them zero
    kwargs = dict(seed=7, quantize=quantize, out_dtype=out_dtype, **normalisation)
    fast, reference = _both(images, sigma, **kwargs)
    assert fast.dtype == out_dtype and fast.shape == images.shape
    assert torch.equal(fast, reference)
    fast, reference = _both(images, [0.04, 0.08, 0.12, 0.18, 0.26, 0.38], sweep=True, **kwargs)
    assert torch.equal(fast, reference)


def test_zero_sigma_gives_the_clean_images_exactly():
    images = _images((2, 3, 10, 13), torch.uint8, seed=2)
    clean = images.float() / 255
    assert torch.equal(gaussian_noise(images, 0.0, seed=1, backend="extension"), clean)
    assert torch.equal(gaussian_noise(images, 0.0, seed=1, quantize=True, backend="extension"), clean)
    normalised = gaussian_noise(images, 0.0, seed=1, quantize=True, mean=MEAN, std=STD, backend="extension")
    assert torch.equal(normalised, (clean - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None])
    floats = torch.rand(2, 3, 10, 13)
    assert torch.equal(gaussian_noise(floats, 0.0, seed=1, backend="extension"), floats)


def test_sweep_reuses_the_same_noise_for_every_sigma():
    images = _images((3, 3, 9, 11), torch.uint8, seed=3)
    sigmas = [0.05, 0.2, 0.0]
    swept = gaussian_noise(images, sigmas, seed=9, sweep=True, backend="extension")
    for k, sigma in enumerate(sigmas):
        assert torch.equal(swept[k], gaussian_noise(images, sigma, seed=9, backend="extension"))


def test_noise_is_keyed_by_sample_id_not_by_batch_position_or_split():
    images = _images((7, 3, 9, 11), torch.uint8, seed=4)
    ids = torch.tensor([3, 14, 15, 92, 65, 35, 2**31 - 2])
    whole = gaussian_noise(images, 0.2, seed=42, sample_ids=ids, backend="extension")
    order = torch.tensor([5, 0, 6, 2, 1, 4, 3])
    pieces = [order[:1], order[1:4], order[4:]]
    parts = [gaussian_noise(images[p], 0.2, seed=42, sample_ids=ids[p], backend="extension") for p in pieces]
    assert torch.equal(torch.cat(parts), whole[order])
    assert not torch.equal(gaussian_noise(images, 0.2, seed=43, sample_ids=ids, backend="extension"), whole)
    assert not torch.equal(gaussian_noise(images, 0.2, seed=42, sample_ids=ids + 1, backend="extension"), whole)


def test_result_does_not_depend_on_the_number_of_threads():
    images = _images((5, 3, 40, 41), torch.uint8, seed=5)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        serial = gaussian_noise(images, [0.1, 0.3], seed=5, sweep=True, backend="extension")
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(gaussian_noise(images, [0.1, 0.3], seed=5, sweep=True, backend="extension"), serial)


def test_philox_words_in_the_noise_layout_match_the_reference():
    # The kernel draws group g of sample s with philox4x32_batch(counter (g, s, 0, 0)), the same call
    # fastclip::philox_uint32 makes for stream 0, a = 0, b = s; its words must be the reference's integers.
    seed, ids, groups = 2**62 + 11, torch.tensor([0, 1, 2**31 - 1]), 37
    words = _philox.random_uint32(seed, 0, torch.tensor([0]), ids, 4 * groups, backend="extension")[0]
    c0 = torch.arange(groups).expand(len(ids), -1)
    c1 = ids[:, None].expand_as(c0)
    zero = torch.zeros_like(c0)
    expected = torch.stack(_philox.philox4x32(c0, c1, zero, zero, seed), dim=-1).reshape(len(ids), -1)
    assert torch.equal(words, expected)


def test_nan_pixels_stay_nan_as_in_the_reference():
    images = torch.rand(1, 3, 4, 5)
    images[0, 1, 2, 3] = float("nan")
    for kwargs in (dict(), dict(quantize=True, mean=MEAN, std=STD), dict(out_dtype=torch.bfloat16)):
        fast, reference = _both(images, 0.1, seed=0, **kwargs)
        torch.testing.assert_close(fast, reference, rtol=0, atol=0, equal_nan=True)
        assert torch.isnan(fast[0, 1, 2, 3])


def test_auto_picks_the_extension_on_cpu_and_the_argument_still_wins(monkeypatch):
    monkeypatch.delenv("FASTCLIP_BACKEND", raising=False)
    assert _DISPATCH.choose("cpu").name == "extension"
    assert _DISPATCH.choose("cpu", backend="reference").name == "reference"
    monkeypatch.setenv("FASTCLIP_BACKEND", "reference")
    assert _DISPATCH.choose("cpu").name == "reference"


def test_empty_batch_gives_an_empty_result():
    empty = torch.zeros(0, 3, 4, 4, dtype=torch.uint8)
    out = gaussian_noise(empty, [0.1, 0.2], seed=0, sweep=True, backend="extension")
    assert out.shape == (2, 0, 3, 4, 4)
    assert torch.equal(out, gaussian_noise_ref(empty, [0.1, 0.2], seed=0, sweep=True))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(sigma=-0.1), "sigma must be finite and >= 0"),
        (dict(sigma=torch.tensor([0.1, 0.2])), "one value per image"),
        (dict(sigma=0.1, seed=2**63), "seed"),
        (dict(sigma=0.1, sample_ids=torch.tensor([0, 2**31, 1, 2])), "sample_ids must lie"),
        (dict(sigma=0.1, mean=MEAN), "both mean and std"),
        (dict(sigma=0.1, mean=MEAN, std=[0.2, 0.0, 0.2]), "std must be positive"),
        (dict(sigma=0.1, out_dtype=torch.float16), "out_dtype"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        gaussian_noise(torch.zeros(4, 3, 2, 2), backend="extension", **{"seed": 0, **kwargs})


def _raw_op_arguments():
    return dict(
        images=torch.zeros(2, 3, 4, 4, dtype=torch.uint8), sigma_table=torch.full((1, 2), 0.1), seed=0,
        sample_ids=torch.arange(2), quantize=False, mean=None, std=None, out_dtype=torch.float32,
    )  # fmt: skip


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(images=torch.zeros(2, 3, 4, 4, dtype=torch.int32)), "images must be uint8, float32"),
        (dict(images=torch.zeros(2, 3, 4)), r"images must be \(N,C,H,W\)"),
        (dict(sigma_table=torch.full((1, 3), 0.1)), r"sigma_table must be a float32 CPU tensor of shape \(K, 2\)"),
        (dict(sample_ids=torch.tensor([0, 2**31])), r"sample_ids must lie in \[0, 2\^31\)"),
        (dict(sample_ids=torch.arange(2, dtype=torch.int32)), "sample_ids must be an int64"),
        (dict(seed=-1), "seed must be in"),
        (dict(mean=torch.zeros(3)), "both mean and std"),
        (dict(mean=torch.zeros(2), std=torch.ones(2)), r"mean must be a float32 CPU tensor of shape \(3,\)"),
        (dict(out_dtype=torch.float16), "out_dtype must be float32 or bfloat16"),
    ],
)
def test_the_kernel_checks_its_own_arguments(change, message):
    # The kernel is reachable as torch.ops.fastclip.gaussian_noise without the Python validation.
    arguments = {**_raw_op_arguments(), **change}
    with pytest.raises(RuntimeError, match=message):
        _ext.op("gaussian_noise")(*arguments.values())


def test_without_the_extension_auto_falls_back_to_the_reference():
    code = """
import sys
sys.modules["fastclip._C"] = None
import torch
from fastclip.ops import gaussian_noise
from fastclip.ops.gaussian_noise import _DISPATCH
print(_DISPATCH.choose("cpu").name, gaussian_noise(torch.full((1, 1, 2, 2), 0.5), 0.0, seed=0).flatten().tolist())
try:
    gaussian_noise(torch.zeros(1, 1, 2, 2), 0.1, seed=0, backend="extension")
except RuntimeError as exc:
    print("ERROR:", exc)
"""
    result = run_python(["-c", code])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "reference [0.5, 0.5, 0.5, 0.5]"
    assert "did not load" in lines[1] and "pip install --no-build-isolation" in lines[1]
