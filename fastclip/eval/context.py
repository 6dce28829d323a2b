"""What benchmarks get: the run's options, its datasets (loaded once per run; their pixels decoded and resized to the
model's input once per run and kept on the device, or in pinned memory when they do not fit) and, per checkpoint,
the model with its caches: the zero-shot classifiers (once per class list) and the image features of each image
set (once per checkpoint, shared by every benchmark that reads them, e.g. zeroshot and noise_robustness).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from fastclip.eval.evalsets import Geometry, ImageSet
from fastclip.eval.features import ImageFeatures, encode
from fastclip.eval.zeroshot import DEFAULT_TEMPLATE_SET, ZeroShotClassifier, build_zeroshot_classifier, template_set
from fastclip.models import ModelBundle

DEFAULT_TOYWORLD_SIZE = 8  # images per category; keeps the toy suite at a few seconds per epoch on 2 CPU cores
DEFAULT_RESAMPLES = 1000  # bootstrap resamples of the confidence intervals
DEVICE_MEMORY_SHARE = 0.5  # decoded datasets stay on the GPU while they take at most this share of its free memory
# Images per forward pass when neither the flag nor the suite sets it. On the CPU, batches of 64 keep a small
# model's activations in cache: the paper-shaped benchmark's epoch (benchmarks/bench_eval.py) ran ~20% faster than
# with 256. A GPU wants big batches.
DEFAULT_BATCH_SIZE = {"cpu": 64, "cuda": 256}


@dataclass(frozen=True)
class EvalOptions:
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    precision: str = "fp32"
    batch_size: int = DEFAULT_BATCH_SIZE["cpu"]  # options_for_suite picks DEFAULT_BATCH_SIZE by device
    seed: int = 0
    toyworld_size: int = DEFAULT_TOYWORLD_SIZE
    templates: str = DEFAULT_TEMPLATE_SET
    resamples: int = DEFAULT_RESAMPLES
    suite: "Suite | None" = None  # noqa: F821 - fastclip.eval.suite.Suite


# Options a suite's [options] table may set, with their defaults (command-line flags, when given, win).
SUITE_OPTION_DEFAULTS = {
    "batch_size": None, "precision": "fp32", "seed": 0, "toyworld_size": DEFAULT_TOYWORLD_SIZE,
    "templates": DEFAULT_TEMPLATE_SET, "resamples": DEFAULT_RESAMPLES,
}  # fmt: skip


def options_for_suite(suite, device: torch.device, **given) -> EvalOptions:
    """EvalOptions for a suite: the values given (not None) > the suite's [options] > SUITE_OPTION_DEFAULTS."""
    from fastclip.eval.errors import InputError
    from fastclip.eval.zeroshot import TEMPLATE_SET_NAMES
    from fastclip.models import PRECISIONS

    values = {}
    for key, default in SUITE_OPTION_DEFAULTS.items():
        value = given.get(key)
        values[key] = value if value is not None else suite.options.get(key, default)
    if values["batch_size"] is None:
        values["batch_size"] = DEFAULT_BATCH_SIZE.get(device.type, DEFAULT_BATCH_SIZE["cuda"])
    if values["precision"] not in PRECISIONS or values["templates"] not in TEMPLATE_SET_NAMES:
        raise InputError(
            f"{suite.source}: [options] precision must be one of {PRECISIONS} and templates one of {TEMPLATE_SET_NAMES}"
        )
    for key in ("batch_size", "toyworld_size", "resamples"):
        if isinstance(values[key], bool) or not isinstance(values[key], int) or values[key] < 1:
            raise InputError(f"{suite.source}: [options] {key} must be a positive integer, got {values[key]!r}")
    return EvalOptions(device=device, suite=suite, **values)


