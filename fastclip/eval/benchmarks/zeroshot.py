"""zeroshot: top-1 and top-5 zero-shot accuracy on a classification set (CIFAR-10/100, an ImageFolder, the toy
world's held-out natural images). The image features are the context's, so noise_robustness reuses them."""

from __future__ import annotations

import torch

from fastclip.eval.items import ItemValues
from fastclip.eval.registry import Benchmark, BenchmarkOutput, register
from fastclip.eval.results import Measurement
from fastclip.eval.stats import wilson_interval
from fastclip.eval.zeroshot import topk_correct

TOYWORLD_HELDOUT = "toyworld_heldout"


def accuracy_measurements(
    logits: torch.Tensor, labels: torch.Tensor, *, ks: tuple[int, ...] = (1, 5), variant: str = ""
) -> list[Measurement]:
    """top-k accuracy rows (metric "top<k>") with Wilson 95% intervals."""
    measurements = []
    for k in ks:
        hits = int(topk_correct(logits, labels, k).sum())
        low, high = wilson_interval(hits, len(labels))
        measurements.append(Measurement(f"top{k}", variant, hits / len(labels), low, high, len(labels)))
    return measurements


def clean_logits(context, dataset) -> torch.Tensor:
    """(N, C) zero-shot logits of a classification set's clean images (features cached per checkpoint)."""
    classifier = context.classifier(dataset.class_names, context.templates(dataset.templates))
    return classifier.logits(context.features(dataset.images).embedding)


@register
class ZeroShotBenchmark(Benchmark):
    name = "zeroshot"
    headline = (("top1", ""),)
    kinds = ("classification",)

    def run(self, context, dataset: str) -> BenchmarkOutput:
        data = context.data.dataset(dataset)
        logits = clean_logits(context, data)
        # Per image, 1 when the top-1 answer is right: the report bootstraps the accuracy's trend over images.
        correct = topk_correct(logits, data.labels, 1).reshape(1, -1).double()
        items = ItemValues("mean", ["top1"], [""], correct)
        return BenchmarkOutput(accuracy_measurements(logits, data.labels), items=items)
