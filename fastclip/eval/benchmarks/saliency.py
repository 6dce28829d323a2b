"""saliency: how well the model's saliency maps predict where people look (MIT1003, CAT2000, SALICON, a pair of
image and map folders, the toy world's synthetic set).

Each image is resized whole to the model's input (no crop, so the map covers all of it), the maps of the `maps`
setting are computed (fastclip.eval.saliency_maps; "auto": cls_attention, rollout and relevance for a ViT, gradcam for
a ResNet) and scored by fastclip.ops.saliency_metrics against the human data at each image's own resolution (the
op upsamples the patch map bilinearly): cc, sim and kld against continuous fixation maps, nss, auc_judd, auc_borji,
auc_shuffled and info_gain against binary fixations, as the dataset provides them. Images of one size are scored
in one call. Shuffled AUC's negatives are the fixations of 10 other images of the dataset (MIT's M = 10), their
coordinates rescaled to the image's size, so images of every size take part.
Rows: metric = the saliency metric, variant "map=<method>", the mean over images with a bootstrap 95% CI (images
whose metric is undefined, e.g. a constant map, are left out of the mean and n). Per-image values are kept for the
report's paired tests.
"""

from __future__ import annotations

import warnings
from collections import defaultdict

import torch

from fastclip.eval.errors import InputError
from fastclip.eval.items import ItemValues
from fastclip.eval.preprocess import normalize, to_unit_float
from fastclip.eval.registry import Benchmark, BenchmarkOutput, Setting, register, subset_of, text
from fastclip.eval.results import Measurement
from fastclip.eval.saliency_maps import MAP_METHODS, RESNET_MAPS, VIT_MAPS, gradcam, tower_kind, vit_maps
from fastclip.eval.stats import bootstrap_mean_ci
from fastclip.models import autocast

MAP_METRICS = ("cc", "sim", "kld")
FIXATION_METRICS = ("nss", "auc_judd", "auc_borji", "auc_shuffled", "info_gain")
METRICS = MAP_METRICS + FIXATION_METRICS
NUM_OTHER = 10


def _maps_setting(value):
    return value if value == "auto" else subset_of(*MAP_METHODS)(value)


def other_fixations(fixations: list[torch.Tensor], seed: int, num_other: int = NUM_OTHER) -> list[torch.Tensor]:
    """Per image, the union of the fixations of `num_other` other images (fastclip.ops.saliency_metrics.
    other_images), each fixation's coordinates rescaled to this image's size: shuffled AUC's negatives."""
    from fastclip.ops.saliency_metrics import other_images

    points = [torch.nonzero(f).double() + 0.5 for f in fixations]  # pixel centres
    sizes = [f.shape for f in fixations]
    others = other_images(seed, len(fixations), min(num_other, len(fixations) - 1))
    out = []
    for index, chosen in enumerate(others.tolist()):
        height, width = sizes[index]
        union = torch.zeros(height, width, dtype=torch.bool)
        for other in chosen:
            scale = torch.tensor([height / sizes[other][0], width / sizes[other][1]], dtype=torch.float64)
            where = (points[other] * scale).floor().long()
            where[:, 0].clamp_(0, height - 1)
            where[:, 1].clamp_(0, width - 1)
            union[where[:, 0], where[:, 1]] = True
        out.append(union)
    return out


