"""The check that no test compares a backend with itself (tests/backend_comparisons.py, run on every test by the
hook in tests/conftest.py): it finds the three self-comparisons issue 13 found, and lets real comparisons and
invariance tests through."""

from __future__ import annotations

import pytest

from tests.backend_comparisons import find_self_comparisons

# The three tests as they were before issue 13 (tests/test_toyworld.py, test_gaussian_noise.py, test_cue_conflict.py).
OLD_TOYWORLD = '''
def test_images_are_float32_rgb_in_unit_range(image_size):
    params = sample_scenes(32, seed=1)
    images = toyworld_render(params, image_size)
    assert images.min() >= 0 and images.max() <= 1
    assert torch.equal(images, toyworld_render_ref(params, image_size))
    assert torch.equal(images, toyworld_render(params, image_size, backend="reference"))
'''
OLD_GAUSSIAN_NOISE = '''
def test_reference_and_dispatcher_agree_on_cpu():
    images = torch.rand(2, 3, 5, 5, dtype=torch.float64)
    expected = gaussian_noise_ref(images, [0.1, 0.2], seed=7, sweep=True)
    assert expected.dtype == torch.float32
    assert torch.equal(gaussian_noise(images, [0.1, 0.2], seed=7, sweep=True, backend="reference"), expected)
'''
OLD_CUE_CONFLICT = '''
def test_uint8_and_bfloat16_outputs_round_the_float_result():
    masks, textures = torch.rand(2, 9, 9), torch.rand(2, 3, 9, 9)
    full = cue_conflict(masks, textures, background=0.5)
    rounded = torch.floor(full * 255 + 0.5).to(torch.uint8)
    assert torch.equal(cue_conflict(masks, textures, background=0.5, out_dtype=torch.uint8), rounded)
    assert torch.equal(cue_conflict_ref(masks, textures, background=0.5), full)
'''


@pytest.mark.parametrize(
    "source, op, count",
    [(OLD_TOYWORLD, "toyworld_render", 2), (OLD_GAUSSIAN_NOISE, "gaussian_noise", 1), (OLD_CUE_CONFLICT, "cue_conflict", 1)],
)
def test_finds_the_three_old_self_comparisons(source, op, count):
    found = find_self_comparisons(source, device="cpu")
    assert [f.op for f in found] == [op] * count
    assert all(f.backend == "reference" for f in found)


def test_real_comparisons_and_invariance_tests_pass():
    source = '''
def test_sample():
    a = saliency_metrics(pred, fixation_map=g)               # auto: the extension on the CPU
    b = saliency_metrics_ref(pred, fixation_map=g)
    torch.testing.assert_close(a["cc"], b["cc"])
    whole = gaussian_noise(images, 0.2, seed=1, backend="extension")
    half = gaussian_noise(images[:2], 0.2, seed=1, backend="extension")
    assert torch.equal(whole[:2], half)                      # same backend asked alike: an invariance test
    assert torch.equal(cue_conflict(m, t).cpu(), cue_conflict(m, t, size=9))
    np.testing.assert_allclose(rank_average(x).numpy(), scipy.stats.rankdata(x, axis=1))
'''
    assert find_self_comparisons(source, device="cpu") == []


def test_explicit_same_backend_spelled_two_ways_is_found():
    source = '''
def test_sample():
    torch.testing.assert_close(clip_loss(a, b, s, backend="chunked").cpu(), clip_loss(a, b, s))
'''
    found = find_self_comparisons(source, device="cpu")
    assert [(f.op, f.backend) for f in found] == [("clip_loss", "chunked")]
