"""shape_bias: texture-shape bias on cue-conflict images (Geirhos et al., ICLR 2019), scored as model-vs-human does.

Decisions: zero-shot classification of a cue-conflict set (the toy world's, or a folder in the Geirhos layout) by
one or both protocols of `ShapeBiasBenchmark`. Every decision is written to a trials CSV in model-vs-human's schema
and the numbers are computed from those trials by `shape_bias_from_trials`, the function that also scores human
raw data (fastclip.eval.datasets.human_raw).

The rule (model-vs-human `ShapeBias`, reference/eval.md §1):
1. the texture category comes from the image name: last `_` field, up to the first `.`, after the last `-`,
   digits removed (`0001_s5n_s01_0_bird_00_bird3-dog2.png` -> `dog`); the shape category is the `category` column;
2. rows with shape == texture are left out;
3. shape bias = shape decisions / (shape + texture decisions); other answers, `na` included, are ignored.
model-vs-human divides the shape and texture decision counts by the number of *all* rows (shape == texture rows
included) to report "fraction-correct-shape/texture"; the variants shape_fraction / texture_fraction keep that
definition. Per-category bias applies the same rule to the rows of one shape category, as its matrix plot does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Mapping

import torch

from fastclip.eval.errors import InputError
from fastclip.eval.items import ItemValues
from fastclip.eval.registry import Benchmark, BenchmarkOutput, Setting, register, subset_of
from fastclip.eval.results import Measurement, read_trials_csv
from fastclip.eval.stats import wilson_interval


def texture_category_from_imagename(imagename: str) -> str:
    """model-vs-human's parse: 'XXX_dog10-bird2.png' -> 'bird'."""
    stem = imagename.split("_")[-1].split(".")[0]
    return "".join(char for char in stem.split("-")[-1] if not char.isdigit())


@dataclass(frozen=True)
class ShapeBiasScore:
    trials: int  # all rows, shape == texture ones included (model-vs-human's len(df))
    shape_decisions: int  # cue-conflict rows answered with the shape category
    texture_decisions: int  # cue-conflict rows answered with the texture category

    @property
    def shape_bias(self) -> float:
        decided = self.shape_decisions + self.texture_decisions
        return self.shape_decisions / decided if decided else math.nan

    @property
    def shape_fraction(self) -> float:
        return self.shape_decisions / self.trials if self.trials else math.nan

    @property
    def texture_fraction(self) -> float:
        return self.texture_decisions / self.trials if self.trials else math.nan


@dataclass(frozen=True)
class ShapeBiasReport:
    pooled: ShapeBiasScore
    per_category: dict[str, ShapeBiasScore]  # by shape category, sorted


def _score(rows: list[tuple[str, str, str]]) -> ShapeBiasScore:
    conflict = [(response, shape, texture) for response, shape, texture in rows if shape != texture]
    return ShapeBiasScore(
        trials=len(rows),
        shape_decisions=sum(response == shape for response, shape, _ in conflict),
        texture_decisions=sum(response == texture for response, _, texture in conflict),
    )


def shape_bias_from_trials(trials: Iterable[Mapping]) -> ShapeBiasReport:
    """Score trials (dicts with object_response, category, imagename) by the model-vs-human rule above."""
    rows = [
        (str(t["object_response"]), str(t["category"]), texture_category_from_imagename(str(t["imagename"])))
        for t in trials
    ]
    if not rows:
        raise ValueError("no trials to score")
    categories = sorted({shape for _, shape, _ in rows})
    return ShapeBiasReport(
        pooled=_score(rows),
        per_category={category: _score([row for row in rows if row[1] == category]) for category in categories},
    )


def shape_bias_from_trials_csv(*paths: str | Path) -> ShapeBiasReport:
    """Score one or more trials CSVs together (e.g. all human subjects of model-vs-human's raw-data, pooled)."""
    return shape_bias_from_trials(row for path in paths for row in read_trials_csv(path))


def _proportion(metric: str, variant: str, hits: int, total: int, value: float) -> Measurement:
    return Measurement(metric, variant, value, *wilson_interval(hits, total), total)


def shape_bias_measurements(report: ShapeBiasReport) -> list[Measurement]:
    pooled = report.pooled
    decided = pooled.shape_decisions + pooled.texture_decisions
    measurements = [
        _proportion("shape_bias", "pooled", pooled.shape_decisions, decided, pooled.shape_bias),
        _proportion("shape_bias", "shape_fraction", pooled.shape_decisions, pooled.trials, pooled.shape_fraction),
        _proportion("shape_bias", "texture_fraction", pooled.texture_decisions, pooled.trials, pooled.texture_fraction),
    ]
    for category, score in report.per_category.items():
        category_decided = score.shape_decisions + score.texture_decisions
        measurements.append(
            _proportion("shape_bias", f"category={category}", score.shape_decisions, category_decided, score.shape_bias)
        )
    return measurements


