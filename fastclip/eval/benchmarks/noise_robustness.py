"""noise_robustness: zero-shot accuracy under Gaussian noise, its relative drop, and a label-free embedding stability.

A classification set's model-sized images are perturbed with fastclip.ops.gaussian_noise (x + sigma z on [0,1]
pixels, clipped, truncated to 8 bits as imagecorruptions' np.uint8 does, then normalised for the model, in one pass)
at every sigma of the `sigmas` setting, with common random numbers: the same z for every sigma, keyed by (--seed,
image index), so results do not depend on the batch size or device. The noise is applied at the model's input
resolution, after the resize (which of the two the paper did is not published, reference/eval.md §5). The clean
accuracy (sigma = 0) comes from the clean features the zeroshot benchmark also uses. The perturbed images depend only
on (seed, image), not on the checkpoint, so they are made once per run and kept while they fit in
`NOISY_CACHE_BYTES`; larger sets are perturbed batch by batch on the device.

Sigma sets: "imagenet-c" (severities 1-5: 0.08, 0.12, 0.18, 0.26, 0.38; imagecorruptions, ImageNet-C), "cifar-c"
(0.04, 0.06, 0.08, 0.09, 0.10; CIFAR-10-C), "toyworld" (0.04, 0.08, 0.12, 0.18, 0.26), or a list of numbers.

Rows: "accuracy" (variant "sigma=<s>", Wilson 95% CIs) for sigma 0 and every sigma; "relative_drop"
(clean - noisy) / clean for every sigma > 0 plus their mean (variant "mean"; the paper's exact "normalised accuracy
drop" is not published, so the raw accuracies are kept too); "embedding_stability", the mean cosine between each
image's clean and noisy embeddings (variant "sigma=<s>" with bootstrap CIs, and "mean"). Per-item values (one row per
sigma, 1 where an image is classified correctly) go to OUT/items/, so `fastclip-eval report` can resample images.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
import torch.nn.functional as F

from fastclip.eval.benchmarks.zeroshot import clean_logits
from fastclip.eval.items import ItemValues
from fastclip.eval.registry import Benchmark, BenchmarkOutput, Setting, register
from fastclip.eval.results import Measurement
from fastclip.eval.stats import bootstrap_mean_ci, wilson_interval
from fastclip.models import autocast

SIGMA_SETS = {
    "imagenet-c": (0.08, 0.12, 0.18, 0.26, 0.38),
    "cifar-c": (0.04, 0.06, 0.08, 0.09, 0.10),
    "toyworld": (0.04, 0.08, 0.12, 0.18, 0.26),
}
SIGMAS = (0.0, *SIGMA_SETS["toyworld"])  # the default: clean, then the toy world's sigmas
NOISY_CACHE_BYTES = 1 << 30


def sigma_variant(sigma: float) -> str:
    return f"sigma={sigma:g}"


def relative_drop(clean: float, noisy: float) -> float:
    """(clean - noisy) / clean; NaN when the clean accuracy is 0 (no accuracy left to lose)."""
    return (clean - noisy) / clean if clean > 0 else math.nan


def noise_measurements(correct: list[int], total: int, sigmas: tuple[float, ...] = SIGMAS) -> list[Measurement]:
    """Accuracy per sigma and relative drops against sigmas[0] (which must be 0, the clean images)."""
    if sigmas[0] != 0:
        raise ValueError(f"the first sigma must be 0 (the clean reference), got {sigmas}")
    accuracies = [hits / total for hits in correct]
    measurements = [
        Measurement("accuracy", sigma_variant(sigma), accuracy, *wilson_interval(hits, total), total)
        for sigma, accuracy, hits in zip(sigmas, accuracies, correct)
    ]
    drops = [relative_drop(accuracies[0], accuracy) for accuracy in accuracies[1:]]
    measurements += [
        Measurement("relative_drop", sigma_variant(sigma), drop, n=total) for sigma, drop in zip(sigmas[1:], drops)
    ]
    measurements.append(Measurement("relative_drop", "mean", sum(drops) / len(drops), n=total))
    return measurements


def _sigmas(value) -> tuple[float, ...]:
    if isinstance(value, str):
        if value not in SIGMA_SETS:
            raise ValueError(f"must be one of {', '.join(map(repr, SIGMA_SETS))} or a list of numbers, got {value!r}")
        return SIGMA_SETS[value]
    if (
        not isinstance(value, list | tuple) or not value
        or not all(isinstance(s, int | float) and not isinstance(s, bool) and 0 < s <= 1 for s in value)
    ):  # fmt: skip
        raise ValueError(f"must name a sigma set or list numbers in (0, 1], got {value!r}")
    return tuple(float(s) for s in value)


@register
class NoiseRobustnessBenchmark(Benchmark):
    name = "noise_robustness"
    headline = (("relative_drop", "mean"),)
    kinds = ("classification",)
    SETTINGS = {"sigmas": Setting(SIGMA_SETS["toyworld"], _sigmas, "a sigma set name or a list of sigmas")}

    def run(self, context, dataset: str) -> BenchmarkOutput:
        data = context.data.dataset(dataset)
        sigmas = (0.0, *self.settings["sigmas"])
        device = context.options.device
        labels = data.labels.to(device)
        classifier = context.classifier(data.class_names, context.templates(data.templates))
        clean = context.features(data.images).embedding
        correct = torch.zeros(len(sigmas), len(labels), dtype=torch.bool, device=device)  # per sigma, per image
        correct[0] = clean_logits(context, data).argmax(dim=1) == labels
        cosines = torch.empty(len(sigmas) - 1, len(labels), dtype=torch.float64, device=device)
        clean_unit = F.normalize(clean, dim=-1)
        for start, noisy in _noisy_batches(context, data.images, sigmas[1:]):
            stop = start + noisy.shape[1]
            for k, model_input in enumerate(noisy):
                features = _encode(context, model_input)
                correct[k + 1, start:stop] = classifier.logits(features).argmax(dim=1) == labels[start:stop]
                cosines[k, start:stop] = (F.normalize(features, dim=-1) * clean_unit[start:stop]).sum(-1).double()
        measurements = noise_measurements(correct.sum(dim=1).tolist(), len(labels), sigmas)
        stability = bootstrap_mean_ci(cosines, resamples=context.options.resamples, seed=context.options.seed)
        for k, sigma in enumerate(sigmas[1:]):
            value, low, high = (float(t[k]) for t in stability)
            measurements.append(Measurement("embedding_stability", sigma_variant(sigma), value, low, high, len(labels)))
        measurements.append(
            Measurement("embedding_stability", "mean", float(cosines.mean()), n=len(labels))
        )
        # Per image and sigma, 1 when classified correctly: the report bootstraps the accuracy drop over images.
        items = ItemValues("mean", ["accuracy"] * len(sigmas), [sigma_variant(s) for s in sigmas], correct.double())
        return BenchmarkOutput(measurements, items=items)


def _encode(context, model_input: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode(), autocast(context.options.precision, context.options.device):
        return context.bundle.model.encode_image(model_input).float()


def _noisy_batches(context, images, sigmas: tuple[float, ...]) -> Iterable[tuple[int, torch.Tensor]]:
    """(start, (K, B, 3, S, S) normalised noisy model input) per batch of the set's images; cached for the run when
    small (the dataset, batch size and seed are fixed for a run; the model may change its size, mean and std)."""
    from fastclip.ops import gaussian_noise

    pixels = context.pixels(images)
    size, batch_size, options = context.image_size, context.options.batch_size, context.options

    def perturb(start: int) -> tuple[int, torch.Tensor]:
        batch = pixels[start : start + batch_size].to(options.device, non_blocking=True)
        noisy = gaussian_noise(
            batch, list(sigmas), sweep=True, seed=options.seed, quantize=True,
            sample_ids=torch.arange(start, start + len(batch), device=batch.device),
            mean=context.bundle.image_mean, std=context.bundle.image_std,
        )  # fmt: skip
        return start, noisy

    starts = range(0, len(pixels), batch_size)
    if len(sigmas) * len(pixels) * 3 * size * size * 4 > NOISY_CACHE_BYTES:
        return map(perturb, starts)
    key = ("noise_robustness", images.key, size, context.bundle.image_mean, context.bundle.image_std, sigmas)
    return context.data.cached(key, lambda: [perturb(start) for start in starts])
