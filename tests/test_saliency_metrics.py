"""fastclip.ops.saliency_metrics against the numpy transcription of the MIT code (tests/saliency_mit_numpy.py), on
random maps and on the 50 real MIT1003 fixation maps, and the batched backend against the reference."""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests import saliency_mit_numpy as mit
from tests.conftest import shared_data
from fastclip.ops.saliency_metrics import (
    METRICS,
    ConstantMapWarning,
    borji_negatives,
    center_bias,
    fixation_indices,
    judd_jitter,
    other_images,
    saliency_metrics,
    saliency_metrics_ref,
    shuffled_candidates,
    shuffled_negatives,
)

# The module, not the function fastclip.ops re-exports under the same name.
sm = importlib.import_module("fastclip.ops.saliency_metrics")
SEED = 11
SPLITS = 100


def transcribed(pred, fixation_map, fixations, *, seed=SEED, splits=SPLITS, step=0.1, jitter=True, baseline=None):
    """Every metric of every image from the numpy transcription, fed fastclip's random draws (checked here to be
    what MIT's code draws: uniform pixels, and subsets of the union of the other images' fixations)."""
    batch, height, width = fixations.shape
    pixels = height * width
    ids = torch.arange(batch)
    fix_index, fix_count = fixation_indices(fixations)
    noise = judd_jitter(seed, ids, pixels).numpy()
    randoms = borji_negatives(seed, ids, splits, fix_index.shape[1], pixels).numpy()
    others = other_images(seed, batch, min(10, batch - 1))
    candidates = shuffled_candidates(fix_index, others)
    take = torch.minimum(fix_count, (candidates >= 0).sum(-1))
    chosen = shuffled_negatives(seed, ids, splits, candidates, take).numpy()
    if baseline is None:
        baseline = center_bias(height, width)
    fixation_points = fixations.numpy()
    out = {name: [] for name in METRICS}
    for i in range(batch):
        p, g, f = pred[i].numpy().astype(np.float64), fixation_map[i].numpy().astype(np.float64), fixation_points[i]
        k = int(fix_count[i])
        union = np.unique(np.concatenate([np.flatnonzero(fixation_points[o]) for o in others[i].tolist()]))
        assert i not in others[i].tolist() and len(set(others[i].tolist())) == others.shape[1]
        assert np.array_equal(candidates[i][candidates[i] >= 0].numpy(), union)
        picks = [split[split >= 0] for split in chosen[i]]
        for pick in picks:
            assert len(pick) == min(k, len(union)) and len(set(pick)) == len(pick) and np.isin(pick, union).all()
        out["cc"].append(mit.CC(p, g))
        out["nss"].append(mit.NSS(p, f))
        out["sim"].append(mit.similarity(p, g))
        out["kld"].append(mit.KLdiv(p, g))
        out["auc_judd"].append(mit.AUC_Judd(p, f, noise[i] if jitter else None))
        out["auc_borji"].append(mit.AUC_Borji(p, f, randoms[i, :, :k].T, step))
        out["auc_shuffled"].append(mit.AUC_shuffled(p, f, picks, step))
        out["info_gain"].append(mit.InfoGain(p, f, baseline.numpy()))
    return {name: np.array(values) for name, values in out.items()}


def random_maps(batch, height, width, pred_size, seed=0, fixation_rate=0.02):
    generator = torch.Generator().manual_seed(seed)
    pred = torch.rand(batch, *pred_size, generator=generator) ** 2
    fixation_map = torch.rand(batch, height, width, generator=generator) ** 3
    fixations = torch.rand(batch, height, width, generator=generator) < fixation_rate
    return pred, fixation_map, fixations


