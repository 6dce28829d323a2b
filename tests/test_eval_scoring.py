"""Scoring rules of the new benchmarks against hand-computed cases: distances (L2, cosine, normalised Euclidean),
2AFC with ties, the IQA correlation orientation, the ImageNet-1k -> 16 mapping, shape decisions per trial,
bootstrap means and the paired test, and the per-item files."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch

from fastclip.eval.benchmarks.iqa import correlation_measurements, folded_interval
from fastclip.eval.benchmarks.noise_robustness import SIGMA_SETS, _sigmas
from fastclip.eval.benchmarks.shape_bias import decision_items, decision_trials, imagenet_to_16_probabilities
from fastclip.eval.benchmarks.two_afc import human_agreement
from fastclip.eval.distances import distances_by_variant, normalized_euclidean_scale, pair_distances, squared_differences
from fastclip.eval.items import ItemValues, load_items, save_items
from fastclip.eval.stats import bootstrap_mean_ci, paired_mean_difference
from fastclip.eval.templates import IMAGENET_INDICES_BY_GEIRHOS_CATEGORY

FEATURES = torch.tensor([[1.0, 0.0, 2.0], [1.0, 3.0, 2.0], [0.0, 4.0, 2.0], [2.0, 0.0, 2.0]])


def test_l2_and_cosine_hand_computed():
    first, second = torch.tensor([0, 0, 1]), torch.tensor([1, 2, 3])
    l2 = pair_distances(FEATURES, first, second, "l2")
    torch.testing.assert_close(l2, torch.tensor([3.0, math.sqrt(1 + 16), math.sqrt(1 + 9)], dtype=torch.float64))
    cosine = pair_distances(FEATURES, first, second, "cosine")
    expected = 1 - (1 + 4) / (math.sqrt(5) * math.sqrt(14))  # (1,0,2) . (1,3,2) = 5
    assert cosine[0].item() == pytest.approx(expected, abs=1e-12)
    assert l2.dtype == cosine.dtype == torch.float64


def test_normalized_euclidean_scales_each_dimension_by_its_mean_squared_difference():
    first, second = torch.tensor([0, 0]), torch.tensor([1, 3])
    squared = squared_differences(FEATURES, first, second)  # rows (0,9,0) and (1,0,0)
    scale = normalized_euclidean_scale(squared)
    torch.testing.assert_close(scale, torch.tensor([0.5, 4.5, 0.0], dtype=torch.float64))
    distances = pair_distances(FEATURES, first, second, "normalized_euclidean", scale)
    # (0/0.5 + 9/4.5 + [dimension 3 never differs: adds 0]) / 3 dims, then sqrt; and (1/0.5 + 0 + 0) / 3.
    torch.testing.assert_close(distances, torch.tensor([math.sqrt(2 / 3), math.sqrt(2 / 3)], dtype=torch.float64))
    with pytest.raises(ValueError, match="scale"):
        pair_distances(FEATURES, first, second, "normalized_euclidean")


def test_two_afc_pools_both_comparisons_for_the_scale_and_scores_ties_half():
    from fastclip.eval.datasets.bapps import two_afc_scores

    ref, p0, p1 = torch.tensor([0, 0, 0]), torch.tensor([1, 3, 1]), torch.tensor([3, 1, 1])
    by_variant = distances_by_variant({"embedding": FEATURES}, [(ref, p0), (ref, p1)], ("l2", "normalized_euclidean"))
    d0, d1 = by_variant["layer=embedding,distance=l2"]
    judge = torch.tensor([0.8, 0.8, 0.3], dtype=torch.float64)
    scores = two_afc_scores(d0, d1, judge)
    # d(ref, p1=3) = 1 < d(ref, p0=1) = 3: p1 closer -> p; reversed -> 1 - p; identical images tie -> 0.5.
    torch.testing.assert_close(scores, torch.tensor([0.8, 0.2, 0.5], dtype=torch.float64))
    squared = torch.cat([squared_differences(FEATURES, ref, p0), squared_differences(FEATURES, ref, p1)])
    expected_scale = squared.double().mean(0)
    d0n, _ = by_variant["layer=embedding,distance=normalized_euclidean"]
    torch.testing.assert_close(d0n[0], ((squared[0].double() / expected_scale)[:2].sum() / 3).sqrt())
    torch.testing.assert_close(human_agreement(judge), torch.tensor([0.68, 0.68, 0.58], dtype=torch.float64))


def test_iqa_signed_correlation_is_positive_for_an_aligned_model():
    quality = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0, 0.5], dtype=torch.float64)
    distances = torch.tensor([[0.1, 0.2, 0.3, 0.5, 0.4, 0.9], [0.9, 0.8, 0.1, 0.2, 0.3, 0.0]], dtype=torch.float64)
    rows = correlation_measurements(
        -distances, quality, ["a", "b"], methods=("spearman", "pearson", "kendall"), ci_methods=("spearman",),
        resamples=200, seed=0,
    )  # fmt: skip
    by = {(m.metric, m.variant): m for m in rows}
    for variant, row in (("a", 0), ("b", 1)):
        rho = scipy.stats.spearmanr(distances[row], quality).statistic
        assert by[("spearman", variant)].value == pytest.approx(-rho, abs=1e-12)  # the authors' -Spearman
        assert by[("spearman_abs", variant)].value == pytest.approx(abs(rho), abs=1e-12)
        tau = scipy.stats.kendalltau(distances[row], quality).statistic
        assert by[("kendall", variant)].value == pytest.approx(-tau, abs=1e-12)
        r = scipy.stats.pearsonr(distances[row], quality).statistic
        assert by[("pearson", variant)].value == pytest.approx(-r, abs=1e-12)
    assert by[("spearman", "a")].value > 0.8
    assert by[("spearman", "a")].ci_low <= by[("spearman", "a")].value <= by[("spearman", "a")].ci_high
    assert math.isnan(by[("pearson", "a")].ci_low)  # no CI asked for pearson
    assert folded_interval(-0.2, 0.5) == (0.0, 0.5) and folded_interval(-0.6, -0.2) == (0.2, 0.6)


def test_imagenet_to_16_mean_probability_mapping():
    logits = torch.full((2, 1000), -30.0)
    dog, cat = IMAGENET_INDICES_BY_GEIRHOS_CATEGORY["dog"], IMAGENET_INDICES_BY_GEIRHOS_CATEGORY["cat"]
    logits[0, list(dog)] = 5.0  # much probability mass on dogs, but spread over 109 classes
    logits[0, cat[0]] = 8.0  # one cat class a little stronger: the mean favours cat, the sum would favour dog
    logits[1, dog[3]] = 10.0
    probabilities = imagenet_to_16_probabilities(logits, ("cat", "dog"))
    softmax = logits.softmax(dim=1)
    torch.testing.assert_close(probabilities[:, 0], softmax[:, list(cat)].mean(1))
    assert probabilities.argmax(1).tolist() == [0, 1]
    assert softmax[0, list(dog)].sum() > softmax[0, list(cat)].sum()


def test_decision_items_mean_is_the_shape_bias():
    trials = decision_trials(
        ["cat1-dog2.png", "cat2-dog1.png", "cat3-cat1.png", "dog1-bird2.png", "dog2-cat1.png"],
        ["cat", "cat", "cat", "dog", "dog"], ["cat", "dog", "cat", "car", "dog"],
    )  # fmt: skip
    items = decision_items(trials)
    assert torch.equal(torch.isnan(items), torch.tensor([False, False, True, True, False]))
    assert torch.nanmean(items).item() == pytest.approx(2 / 3)


def test_bootstrap_mean_matches_a_numpy_bootstrap_on_the_same_draws():
    from fastclip.ops.bootstrap import resample_indices

    values = torch.tensor([[0.2, 0.9, 0.4, float("nan"), 0.7, 0.1, 0.5]], dtype=torch.float64)
    mean, low, high = bootstrap_mean_ci(values, resamples=400, seed=3)
    draws = resample_indices(3, 0, 400, values.shape[1]).numpy()
    resampled = np.nanmean(values.numpy()[0][draws], axis=1)
    assert mean.item() == pytest.approx(np.nanmean(values.numpy()))
    assert low.item() == pytest.approx(np.quantile(resampled, 0.025)) and high.item() == pytest.approx(np.quantile(resampled, 0.975))
    same = paired_mean_difference(values, values, resamples=200)
    assert same["difference"].item() == 0 and same["pvalue"].item() == 1.0
    shifted = paired_mean_difference(values + 1.0, values, resamples=200)
    assert shifted["difference"].item() == pytest.approx(1.0) and shifted["low"].item() == pytest.approx(1.0)
    assert shifted["pvalue"].item() == pytest.approx(1 / 201)


def test_sigma_sets_and_items_round_trip(tmp_path):
    assert _sigmas("imagenet-c") == (0.08, 0.12, 0.18, 0.26, 0.38) == SIGMA_SETS["imagenet-c"]
    assert _sigmas([0.1, 0.2]) == (0.1, 0.2)
    for bad in ("nope", [0.0], [2.0], []):
        with pytest.raises(ValueError):
            _sigmas(bad)
    items = ItemValues("correlation", ["spearman"], ["layer=embedding"], torch.rand(1, 5), torch.rand(5), -1.0)
    save_items(tmp_path / "x.npz", items)
    back = load_items(tmp_path / "x.npz")
    assert (back.kind, back.metrics, back.variants, back.orientation) == ("correlation", ["spearman"], ["layer=embedding"], -1.0)
    torch.testing.assert_close(back.values, items.values.double())
    assert back.row("spearman", "layer=embedding") == 0 and back.row("spearman", "x") is None
    with pytest.raises(ValueError, match="target"):
        ItemValues("mean", ["m"], ["v"], torch.rand(1, 3), torch.rand(3))
