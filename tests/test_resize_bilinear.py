"""fastclip.ops.resize_bilinear against torch's interpolate (bilinear, align_corners=False), its reference."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch

from fastclip import _ext
from fastclip.ops import resize_bilinear, resize_bilinear_ref

needs_extension = pytest.mark.skipif(
    _ext.kernel_unavailable("resize_bilinear_into", "cpu") is not None, reason="the compiled extension is not built"
)


@needs_extension
@pytest.mark.parametrize(
    "shape, size",
    [((3, 7, 7), (768, 1024)), ((2, 24, 20), (37, 50)), ((2, 61, 33), (37, 50)), ((1, 1, 1), (5, 3)),
     ((2, 1, 9), (4, 9)), ((4, 5, 6), (5, 6 * 3 + 1)), ((2, 40, 40), (7, 7))],
)  # fmt: skip
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_extension_matches_torch_interpolate(shape, size, dtype):
    maps = torch.rand(shape, generator=torch.Generator().manual_seed(sum(shape)), dtype=torch.float64).to(dtype)
    fast = resize_bilinear(maps, size, backend="extension")
    expected = resize_bilinear_ref(maps, size)
    assert fast.dtype == torch.float64 and fast.shape == (shape[0], *size)
    # torch's kernel rounds its x weights less exactly (up to ~14 ulp of values in [0, 1]; see the exact test).
    torch.testing.assert_close(fast, expected, rtol=0, atol=4e-15)


@needs_extension
def test_extension_is_within_two_ulp_of_the_exact_interpolation():
    """Exact rational arithmetic on torch's source positions and weights (in float64, as both compute them)."""
    maps = torch.rand(2, 24, 20, generator=torch.Generator().manual_seed(46), dtype=torch.float64)
    size = (37, 50)
    fast = resize_bilinear(maps, size, backend="extension")

    def taps(n_in, n_out, o):
        source = max((n_in / n_out) * (o + 0.5) - 0.5, 0.0)
        first = min(math.floor(source), n_in - 1)
        weight = min(max(source - first, 0.0), 1.0)
        return first, first + (first < n_in - 1), Fraction(1.0 - weight), Fraction(weight)

    worst = 0.0
    for y in range(size[0]):
        y0, y1, wy0, wy1 = taps(24, size[0], y)
        for x in range(size[1]):
            x0, x1, wx0, wx1 = taps(20, size[1], x)
            for image in range(2):
                m = lambda r, c: Fraction(maps[image, r, c].item())  # noqa: E731
                exact = (m(y0, x0) * wx0 + m(y0, x1) * wx1) * wy0 + (m(y1, x0) * wx0 + m(y1, x1) * wx1) * wy1
                worst = max(worst, abs(float(Fraction(fast[image, y, x].item()) - exact)))
    assert worst <= 2 * 2.0**-53  # values in [0, 1): two ulp


@needs_extension
def test_non_contiguous_and_integer_maps():
    maps = torch.rand(6, 9, 2, 5, generator=torch.Generator().manual_seed(1))[:, :, 0].transpose(1, 2)
    torch.testing.assert_close(resize_bilinear(maps, (11, 13)), resize_bilinear_ref(maps, (11, 13)), rtol=0, atol=4e-15)
    counts = torch.randint(0, 255, (2, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(resize_bilinear(counts, (9, 9)), resize_bilinear_ref(counts, (9, 9)), rtol=0, atol=1e-12)


def test_same_size_is_only_made_float64():
    maps = torch.rand(2, 3, 4)
    out = resize_bilinear(maps, (3, 4))
    assert out.dtype == torch.float64 and torch.equal(out, maps.double())
    assert resize_bilinear(torch.rand(0, 3, 4), (6, 8)).shape == (0, 6, 8)


@pytest.mark.parametrize(
    "maps, size, error, message",
    [(torch.rand(3, 4), (5, 5), ValueError, r"\(B, h, w\)"), (torch.rand(1, 3, 4), (0, 5), ValueError, "positive"),
     (torch.rand(1, 0, 4), (2, 2), ValueError, "empty"), (torch.ones(1, 2, 2, dtype=torch.bool), (3, 3), TypeError, "real"),
     (torch.rand(1, 2, 2), (3, 3), ValueError, "backend")],
)  # fmt: skip
def test_bad_input_is_named(maps, size, error, message):
    kwargs = {"backend": "nearest"} if message == "backend" else {}
    with pytest.raises(error, match=message):
        resize_bilinear(maps, size, **kwargs)


@pytest.mark.needs_cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_uses_torch_and_matches_the_cpu_extension():
    maps = torch.rand(3, 7, 7, dtype=torch.float64)
    torch.testing.assert_close(resize_bilinear(maps.cuda(), (96, 128)).cpu(), resize_bilinear(maps, (96, 128)), rtol=0, atol=4e-15)


@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_out_buffer_is_written_and_checked(backend):
    maps = torch.rand(2, 3, 4, dtype=torch.float64)
    out = torch.full((2, 6, 8), float("nan"), dtype=torch.float64)
    result = resize_bilinear(maps, (6, 8), out=out, backend=backend)
    assert result.data_ptr() == out.data_ptr()
    torch.testing.assert_close(out, resize_bilinear_ref(maps, (6, 8)), rtol=0, atol=4e-15)
    with pytest.raises(ValueError, match="out must be a contiguous float64 tensor of shape"):
        resize_bilinear(maps, (6, 8), out=torch.empty(2, 6, 8), backend=backend)