@pytest.mark.parametrize("pred_size", [(24, 20), (37, 50), (61, 33)])  # upscale, same size, mixed
@pytest.mark.parametrize("jitter", [True, False])
def test_random_maps_match_the_mit_transcription_and_the_reference(pred_size, jitter):
    pred, fixation_map, fixations = random_maps(4, 37, 50, pred_size)
    kwargs = dict(fixation_map=fixation_map, fixations=fixations, seed=SEED, jitter=jitter)
    fast = saliency_metrics(pred, **kwargs)
    reference = saliency_metrics_ref(pred, **kwargs)
    oracle = transcribed(pred, fixation_map, fixations, jitter=jitter)
    assert list(fast) == list(METRICS)
    for name in METRICS:
        assert fast[name].dtype == torch.float64 and fast[name].shape == (4,)
        np.testing.assert_allclose(fast[name].numpy(), oracle[name], rtol=0, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(fast[name].numpy(), reference[name].numpy(), rtol=0, atol=1e-12, err_msg=name)


def test_borji_thresholds_and_steps_other_than_a_tenth():
    pred, fixation_map, fixations = random_maps(3, 20, 30, (20, 30), seed=3, fixation_rate=0.05)
    fast = saliency_metrics(pred, fixations=fixations, metrics=["auc_borji", "auc_shuffled"], seed=SEED, step=0.07)
    oracle = transcribed(pred, fixation_map, fixations, step=0.07)
    for name in ("auc_borji", "auc_shuffled"):
        np.testing.assert_allclose(fast[name].numpy(), oracle[name], rtol=0, atol=1e-6)


def test_results_do_not_depend_on_chunking(monkeypatch):
    pred, fixation_map, fixations = random_maps(5, 16, 16, (8, 8), seed=4, fixation_rate=0.1)
    kwargs = dict(fixation_map=fixation_map, fixations=fixations, seed=2)
    whole = saliency_metrics(pred, **kwargs)
    monkeypatch.setattr(sm, "_CHUNK_PIXELS", 2 * 16 * 16)  # two images per chunk
    chunked = saliency_metrics(pred, **kwargs)
    for name in METRICS:  # sums may round differently with the batch shape; the draws must be the same
        torch.testing.assert_close(whole[name], chunked[name], rtol=0, atol=1e-12, msg=name)


def test_explicit_baseline_and_other_fixations():
    pred, fixation_map, fixations = random_maps(3, 20, 24, (10, 12), seed=5, fixation_rate=0.05)
    generator = torch.Generator().manual_seed(9)
    baseline = torch.rand(3, 5, 6, generator=generator)
    other = torch.rand(3, 20, 24, generator=generator) < 0.1
    fast = saliency_metrics(pred, fixations=fixations, metrics=("info_gain", "auc_shuffled"), baseline=baseline,
                            other_fixations=other, seed=1)
    reference = saliency_metrics_ref(pred, fixations=fixations, metrics=("info_gain", "auc_shuffled"),
                                     baseline=baseline, other_fixations=other, seed=1)
    for i in range(3):
        expected = mit.InfoGain(pred[i].double().numpy(), fixations[i].numpy(), baseline[i].double().numpy())
        assert fast["info_gain"][i].item() == pytest.approx(expected, abs=1e-9)
    torch.testing.assert_close(fast["auc_shuffled"], reference["auc_shuffled"], rtol=0, atol=1e-12)
    assert fast["auc_shuffled"].isfinite().all()


def test_perfect_and_inverted_predictions():
    _, _, fixations = random_maps(2, 30, 30, (30, 30), seed=6, fixation_rate=0.03)
    perfect = fixations.double() + 0.01 * torch.rand(2, 30, 30, generator=torch.Generator().manual_seed(1))
    scores = saliency_metrics(perfect, fixations=fixations, metrics=["auc_judd", "auc_borji"], seed=0)
    assert (scores["auc_judd"] > 0.99).all() and (scores["auc_borji"] > 0.95).all()
    inverted = saliency_metrics(-perfect, fixations=fixations, metrics=["auc_judd"], seed=0)
    assert (inverted["auc_judd"] < 0.05).all()


def test_constant_prediction_gives_nan_with_a_warning():
    pred = torch.ones(2, 10, 10)
    pred[1] = torch.rand(10, 10)
    fixations = torch.zeros(2, 10, 10, dtype=torch.bool)
    fixations[:, 3, 4] = True
    with pytest.warns(ConstantMapWarning):
        scores = saliency_metrics(pred, fixation_map=torch.rand(2, 10, 10), fixations=fixations,
                                  metrics=["cc", "nss", "sim", "auc_borji", "info_gain"])
    with pytest.warns(ConstantMapWarning):  # with jitter, AUC-Judd scores the jitter (as MIT's code)
        scores.update(saliency_metrics(pred, fixations=fixations, metrics=["auc_judd"], jitter=False))
    for name, values in scores.items():
        assert math.isnan(values[0]) and not math.isnan(values[1]), name


def test_images_without_fixations_give_nan():
    fixations = torch.zeros(2, 8, 8, dtype=torch.bool)
    fixations[0, 2, 2] = True
    scores = saliency_metrics(torch.rand(2, 8, 8), fixations=fixations, metrics=["nss", "auc_judd", "auc_borji"])
    for name, values in scores.items():
        assert not math.isnan(values[0]) and math.isnan(values[1]), name


def test_random_draws_are_keyed_by_image_not_by_batch():
    ids = torch.tensor([3, 7])
    assert torch.equal(judd_jitter(1, ids, 50)[1], judd_jitter(1, torch.tensor([7]), 50)[0])
    draws = borji_negatives(1, ids, 4, 9, 1000)
    assert torch.equal(draws[:, :, :5], borji_negatives(1, ids, 4, 5, 1000))
    assert int(draws.min()) >= 0 and int(draws.max()) < 1000
    jitter = judd_jitter(1, ids, 10_000)
    assert 0 <= float(jitter.min()) and float(jitter.max()) < 1e-7


def test_borji_negatives_are_uniform():
    draws = borji_negatives(5, torch.arange(2), 50, 400, 10).flatten()
    counts = torch.bincount(draws, minlength=10).double()
    expected = draws.numel() / 10
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 30  # 9 degrees of freedom: p ~ 4e-4


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(), "pass fixation_map"),
        (dict(fixations=torch.ones(2, 4, 4), metrics=["cc"]), "needs the fixation_map"),
        (dict(fixation_map=torch.ones(2, 4, 4), metrics=["nss"]), "needs the fixations"),
        (dict(fixation_map=torch.ones(2, 4, 4), metrics=["auc"]), "unknown metric"),
        (dict(fixation_map=torch.ones(3, 4, 4)), "holds 3 images"),
        (dict(fixation_map=torch.ones(4, 4)), "fixation_map must be"),
        (dict(fixation_map=torch.ones(1, 2, 4, 4)), "fixation_map must be \\(images, height, width\\)"),
        (dict(fixations=torch.ones(2, 4, 4), fixation_map=torch.ones(2, 5, 4)), "same height and width"),
        (dict(fixations=torch.ones(2, 4, 4), seed=-1), "seed"),
        (dict(fixations=torch.ones(2, 4, 4), step=0), "step"),
        (dict(fixation_map=torch.full((2, 4, 4), float("nan"))), "contains NaN"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        saliency_metrics(torch.rand(2, 4, 4), **kwargs)


@pytest.mark.parametrize("backend", ["auto", "batched", "reference"])
def test_several_predictions_score_as_their_own_calls(backend):
    """(M, B, h, w) predictions share the human data and give (M, B) scores, each equal to its own call's."""
    pred, fixation_map, fixations = random_maps(3, 20, 24, (6, 7), seed=8, fixation_rate=0.05)
    predictions = torch.stack([pred, pred.flip(-1), pred**2])
    kwargs = dict(fixation_map=fixation_map, fixations=fixations, seed=3, backend=backend)
    together = saliency_metrics(predictions, **kwargs)
    for index, prediction in enumerate(predictions):
        alone = saliency_metrics(prediction, **kwargs)
        for name in METRICS:
            assert together[name].shape == (3, 3)
            torch.testing.assert_close(together[name][index], alone[name], rtol=0, atol=0, msg=name)
    with pytest.raises(ValueError, match="holds 3 images, pred holds 2"):
        saliency_metrics(predictions[:, :2], **kwargs)


def test_shuffled_auc_needs_other_images():
    with pytest.raises(ValueError, match="other_fixations"):
        saliency_metrics(torch.rand(1, 4, 4), fixations=torch.ones(1, 4, 4), metrics=["auc_shuffled"])


# --------------------------------------------------------------------------------------- real MIT1003 maps

REAL_SIZE = (192, 256)  # the 50 maps have 18 different sizes; one common grid makes one batch (and keeps it fast)
PRED_SIZE = (96, 128)  # predictions at half resolution, so the bilinear resize is exercised too


def _gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = int(3 * sigma)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    out = F.conv2d(F.pad(maps.unsqueeze(1), (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    out = F.conv2d(F.pad(out, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))
    return out.squeeze(1)


@pytest.fixture(scope="module")
def mit_maps():
    from PIL import Image

    folder = shared_data("mit1003-subset", "fixation-maps")
    files = sorted(folder.glob("*.jpg"))
    assert len(files) == 50
    maps = []
    for path in files:
        image = torch.from_numpy(np.asarray(Image.open(path).convert("L"), dtype=np.float64) / 255)
        maps.append(F.interpolate(image[None, None], size=REAL_SIZE, mode="area")[0, 0])
    fixation_map = torch.stack(maps)
    # The subset has no raw fixations, so test fixations are derived from the maps: local maxima (15 x 15
    # neighbourhood) of at least a quarter of the image's maximum, i.e. the centres of the fixation clusters.
    peaks = F.max_pool2d(fixation_map.unsqueeze(1), 15, stride=1, padding=7).squeeze(1)
    fixations = (fixation_map == peaks) & (fixation_map >= 0.25 * fixation_map.amax((1, 2), keepdim=True))
    own = F.interpolate(fixation_map.unsqueeze(1), size=PRED_SIZE, mode="area").squeeze(1)
    blurred = F.interpolate(_gaussian_blur(fixation_map, 12.0).unsqueeze(1), size=PRED_SIZE, mode="area").squeeze(1)
    shuffled = own.roll(1, dims=0)  # another image's map
    return fixation_map, fixations, {"own": own, "blurred": blurred, "shuffled": shuffled}


@pytest.fixture(scope="module")
def mit_scores(mit_maps):
    fixation_map, fixations, predictions = mit_maps
    return {
        label: saliency_metrics(pred, fixation_map=fixation_map, fixations=fixations, seed=SEED)
        for label, pred in predictions.items()
    }


def test_real_maps_match_the_mit_transcription(mit_maps, mit_scores):
    fixation_map, fixations, predictions = mit_maps
    assert int(fixations.sum((1, 2)).min()) >= 1
    for label, pred in predictions.items():
        oracle = transcribed(pred, fixation_map, fixations)
        for name in METRICS:
            fast = mit_scores[label][name]
            assert torch.isfinite(fast).all(), (label, name)
            np.testing.assert_allclose(fast.numpy(), oracle[name], rtol=0, atol=1e-6, err_msg=f"{label} {name}")


def test_real_maps_rank_own_over_blurred_over_shuffled(mit_scores):
    for name in ("cc", "sim"):
        own, blurred, shuffled = (mit_scores[label][name] for label in ("own", "blurred", "shuffled"))
        assert (own > blurred).all(), name
        assert (blurred > shuffled).float().mean() >= 0.9, name
        assert own.mean() > blurred.mean() > shuffled.mean(), name
    # The other metrics agree on the ordering of the means (KLD is a divergence: lower is better).
    mean = {label: {name: float(v.mean()) for name, v in scores.items()} for label, scores in mit_scores.items()}
    for name in ("nss", "auc_judd", "auc_borji", "info_gain"):
        assert mean["own"][name] > mean["blurred"][name] > mean["shuffled"][name], name
    assert mean["own"]["kld"] < mean["blurred"]["kld"] < mean["shuffled"]["kld"]


@pytest.mark.needs_cuda
def test_cuda_matches_cpu():
    pred, fixation_map, fixations = random_maps(6, 48, 64, (24, 32), seed=8)
    kwargs = dict(fixation_map=fixation_map, fixations=fixations, seed=SEED)
    cpu = saliency_metrics(pred, **kwargs)
    cuda = saliency_metrics(pred.cuda(), fixation_map=fixation_map.cuda(), fixations=fixations.cuda(), seed=SEED)
    for name in METRICS:
        torch.testing.assert_close(cuda[name].cpu(), cpu[name], rtol=0, atol=1e-9, msg=name)


def _exact_map_metrics(p: np.ndarray, g: np.ndarray, fixated: np.ndarray) -> dict[str, float]:
    """CC, SIM, NSS and KLD of one flat map in extended precision (numpy's longdouble, 64-bit mantissa, summed
    pairwise: ~1e-18 relative here), to hold the float64 kernel to."""
    p, g = p.astype(np.longdouble), g.astype(np.longdouble)
    n = p.size
    dp, dg = p - p.sum() / n, g - g.sum() / n
    p_share, g_share = (p - p.min()) / (p - p.min()).sum(), (g - g.min()) / (g - g.min()).sum()
    pk, gk = p / p.sum(), g / g.sum()
    eps = np.longdouble(sm.MATLAB_EPS)
    terms = np.where(gk > 0, gk * np.log(eps + gk / (pk + eps)), 0)
    return {
        "cc": float((dp * dg).sum() / np.sqrt((dp * dp).sum() * (dg * dg).sum())),
        "sim": float(np.minimum(p_share, g_share).sum()),
        "nss": float(dp[fixated].mean() / np.sqrt((dp * dp).sum() / (n - 1))),
        "kld": float(terms.sum()),
    }


def test_sums_are_exact_to_1e13_on_full_size_maps():
    """CC, SIM, NSS and KLD of 768 x 1024 maps (MIT1003's size) within 1e-13 relative of an extended-precision
    computation: the kernel's sums are blockwise and compensated, where one running sum over 786k pixels drifted
    by up to ~1e-11 (issue 13). Smooth MIT-like maps and a dense random one, float64 and float32 maps."""
    from fastclip.ops import resize_bilinear

    height, width = 768, 1024
    generator = torch.Generator().manual_seed(13)
    coarse = torch.rand(3, 1, 6, 8, generator=generator, dtype=torch.float64) ** 4
    fixation_map = F.interpolate(coarse, size=(height, width), mode="bicubic").clamp(min=0)[:, 0]
    fixation_map = torch.cat([fixation_map, torch.rand(1, height, width, generator=generator, dtype=torch.float64)])
    pred = F.interpolate(fixation_map.unsqueeze(1), size=(24, 32), mode="area").squeeze(1)
    pred = pred + 0.3 + 0.05 * torch.rand(pred.shape, generator=generator, dtype=torch.float64)
    # The dense random map's prediction is unrelated to it. (Were its NSS ~0, NSS's numerator, a mean minus the
    # map's mean, would cancel: its relative error is then that of the float64 mean over |NSS| std, not the sums'.)
    pred[3] = torch.rand(24, 32, generator=generator, dtype=torch.float64)
    fixations = torch.rand(fixation_map.shape, generator=generator) < 2e-4
    metrics = ("cc", "sim", "nss", "kld")
    for map_dtype in (torch.float64, torch.float32):
        fast = saliency_metrics(pred, fixation_map=fixation_map.to(map_dtype), fixations=fixations, metrics=metrics)
        resized = resize_bilinear(pred, (height, width)).reshape(len(pred), -1).numpy()
        for i in range(len(pred)):
            g = fixation_map[i].to(map_dtype).double().reshape(-1).numpy()
            exact = _exact_map_metrics(resized[i], g, fixations[i].reshape(-1).numpy())
            for name in metrics:
                relative = abs(float(fast[name][i]) - exact[name]) / abs(exact[name])
                assert relative <= 1e-13, (map_dtype, i, name, relative)
