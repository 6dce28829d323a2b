"""iqa: low-level alignment, the correlation of model distances with human image-quality scores (TID2013,
KADID-10k, a generic IQA CSV, the toy world's synthetic set).

Every pair (reference, distorted) gets a distance per layer (the image embedding and, with layers = "all", every
visual block's tokens averaged over tokens) and per distance (fastclip.eval.distances). The human scores are turned
into quality (higher = better) and the distance into a similarity (its negative), so the signed correlation is +1
for a model that ranks pairs exactly as observers do; this is the authors' -Spearman(distance, MOS)
(reference/eval.md §0). Rows, variant "layer=<L>,distance=<D>":
  spearman, pearson, kendall                the signed correlations (tau-b), with paired percentile-bootstrap 95% CIs
                                            (fastclip.ops.bootstrap: every row resampled with the same draws)
  spearman_abs, pearson_abs, kendall_abs    their absolute values (pyiqa's convention), CIs folded at 0
Correlations come from fastclip.ops.correlation; the per-pair distances are kept for the report's paired tests.
"""

from __future__ import annotations

import math
import warnings

import torch

from fastclip.eval.distances import DISTANCES, distances_by_variant
from fastclip.eval.features import EMBEDDING
from fastclip.eval.items import ItemValues
from fastclip.eval.registry import Benchmark, BenchmarkOutput, Setting, one_of, register, subset_of
from fastclip.eval.results import Measurement

CORRELATIONS = ("spearman", "pearson", "kendall")


def folded_interval(low: float, high: float) -> tuple[float, float]:
    """The interval of |r| given the interval [low, high] of r."""
    if math.isnan(low) or math.isnan(high):
        return math.nan, math.nan
    if low >= 0:
        return low, high
    if high <= 0:
        return -high, -low
    return 0.0, max(-low, high)


def correlation_measurements(
    similarities: torch.Tensor, quality: torch.Tensor, variants: list[str], *, methods: tuple[str, ...],
    ci_methods: tuple[str, ...], resamples: int, seed: int,
) -> list[Measurement]:  # fmt: skip
    """Signed and absolute correlations of each row of similarities (rows, n) with quality (n,)."""
    from fastclip.ops import bootstrap_ci, kendall_tau_b, pearson, spearman

    statistic_of = {"spearman": spearman, "pearson": pearson, "kendall": kendall_tau_b}
    n = quality.shape[-1]
    measurements = []
    for method in methods:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a constant row (a degenerate model) is NaN, as scipy
            if method in ci_methods:
                result = bootstrap_ci(
                    similarities, quality, method=method, resamples=resamples, seed=seed, interval="percentile"
                )
                values, lows, highs = result.statistic, result.low, result.high
            else:
                values = statistic_of[method](similarities, quality)
                lows = highs = torch.full_like(values, math.nan)
        for variant, value, low, high in zip(variants, values.tolist(), lows.tolist(), highs.tolist()):
            measurements.append(Measurement(method, variant, value, low, high, n))
            measurements.append(Measurement(f"{method}_abs", variant, abs(value), *folded_interval(low, high), n))
    return measurements


@register
class IQABenchmark(Benchmark):
    name = "iqa"
    headline = (("spearman", f"layer={EMBEDDING},distance=normalized_euclidean"),)
    kinds = ("iqa",)
    SETTINGS = {
        "layers": Setting("all", one_of("all", EMBEDDING), "all: the embedding and every visual block"),
        "distances": Setting(DISTANCES, subset_of(*DISTANCES)),
        "correlations": Setting(CORRELATIONS, subset_of(*CORRELATIONS)),
        "ci": Setting(CORRELATIONS, subset_of(*CORRELATIONS), "the correlations that get bootstrap CIs"),
    }

    def run(self, context, dataset: str) -> BenchmarkOutput:
        data = context.data.dataset(dataset)
        device = context.options.device
        features = context.features(data.images, blocks=self.settings["layers"] == "all")
        layers = features.layers() if self.settings["layers"] == "all" else {EMBEDDING: features.embedding}
        pairs = [(data.reference.to(device), data.distorted.to(device))]
        by_variant = distances_by_variant(layers, pairs, self.settings["distances"])
        variants = list(by_variant)
        distances = torch.stack([by_variant[variant][0] for variant in variants])
        quality = (data.scores if data.higher_is_better else -data.scores).to(device, torch.float64)
        measurements = correlation_measurements(
            -distances, quality, variants, methods=self.settings["correlations"],
            ci_methods=tuple(m for m in self.settings["ci"] if m in self.settings["correlations"]),
            resamples=context.options.resamples, seed=context.options.seed,
        )  # fmt: skip
        items = ItemValues("correlation", ["spearman"] * len(variants), variants, distances, quality, orientation=-1.0)
        return BenchmarkOutput(measurements, items=items)