def place(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Keep a decoded dataset where encoding it is cheapest: on the GPU when it fits comfortably, else in pinned
    host memory (copied to the GPU batch by batch without a staging copy)."""
    if device.type != "cuda":
        return images.to(device)
    if images.device.type == "cuda":
        return images
    free, _ = torch.cuda.mem_get_info(device)
    if images.numel() * images.element_size() <= DEVICE_MEMORY_SHARE * free:
        return images.to(device)
    return images.pin_memory()


class EvalData:
    """The datasets of one evaluation run, each loaded once and reused for every checkpoint."""

    def __init__(self, options: EvalOptions):
        self.options = options
        self._cache: dict[tuple, object] = {}

    def cached(self, key: tuple, build: Callable[[], object]):
        """`build()` once per run for `key`; benchmarks keep here what does not depend on the checkpoint."""
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    def spec(self, name: str):
        suite = self.options.suite
        if suite is None or name not in suite.datasets:
            raise KeyError(f"dataset {name!r} is not in the suite")
        return suite.datasets[name]

    def dataset(self, name: str):
        """The evaluation set (evalsets.*Set) of the suite's dataset `name`, loaded once per run; the runner asks
        for every dataset before any checkpoint, so a wrong layout fails first."""
        from fastclip.eval.sources import load_dataset

        return self.cached(("dataset", name), lambda: load_dataset(self.spec(name), self.options))

    def pixels(self, images: ImageSet, geometry: Geometry) -> torch.Tensor:
        """All images of the set at `geometry` (model-sized), decoded once per run and placed (see `place`)."""
        device = self.options.device
        return self.cached(("pixels", images.key, geometry), lambda: place(images.fetch(geometry, device), device))


class CheckpointContext:
    """One checkpoint's model, how to feed it, and its caches."""

    def __init__(self, bundle: ModelBundle, options: EvalOptions, data: EvalData):
        self.bundle = bundle
        self.options = options
        self.data = data
        self._classifiers: dict[tuple, ZeroShotClassifier] = {}
        self._features: dict[tuple, ImageFeatures] = {}

    @property
    def image_size(self) -> int:
        return self.bundle.image_size

    def templates(self, name: str | None) -> tuple[str, ...]:
        return template_set(name or self.options.templates)

    def classifier(self, class_names: Sequence[str], templates: Sequence[str] | None = None) -> ZeroShotClassifier:
        """The zero-shot classifier for these classes (templates: the --templates set), built once per checkpoint."""
        templates = tuple(templates) if templates is not None else template_set(self.options.templates)
        key = (tuple(class_names), templates)
        if key not in self._classifiers:
            self._classifiers[key] = build_zeroshot_classifier(
                self.bundle.model, self.bundle.tokenizer, class_names, templates,
                device=self.options.device, precision=self.options.precision, batch_size=self.options.batch_size,
                tokenize=self._tokenize,
            )  # fmt: skip
        return self._classifiers[key]

    def _tokenize(self, prompts: list[str]) -> torch.Tensor:
        """Tokens depend on the architecture and the prompts, not on the weights: made once per run."""
        key = ("tokens", self.bundle.model_name, tuple(prompts))
        return self.data.cached(key, lambda: self.bundle.tokenizer(prompts))

    def geometry(self, squash: bool = False) -> Geometry:
        """open_clip's eval geometry (shorter side + centre crop), or the whole image squashed to the model's size
        (saliency maps must cover the whole image)."""
        return (self.image_size, self.image_size) if squash else self.image_size

    def pixels(self, images: ImageSet, *, squash: bool = False) -> torch.Tensor:
        return self.data.pixels(images, self.geometry(squash))

    def features(self, images: ImageSet, *, blocks: bool = False, squash: bool = False) -> ImageFeatures:
        """The set's features (see features.encode), computed once per checkpoint; a request for the block means
        is served by one pass that also gives the embedding."""
        key = (images.key, squash)
        cached = self._features.get(key)
        if cached is None or (blocks and cached.blocks is None):
            cached = encode(
                self.bundle.model, self.pixels(images, squash=squash), mean=self.bundle.image_mean,
                std=self.bundle.image_std, device=self.options.device, precision=self.options.precision,
                batch_size=self.options.batch_size, blocks=blocks,
            )  # fmt: skip
            self._features[key] = cached
        return cached