@register
class SaliencyBenchmark(Benchmark):
    name = "saliency"
    headline = (("cc", "map=rollout"), ("nss", "map=rollout"))
    kinds = ("saliency",)
    SETTINGS = {
        "maps": Setting("auto", _maps_setting, "auto, or a list of " + ", ".join(MAP_METHODS)),
        "metrics": Setting(METRICS, subset_of(*METRICS), "metrics to report (those the data allows)"),
        "text": Setting("a photo.", text, "the prompt whose image-text logit relevance and gradcam explain"),
    }

    def _methods(self, model) -> tuple[str, ...]:
        kind = tower_kind(model)
        supported = VIT_MAPS if kind == "vit" else RESNET_MAPS
        if self.settings["maps"] == "auto":
            return supported
        wrong = [method for method in self.settings["maps"] if method not in supported]
        if wrong:
            raise InputError(f"saliency: maps {wrong} need a {'ResNet' if kind == 'vit' else 'ViT'} image tower")
        return self.settings["maps"]

    def _patch_maps(self, context, data, methods) -> dict[str, torch.Tensor]:
        pixels = context.pixels(data.images, squash=True)
        model, options = context.bundle.model, context.options
        chunks = defaultdict(list)
        for start in range(0, len(pixels), options.batch_size):
            batch = pixels[start : start + options.batch_size].to(options.device, non_blocking=True)
            batch = normalize(to_unit_float(batch), context.bundle.image_mean, context.bundle.image_std)
            with autocast(options.precision, options.device):
                if methods == RESNET_MAPS:
                    maps = {"gradcam": gradcam(model, context.bundle.tokenizer, batch, text=self.settings["text"])}
                else:
                    maps = vit_maps(model, context.bundle.tokenizer, batch, methods, text=self.settings["text"])
            for method, values in maps.items():
                chunks[method].append(values.float())
        return {method: torch.cat(values) for method, values in chunks.items()}

    def run(self, context, dataset: str) -> BenchmarkOutput:
        from fastclip.ops.saliency_metrics import ConstantMapWarning, saliency_metrics

        data = context.data.dataset(dataset)
        methods = self._methods(context.bundle.model)
        maps = self._patch_maps(context, data, methods)
        available = (MAP_METRICS if data.has_fixation_maps else ()) + (FIXATION_METRICS if data.has_fixations else ())
        metrics = tuple(m for m in self.settings["metrics"] if m in available)
        if len(data.names) < 2:
            metrics = tuple(m for m in metrics if m != "auc_shuffled")
        device, seed = context.options.device, context.options.seed
        human_maps = data.fixation_maps() if any(m in MAP_METRICS for m in metrics) else None
        points = data.fixations() if any(m in FIXATION_METRICS for m in metrics) else None
        sizes = [tuple(m.shape) for m in (human_maps if human_maps is not None else points)]
        shuffled = None
        if "auc_shuffled" in metrics:
            shuffled = context.data.cached(("saliency_other", dataset, seed), lambda: other_fixations(points, seed))
        by_size = defaultdict(list)
        for index, size in enumerate(sizes):
            by_size[size].append(index)
        values = {(method, metric): torch.full((len(sizes),), float("nan"), dtype=torch.float64) for method in methods for metric in metrics}
        for members in by_size.values():
            stack = lambda tensors: torch.stack([tensors[i] for i in members]).to(device)  # noqa: E731
            kwargs = {"metrics": metrics, "seed": seed}
            if human_maps is not None:
                human = stack(human_maps)
                # uint8 maps become float32, exactly: the metrics read float32 as it is, float64 would double the bytes
                kwargs["fixation_map"] = human if human.is_floating_point() else human.float()
            if points is not None:
                kwargs["fixations"] = stack(points)
            if shuffled is not None:
                kwargs["other_fixations"] = stack(shuffled)
            # Every method's maps in one call: the human data of the group is checked and indexed once.
            predictions = torch.stack([maps[method][members] for method in methods]).to(device)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConstantMapWarning)
                scores = saliency_metrics(predictions, **kwargs)
            for metric, score in scores.items():
                for method, method_score in zip(methods, score.cpu()):
                    values[(method, metric)][members] = method_score
        keys = list(values)
        table = torch.stack([values[key] for key in keys])
        means, lows, highs = bootstrap_mean_ci(table, resamples=context.options.resamples, seed=seed)
        counts = (~torch.isnan(table)).sum(dim=1)
        measurements = [
            Measurement(metric, f"map={method}", mean, low, high, int(count))
            for (method, metric), mean, low, high, count in zip(keys, means.tolist(), lows.tolist(), highs.tolist(), counts)
        ]
        items = ItemValues("mean", [metric for _, metric in keys], [f"map={method}" for method, _ in keys], table)
        return BenchmarkOutput(measurements, items=items)
