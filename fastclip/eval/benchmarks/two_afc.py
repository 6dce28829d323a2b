"""two_afc: mid-level alignment, agreement with human 2AFC similarity judgements (BAPPS, NIGHTS, the toy world's
synthetic triplets).

Per triplet (ref, p0, p1) with p = the fraction of observers who found p1 closer, the model's distances
d0 = d(ref, p0) and d1 = d(ref, p1) score s = (d0 < d1)(1 - p) + (d1 < d0) p + 0.5 (d0 == d1)
(fastclip.eval.datasets.bapps.two_afc_scores; PerceptualSimilarity, pyiqa and dreamsim score alike), and the 2AFC
score is the mean of s with a bootstrap 95% CI over triplets. Layers and distances as the iqa benchmark (the
normalised Euclidean's scale pools both comparisons of every triplet). Rows:
  2afc        variant "layer=<L>,distance=<D>" over all triplets (DreamSim pools BAPPS's subsets this way), and
              "group=<G>,layer=<L>,distance=<D>" per group (BAPPS subset, NIGHTS split, toy distortion)
  2afc_human  the agreement expected between two observers drawn at random, mean of p^2 + (1 - p)^2 (variant
              "" and "group=<G>"): a ceiling for the model's score, drawn as the human reference line
The per-triplet scores are kept for the report's paired tests.
"""

from __future__ import annotations

import torch

from fastclip.eval.distances import DISTANCES, distances_by_variant
from fastclip.eval.features import EMBEDDING
from fastclip.eval.items import ItemValues
from fastclip.eval.registry import Benchmark, BenchmarkOutput, Setting, one_of, register, subset_of
from fastclip.eval.results import Measurement
from fastclip.eval.stats import bootstrap_mean_ci


def human_agreement(p_right: torch.Tensor) -> torch.Tensor:
    """Per triplet, the probability that two observers drawn at random agree: p^2 + (1 - p)^2."""
    p = p_right.double()
    return p.square() + (1 - p).square()


def _mean_rows(values: torch.Tensor, metric: str, variants: list[str], resamples: int, seed: int) -> list[Measurement]:
    means, lows, highs = bootstrap_mean_ci(values, resamples=resamples, seed=seed)
    return [
        Measurement(metric, variant, mean, low, high, values.shape[1])
        for variant, mean, low, high in zip(variants, means.tolist(), lows.tolist(), highs.tolist())
    ]


@register
class TwoAFCBenchmark(Benchmark):
    name = "two_afc"
    headline = (("2afc", f"layer={EMBEDDING},distance=cosine"),)
    kinds = ("two_afc",)
    SETTINGS = {
        "layers": Setting(EMBEDDING, one_of("all", EMBEDDING), "all: the embedding and every visual block"),
        "distances": Setting(DISTANCES, subset_of(*DISTANCES)),
    }

    def run(self, context, dataset: str) -> BenchmarkOutput:
        from fastclip.eval.datasets.bapps import two_afc_scores

        data = context.data.dataset(dataset)
        device = context.options.device
        blocks = self.settings["layers"] == "all"
        features = context.features(data.images, blocks=blocks)
        layers = features.layers() if blocks else {EMBEDDING: features.embedding}
        ref, p0, p1 = (index.to(device) for index in (data.ref, data.p0, data.p1))
        by_variant = distances_by_variant(layers, [(ref, p0), (ref, p1)], self.settings["distances"])
        variants = list(by_variant)
        judge = data.judge.to(device, torch.float64)
        scores = torch.stack([two_afc_scores(d0, d1, judge) for d0, d1 in by_variant.values()])
        resamples, seed = context.options.resamples, context.options.seed
        measurements = _mean_rows(scores, "2afc", variants, resamples, seed)
        agreement = human_agreement(judge)
        measurements += _mean_rows(agreement[None], "2afc_human", [""], resamples, seed)
        for group, members in data.groups.items():
            members = members.to(device)
            measurements += _mean_rows(
                scores[:, members], "2afc", [f"group={group},{variant}" for variant in variants], resamples, seed
            )
            measurements += _mean_rows(agreement[None, members], "2afc_human", [f"group={group}"], resamples, seed)
        return BenchmarkOutput(measurements, items=ItemValues("mean", ["2afc"] * len(variants), variants, scores))