def decision_trials(imagenames: list[str], shapes: list[str], responses: list[str]) -> list[dict]:
    """Trials rows in model-vs-human's schema, as its own model raw-data files write them (rt, condition NaN)."""
    return [
        {"subj": "", "session": 1, "trial": index, "rt": "NaN", "object_response": response, "category": shape,
         "condition": "NaN", "imagename": imagename}  # fmt: skip
        for index, (imagename, shape, response) in enumerate(zip(imagenames, shapes, responses), start=1)
    ]


def decision_items(trials: list[dict]) -> torch.Tensor:
    """Per trial 1.0 (shape decision), 0.0 (texture decision) or NaN (shape == texture, or neither cue chosen), so
    the mean of the non-NaN items is the shape bias; `fastclip-eval report` resamples these."""
    values = []
    for trial in trials:
        shape, texture = str(trial["category"]), texture_category_from_imagename(str(trial["imagename"]))
        response = str(trial["object_response"])
        if shape == texture or response not in (shape, texture):
            values.append(math.nan)
        else:
            values.append(1.0 if response == shape else 0.0)
    return torch.tensor(values, dtype=torch.float64)


def imagenet_to_16_probabilities(logits: torch.Tensor, categories: tuple[str, ...]) -> torch.Tensor:
    """(N, 1000) ImageNet logits -> (N, len(categories)): softmax over the 1000 classes, then each category's mean
    probability over its ImageNet classes (model-vs-human's ImageNetProbabilitiesTo16ClassesMapping, np.mean)."""
    from fastclip.eval.templates import IMAGENET_INDICES_BY_GEIRHOS_CATEGORY

    unknown = [category for category in categories if category not in IMAGENET_INDICES_BY_GEIRHOS_CATEGORY]
    if unknown:
        raise InputError(
            f"the ImageNet-1k protocol maps onto the 16 Geirhos categories; {unknown} are not among them "
            f"({', '.join(IMAGENET_INDICES_BY_GEIRHOS_CATEGORY)})"
        )
    probabilities = logits.float().softmax(dim=1)
    return torch.stack(
        [probabilities[:, list(IMAGENET_INDICES_BY_GEIRHOS_CATEGORY[category])].mean(dim=1) for category in categories],
        dim=1,
    )


PROTOCOL_METRIC = {"direct": "shape_bias", "imagenet": "shape_bias_in1k"}
PROTOCOL_SUBJECT = {"direct": "", "imagenet": "in1k"}
HUMAN_METRIC = "shape_bias_human"


@register
class ShapeBiasBenchmark(Benchmark):
    """Protocols: "direct" (16-way zero-shot over the categories present) and "imagenet" (1000-way zero-shot over
    the ImageNet classes with the 80 ImageNet templates, mapped to the 16 categories by mean probability), each with
    its own metric (PROTOCOL_METRIC) and trials CSV. With human raw data the human reference is reported too
    (metric shape_bias_human, pooled and per category)."""

    name = "shape_bias"
    headline = (("shape_bias", "pooled"),)
    kinds = ("cue_conflict",)
    SETTINGS = {"protocols": Setting(("direct",), subset_of(*PROTOCOL_METRIC), "decision protocols")}

    def run(self, context, dataset: str) -> BenchmarkOutput:
        stimuli = context.data.dataset(dataset)
        features = context.features(stimuli.images).embedding
        measurements, trials, items = [], {}, []
        for protocol in self.settings["protocols"]:
            if protocol == "direct":
                logits = context.classifier(stimuli.categories, context.templates(stimuli.templates)).logits(features)
            else:
                from fastclip.eval.templates import IMAGENET_CLASSES

                classifier = context.classifier(IMAGENET_CLASSES, context.templates(stimuli.templates or "imagenet"))
                logits = imagenet_to_16_probabilities(classifier.logits(features), stimuli.categories)
            responses = [stimuli.categories[index] for index in logits.argmax(dim=1).tolist()]
            protocol_trials = decision_trials(stimuli.names, stimuli.shapes, responses)
            report = shape_bias_from_trials(protocol_trials)
            measurements += [replace(m, metric=PROTOCOL_METRIC[protocol]) for m in shape_bias_measurements(report)]
            trials[PROTOCOL_SUBJECT[protocol]] = protocol_trials
            items.append((PROTOCOL_METRIC[protocol], decision_items(protocol_trials)))
        if stimuli.human_reference is not None:
            measurements += [replace(m, metric=HUMAN_METRIC) for m in shape_bias_measurements(stimuli.human_reference)]
        values = ItemValues(
            kind="mean", metrics=[metric for metric, _ in items], variants=["pooled"] * len(items),
            values=torch.stack([v for _, v in items]),
        )  # fmt: skip
        return BenchmarkOutput(measurements, trials, values)
